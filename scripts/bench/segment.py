#!/usr/bin/env python3
"""From the last CT instance received to the auto RTSTRUCT stored at the PACS.

    python scripts/bench/segment.py [--slices 300] [--size 512] [--quiet 5] [--model builtin:body]

Orthanc plays the PACS; storescu sends a phantom CT to a running `rtnode serve` (rules:
segment, rtstruct, send to Orthanc); the split comes from the index's stage timestamps:
quiet period (+ detection), queue wait, segmentation (CT load + model), RTSTRUCT writing, send.
Goal: everything but the quiet period and the model's own inference under 5 s (300 slices).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rtnode.phantom import CTGeometry, EllipticBody, Patient, PhantomCourse  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--quiet", type=float, default=5.0, help="courses.quiet_seconds")
    ap.add_argument("--model", default="builtin:body")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rtnode-segbench-") as tmp:
        tmp = Path(tmp)
        files = PhantomCourse(patient=Patient(patient_id="SEGBENCH"), shapes=[EllipticBody()],
                              geometry=CTGeometry(rows=args.size, columns=args.size,
                                                  slices=args.slices,
                                                  pixel_spacing=(0.98, 0.98),
                                                  slice_spacing=1.0)).build(False).write(tmp / "ct")
        o_port, o_http, n_port = free_port(), free_port(), free_port()
        (tmp / "orthanc.json").write_text(json.dumps({
            "Name": "bench", "StorageDirectory": str(tmp / "o"), "IndexDirectory": str(tmp / "o"),
            "DicomAet": "ORTHANC", "DicomPort": o_port, "HttpPort": o_http,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False, "Plugins": []}))
        (tmp / "rules").mkdir()
        (tmp / "rules" / "r.yaml").write_text(
            f"rules:\n  - {{name: bench, stages: [segment, rtstruct, send], models: "
            f"['{args.model}'], destinations: [PACS]}}\n")
        (tmp / "config.yaml").write_text(
            f"dicom: {{bind: 127.0.0.1, port: {n_port}}}\n"
            f"storage: {{root: storage, min_free_gb: 0}}\n"
            f"courses: {{quiet_seconds: {args.quiet}, poll_seconds: 0.2, rules_dir: rules}}\n"
            f"destinations: {{PACS: {{ae_title: ORTHANC, host: 127.0.0.1, port: {o_port}}}}}\n"
            "logging: {level: WARNING}\n")
        orthanc = subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = subprocess.Popen([sys.executable, "-m", "rtnode", "serve", "--config",
                                 str(tmp / "config.yaml")])
        try:
            wait_http(f"http://127.0.0.1:{o_http}/system")
            while not (tmp / "storage" / "node.json").exists():
                time.sleep(0.1)
            r = subprocess.run(["storescu", "-aec", "RTNODE", "127.0.0.1", str(n_port),
                                *map(str, files)], capture_output=True, text=True,
                               env={**os.environ, "TCP_NODELAY": "1"})
            assert r.returncode == 0, r.stderr
            db_path = tmp / "storage" / "index.sqlite"
            deadline = time.monotonic() + 3600
            stored_at = None
            while time.monotonic() < deadline:
                stats = json.load(urllib.request.urlopen(
                    f"http://127.0.0.1:{o_http}/statistics"))
                if int(stats["CountInstances"]) >= 1:
                    stored_at = dt.datetime.now(dt.timezone.utc)
                    break
                time.sleep(0.1)
            db = sqlite3.connect(db_path)
            last = ts(db.execute("SELECT MAX(received_at) FROM instances").fetchone()[0])
            runs = {row[0]: row[1:] for row in db.execute(
                "SELECT stage, state, queued_at, started_at, finished_at, reason"
                " FROM stage_runs")}
            db.close()
        finally:
            for proc in (node, orthanc):
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        shutil.rmtree(tmp / "storage", ignore_errors=True)

    for stage, (state, *_rest) in runs.items():
        assert state == "done", (stage, state, _rest)
    seg_q, seg_s, seg_f = (ts(x) for x in runs["segment"][1:4])
    rs_q, rs_s, rs_f = (ts(x) for x in runs["rtstruct"][1:4])
    se_q, se_s, se_f = (ts(x) for x in runs["send"][1:4])
    parts = [
        ("quiet period + detection", (seg_q - last).total_seconds()),
        ("queue wait (segment)", (seg_s - seg_q).total_seconds()),
        ("segmentation (CT load + model)", (seg_f - seg_s).total_seconds()),
        ("hand-over to rtstruct", (rs_s - seg_f).total_seconds()),
        ("RTSTRUCT writing", (rs_f - rs_s).total_seconds()),
        ("hand-over to send", (se_s - rs_f).total_seconds()),
        ("send (C-STORE to Orthanc)", (se_f - se_s).total_seconds()),
        ("until visible in Orthanc's REST API", (stored_at - se_f).total_seconds()),
    ]
    total = (stored_at - last).total_seconds()
    print(f"{args.slices} CT slices {args.size}x{args.size}, model {args.model}, "
          f"quiet period {args.quiet:g} s, cores {os.cpu_count()}")
    for name, seconds in parts:
        print(f"  {name:<38}{seconds:>8.2f} s")
    print(f"  {'total, last instance -> RTSTRUCT at PACS':<38}{total:>8.2f} s")
    rest = total - parts[0][1] - parts[2][1]
    print(f"everything but the quiet period and segmentation: {rest:.2f} s (goal < 5 s)")


if __name__ == "__main__":
    main()
