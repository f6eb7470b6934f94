#!/usr/bin/env python3
"""Receive speed: the same CT series sent by DCMTK storescu to rtnode, a bare pynetdicom SCP
and Orthanc, one after the other in one run, on loopback.

    python scripts/bench/receive.py [--slices 300] [--size 512] [--repeat 1] [--nodelay]

The bare SCP writes the raw received bytes with no fsync, no parsing and no index: it is the
ceiling for any pynetdicom receiver. rtnode runs as `rtnode serve` with its defaults (fsync on).
Goals: rtnode >= 0.8x the bare SCP, >= 10x Orthanc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rtnode.phantom import CTGeometry, Patient, PhantomCourse  # noqa: E402

BARE_SCP = r"""
import os, sys
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
out = sys.argv[2]
def on_store(event):
    with open(os.path.join(out, event.request.AffectedSOPInstanceUID), "wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(f, event.file_meta)
        f.write(event.request.DataSet.getvalue())
    return 0
ae = AE("BARE")
ae.maximum_pdu_size = 0
ae.add_supported_context(Verification)
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_C_STORE, on_store)])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def send(port: int, called: str, files: list[Path], nodelay: bool) -> float:
    env = {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}
    t0 = time.perf_counter()
    r = subprocess.run(["storescu", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                       capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed: {r.stderr[-500:]}")
    return elapsed


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_rtnode(files, work: Path, nodelay: bool, fsync: bool = True) -> float:
    port = free_port()
    (work / "config.yaml").write_text(
        f"dicom:\n  bind: 127.0.0.1\n  port: {port}\nstorage:\n  root: storage\n"
        f"  min_free_gb: 0\n  fsync: {str(fsync).lower()}\nlogging:\n  level: WARNING\n")
    proc = subprocess.Popen([sys.executable, "-m", "rtnode", "serve", "--config",
                             str(work / "config.yaml")])
    try:
        wait_port(port)
        seconds = send(port, "RTNODE", files, nodelay)
    finally:
        stop(proc)
    n = len(list((work / "storage" / "dicom").rglob("*.dcm")))
    assert n == len(files), f"rtnode stored {n} of {len(files)}"
    return seconds


def bench_rtnode_nofsync(files, work: Path, nodelay: bool) -> float:
    return bench_rtnode(files, work, nodelay, fsync=False)


def bench_bare(files, work: Path, nodelay: bool) -> float:
    port = free_port()
    out = work / "bare"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SCP, str(port), str(out)])
    try:
        wait_port(port)
        seconds = send(port, "BARE", files, nodelay)
    finally:
        stop(proc)
    assert len(list(out.iterdir())) == len(files)
    return seconds


def bench_orthanc(files, work: Path, nodelay: bool) -> float | None:
    if shutil.which("Orthanc") is None:
        return None
    port, http = free_port(), free_port()
    store = work / "orthanc"
    cfg = {"Name": "bench", "StorageDirectory": str(store), "IndexDirectory": str(store),
           "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http,
           "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
           "DicomCheckCalledAet": False, "StorageCompression": False, "Plugins": [],
           "HttpServerEnabled": True, "DicomAlwaysAllowStore": True}
    (work / "orthanc.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        seconds = send(port, "ORTHANC", files, nodelay)
        stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/statistics"))
        assert int(stats["CountInstances"]) == len(files), stats
    finally:
        stop(proc)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512, help="rows = columns")
    ap.add_argument("--repeat", type=int, default=1, help="runs per receiver; best is kept")
    ap.add_argument("--nodelay", action="store_true",
                    help="TCP_NODELAY=1 for storescu (DCMTK keeps Nagle on by default)")
    ap.add_argument("--skip-orthanc", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rtnode-bench-") as tmp:
        tmp = Path(tmp)
        geometry = CTGeometry(rows=args.size, columns=args.size, slices=args.slices,
                              pixel_spacing=(0.98, 0.98), slice_spacing=1.0)
        files = PhantomCourse(patient=Patient(patient_id="BENCH"),
                              geometry=geometry).build(with_rt=False).write(tmp / "ct")
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} CT instances, {args.size}x{args.size}, {mb:.0f} MB; storescu "
              f"TCP_NODELAY={'1' if args.nodelay else '0 (DCMTK default)'}; cores: {os.cpu_count()}")
        receivers = [("rtnode (fsync on)", bench_rtnode),
                     ("rtnode (fsync off)", bench_rtnode_nofsync),
                     ("bare pynetdicom SCP", bench_bare)]
        if not args.skip_orthanc:
            receivers.append(("Orthanc", bench_orthanc))
        results: dict[str, float] = {}
        for name, fn in receivers:
            best = None
            for i in range(args.repeat):
                work = tmp / f"{fn.__name__}-{i}"
                work.mkdir()
                seconds = fn(files, work, args.nodelay)
                if seconds is not None:
                    best = seconds if best is None else min(best, seconds)
                shutil.rmtree(work, ignore_errors=True)
            if best is not None:
                results[name] = best

    rt = results["rtnode (fsync on)"]
    print(f"\n{'receiver':<24}{'seconds':>9}{'inst/s':>9}{'MB/s':>8}"
          f"{'time vs rtnode (fsync on)':>28}")
    for name, seconds in results.items():
        print(f"{name:<24}{seconds:>9.2f}{len(files) / seconds:>9.0f}{mb / seconds:>8.0f}"
              f"{seconds / rt:>27.2f}x")
    bare = results["bare pynetdicom SCP"]
    print(f"\nrtnode vs bare SCP: {bare / rt:.2f}x (goal >= 0.8x); "
          f"{len(files) / rt:.0f} instances/s (goal >= 200)")
    if "Orthanc" in results:
        print(f"rtnode vs Orthanc:  {results['Orthanc'] / rt:.1f}x faster (goal >= 10x)")


if __name__ == "__main__":
    main()
