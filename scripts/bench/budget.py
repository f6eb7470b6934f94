"""Worker budget: is the listener still responsive when a worker runs on every core?

Starts a node with one cpu worker per core (the default budget) and a rule whose only stage
burns CPU in pure Python; sends one tiny course per worker so that every core is busy, then
times storescu sending a CT series (the receive) — and the same receive on an idle node. Runs
the busy case with the workers at nice 0 and at the default ``workers.nice``, in one run:

    .venv/bin/python scripts/bench/budget.py [--slices 200] [--burn 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the bench folder holds radiomics.py: it must not shadow the pyradiomics package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import yaml  # noqa: E402

PLUGIN = '''
import os, time
from rtnode.stages.base import Stage, register

def burn(ctx):
    end = time.monotonic() + float(os.environ.get("BENCH_BURN_SECONDS", "60"))
    x = 0
    while time.monotonic() < end:
        for i in range(100000):
            x += i * i

register(Stage(name="burn", queue="cpu", run=burn, description="bench: burns one core"))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_ct(folder: Path, patient: str, slices: int) -> list[Path]:
    from rtnode.phantom import CTGeometry, Patient, PhantomCourse

    course = PhantomCourse(patient=Patient(patient_id=patient),
                           geometry=CTGeometry(rows=256, columns=256, pixel_spacing=(1.5, 1.5),
                                               slices=slices, slice_spacing=2.0)).build(False)
    return course.write(folder)


def receive_seconds(work: Path, nice: int, busy: bool, ct: list[Path], tiny: list[list[Path]],
                    burn: float, workers: int | None = None) -> float:
    port = free_port()
    (work / "rules").mkdir(parents=True)
    (work / "rules" / "r.yaml").write_text(
        "rules:\n  - {name: burn, match: {calling_ae: [BURN*]}, stages: [burn]}\n"
        "  - {name: rest, stages: [manifest]}\n")
    (work / "benchburn.py").write_text(PLUGIN)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dicom": {"bind": "127.0.0.1", "port": port},
        "storage": {"root": "storage", "min_free_gb": 0.0},
        "courses": {"quiet_seconds": 0.5, "rules_dir": str(work / "rules")},
        "workers": {"nice": nice, **({"cpu_workers": workers} if workers else {})},
        "stages": {"plugins": ["benchburn"]}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), os.environ.get(
        "PYTHONPATH", "")]), "BENCH_BURN_SECONDS": str(burn), "TCP_NODELAY": "1"}
    log = open(work / "serve.log", "wb")
    serve = subprocess.Popen([sys.executable, "-m", "rtnode", "serve", "--config", str(config)],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while not (work / "storage" / "node.json").exists():
            if serve.poll() is not None:
                raise SystemExit((work / "serve.log").read_text())
            time.sleep(0.1)
        time.sleep(3.0)
        if busy:
            for files in tiny:
                subprocess.run(["storescu", "-aet", "BURNSCU", "-aec", "RTNODE", "127.0.0.1",
                                str(port), *map(str, files)], check=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            index = work / "storage" / "index.sqlite"
            while True:  # every worker burning
                db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
                running = db.execute("SELECT COUNT(*) FROM stage_runs WHERE state='running'"
                                     " AND stage='burn'").fetchone()[0]
                db.close()
                if running >= len(tiny):
                    break
                time.sleep(0.2)
            time.sleep(1.0)
        start = time.perf_counter()
        subprocess.run(["storescu", "-aec", "RTNODE", "127.0.0.1", str(port), *map(str, ct)],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        serve.wait(120)


def main(argv: list[str] | None = None) -> int:
    from rtnode.config import Config, usable_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--burn", type=float, default=60.0, help="seconds each burning stage runs")
    args = ap.parse_args(argv)
    workers = Config().workers.cpu_budget()
    nice = Config().workers.nice
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ct = write_ct(tmp / "ct", "RECV1", args.slices)
        tiny = [write_ct(tmp / f"tiny{i}", f"BURN{i}", 1) for i in range(workers)]
        idle = receive_seconds(tmp / "idle", nice, False, ct, tiny, args.burn)
        busy0 = receive_seconds(tmp / "nice0", 0, True, ct, tiny, args.burn)
        busyn = receive_seconds(tmp / f"nice{nice}", nice, True, ct, tiny, args.burn)
        old = max(1, workers - 1)
        busy_old = receive_seconds(tmp / "reserved", 0, True, ct, tiny[:old], args.burn, old)
    print(f"receive of {args.slices} CT slices (256x256), {usable_cores()} cores, "
          f"{workers} cpu workers (the default budget)")
    print(f"  idle node                        : {idle:6.2f} s  ({args.slices / idle:5.0f} inst/s)")
    print(f"  every worker burning, nice 0     : {busy0:6.2f} s  ({args.slices / busy0:5.0f} inst/s,"
          f" {idle / busy0:4.2f}x idle speed)")
    print(f"  every worker burning, nice +{nice:<3d} : {busyn:6.2f} s  "
          f"({args.slices / busyn:5.0f} inst/s, {idle / busyn:4.2f}x idle speed)")
    print(f"  cores - 1 = {old} worker(s) burning, nice 0 (the former default): {busy_old:6.2f} s "
          f"({args.slices / busy_old:5.0f} inst/s, {idle / busy_old:4.2f}x idle speed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
