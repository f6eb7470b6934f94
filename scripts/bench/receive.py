#!/usr/bin/env python3
"""Receive speed: the same CT series sent by DCMTK storescu to rtnode, a bare pynetdicom SCP
and Orthanc, in one run, on loopback, by one sender and by several at once.

    python scripts/bench/receive.py [--slices 300] [--size 512] [--repeat 3] [--senders 1 4]
                                    [--before CHECKOUT]

The bare SCP writes the raw received bytes with no fsync, no parsing and no index: it is the
ceiling for any pynetdicom receiver. rtnode runs as `rtnode serve` with its defaults (fsync on).
Every DCMTK process — the storescu senders and Orthanc, whose DICOM layer is DCMTK — runs with
TCP_NODELAY=1 (DCMTK keeps Nagle on unless that variable says otherwise, which costs a delayed-ACK
pause per instance on loopback for any receiver). With several senders the series is dealt out
round-robin to that many storescu processes started together; the time is until the last ends.
Receivers alternate within each repeat (A B C A B C …) so that a load change on the machine hits
all of them; the best run of each is kept and the load average printed. ``--before CHECKOUT``
adds `rtnode serve` from another source tree (e.g. ``git archive main | tar -x -C /tmp/base``)
for a before/after comparison in the same run.
Goals: rtnode >= 0.8x the bare SCP and faster than Orthanc, with one sender and with four.
Before the runs the bench measures the durability floor of the disk (the three waits every
acknowledged instance needs: file fsync, folder fsync, index commit) and, for one sender,
prints the ceiling it sets: the bare SCP's time plus only those waits.
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


def dcmtk_env(nodelay: bool) -> dict[str, str]:
    """The environment of a DCMTK process (storescu, Orthanc): TCP_NODELAY as chosen."""
    return {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}


def send(port: int, called: str, files: list[Path], nodelay: bool, senders: int = 1) -> float:
    """Send files with ``senders`` storescu processes at once (round-robin); seconds to the last."""
    shares = [files[i::senders] for i in range(senders)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", called, "127.0.0.1", str(port),
                               *map(str, share)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=dcmtk_env(nodelay))
             for share in shares if share]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - t0
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise RuntimeError(f"storescu to {called} failed: {err[-500:]}")
    return elapsed


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_rtnode(files, work: Path, nodelay: bool, senders: int, fsync: bool = True,
                 tree: Path | None = None) -> float:
    port = free_port()
    (work / "config.yaml").write_text(
        f"dicom:\n  bind: 127.0.0.1\n  port: {port}\nstorage:\n  root: storage\n"
        f"  min_free_gb: 0\n  fsync: {str(fsync).lower()}\nlogging:\n  level: WARNING\n")
    env = {**os.environ, "PYTHONPATH": str(tree or ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rtnode", "serve", "--config",
                             str(work / "config.yaml")], env=env, cwd=work)
    try:
        wait_port(port)
        seconds = send(port, "RTNODE", files, nodelay, senders)
    finally:
        stop(proc)
    n = len(list((work / "storage" / "dicom").rglob("*.dcm")))
    assert n == len(files), f"rtnode stored {n} of {len(files)}"
    return seconds


def bench_rtnode_nofsync(files, work: Path, nodelay: bool, senders: int) -> float:
    return bench_rtnode(files, work, nodelay, senders, fsync=False)


def bench_bare(files, work: Path, nodelay: bool, senders: int) -> float:
    port = free_port()
    out = work / "bare"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", BARE_SCP, str(port), str(out)])
    try:
        wait_port(port)
        seconds = send(port, "BARE", files, nodelay, senders)
    finally:
        stop(proc)
    assert len(list(out.iterdir())) == len(files)
    return seconds


def bench_orthanc(files, work: Path, nodelay: bool, senders: int) -> float | None:
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
    # Orthanc's DICOM network layer is DCMTK: without TCP_NODELAY=1 in its environment it
    # answers every C-STORE behind Nagle, which is not Orthanc's speed but a delayed-ACK pause
    proc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], env=dcmtk_env(nodelay),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        seconds = send(port, "ORTHANC", files, nodelay, senders)
        stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/statistics"))
        assert int(stats["CountInstances"]) == len(files), stats
    finally:
        stop(proc)
    return seconds


def durability_floor(folder: Path, size: int, samples: int = 60) -> float:
    """Median seconds of the three waits a durable receiver adds to each instance on this disk,
    measured in the same run: write + fsync a file of the instance's size, rename it into a
    folder + fsync the folder, commit one row to a SQLite WAL with synchronous=FULL."""
    import sqlite3
    import statistics

    folder.mkdir()
    (folder / "final").mkdir()
    db = sqlite3.connect(folder / "index.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (k TEXT)")
    payload = os.urandom(size)
    times = []
    for i in range(samples):
        t0 = time.perf_counter()
        tmp = folder / f"{i}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, folder / "final" / f"{i}.dcm")
        dfd = os.open(folder / "final", os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?)", (str(i),))
        db.execute("COMMIT")
        times.append(time.perf_counter() - t0)
    db.close()
    shutil.rmtree(folder, ignore_errors=True)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512, help="rows = columns")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs; best is kept")
    ap.add_argument("--senders", type=int, nargs="+", default=[1, 4],
                    help="concurrent storescu processes (each count measured in turn)")
    ap.add_argument("--nagle", action="store_true",
                    help="leave DCMTK's Nagle on (TCP_NODELAY=0) in storescu and Orthanc")
    ap.add_argument("--before", type=Path, default=None,
                    help="also run `rtnode serve` from this source tree, for before/after")
    ap.add_argument("--no-fsync-run", action="store_true", help="skip rtnode with fsync off")
    ap.add_argument("--skip-orthanc", action="store_true")
    args = ap.parse_args()
    nodelay = not args.nagle

    receivers: list[tuple[str, object]] = [("rtnode (fsync on)", bench_rtnode)]
    if args.before is not None:
        before = args.before.resolve()
        receivers.append(("rtnode before (fsync on)",
                          lambda f, w, n, k: bench_rtnode(f, w, n, k, tree=before)))
    if not args.no_fsync_run:
        receivers.append(("rtnode (fsync off)", bench_rtnode_nofsync))
    receivers.append(("bare pynetdicom SCP", bench_bare))
    if not args.skip_orthanc and shutil.which("Orthanc"):
        receivers.append(("Orthanc", bench_orthanc))

    with tempfile.TemporaryDirectory(prefix="rtnode-bench-") as tmp:
        tmp = Path(tmp)
        geometry = CTGeometry(rows=args.size, columns=args.size, slices=args.slices,
                              pixel_spacing=(0.98, 0.98), slice_spacing=1.0)
        files = PhantomCourse(patient=Patient(patient_id="BENCH"),
                              geometry=geometry).build(with_rt=False).write(tmp / "ct")
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"{len(files)} CT instances, {args.size}x{args.size}, {mb:.0f} MB; DCMTK "
              f"TCP_NODELAY={'1' if nodelay else '0'} (storescu and Orthanc); "
              f"cores: {os.cpu_count()}; load average before: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        floor = durability_floor(tmp / "floor", files[0].stat().st_size)
        print(f"durability floor on this disk: {floor * 1e3:.2f} ms per instance (write + fsync "
              "of the file, rename + fsync of its folder, one synchronous=FULL WAL commit)")
        for senders in args.senders:
            results: dict[str, list[float]] = {name: [] for name, _ in receivers}
            for i in range(args.repeat):
                for name, fn in receivers:
                    work = tmp / f"run-{senders}-{i}-{len(results[name])}-{abs(hash(name))}"
                    work.mkdir()
                    seconds = fn(files, work, nodelay, senders)
                    if seconds is not None:
                        results[name].append(seconds)
                    shutil.rmtree(work, ignore_errors=True)
            report(results, len(files), mb, senders, floor)


def report(results: dict[str, list[float]], n: int, mb: float, senders: int,
           floor: float) -> None:
    best = {name: min(runs) for name, runs in results.items() if runs}
    rt = best["rtnode (fsync on)"]
    print(f"\n{senders} sender(s); load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'receiver':<26}{'best s':>8}{'inst/s':>8}{'MB/s':>7}{'runs (s)':>24}"
          f"{'speed vs rtnode':>17}")
    for name, seconds in best.items():
        runs = " ".join(f"{s:.2f}" for s in results[name])
        print(f"{name:<26}{seconds:>8.2f}{n / seconds:>8.0f}{mb / seconds:>7.0f}{runs:>24}"
              f"{rt / seconds:>16.2f}x")
    bare = best["bare pynetdicom SCP"]
    print(f"rtnode vs bare SCP: {bare / rt:.2f}x (goal >= 0.8x)")
    if senders == 1:
        # one sender waits for each answer: every instance's durable writes add to the time
        print(f"  ceiling for a receiver that adds only the durability floor to the bare SCP: "
              f"{bare / (bare + n * floor):.2f}x")
    if "rtnode before (fsync on)" in best:
        print(f"rtnode vs before:   {best['rtnode before (fsync on)'] / rt:.2f}x")
    if "Orthanc" in best:
        print(f"rtnode vs Orthanc:  {best['Orthanc'] / rt:.2f}x (goal > 1x)")


if __name__ == "__main__":
    main()
