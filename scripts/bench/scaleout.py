"""Scale-out benchmark: throughput of N CPU-bound parts (one fan-out stage) with 1, 2 and 3
worker processes, each registered as a separate host (RTNODE_HOST_ID), on Huey over Redis.

For each count k a fresh node is started with one cpu slot of its own, plus k - 1
``rtnode worker --workers 1`` processes under other host ids; one CT course is imported and
its ``burn`` stage fans out into N parts. Throughput is N divided by the span from the first
part's start to the last part's end, as the index recorded them; the 1-worker run is the
reference measured in the same run. The goal is a speed-up of at least 0.8 × k where the
machine has at least k free cores — the core count is printed so the figure can be read.

    .venv/bin/python scripts/bench/scaleout.py [--parts 12] [--work 2e7] [--max-workers 3]
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
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RTNODE = [sys.executable, "-m", "rtnode"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen:
    redis = shutil.which("redis-server")
    if redis is None:
        sys.exit("redis-server is needed (apt-get install redis-server)")
    proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def write_course(folder: Path) -> Path:
    from rtnode.phantom import CTGeometry, Patient, PhantomCourse

    course = PhantomCourse(patient=Patient(patient_id="BENCHSCALE"),
                           geometry=CTGeometry(rows=32, columns=32, slices=8)).build(False)
    course.write(folder)
    return folder


def wait(what: str, predicate, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def cli_json(config: Path, env: dict, *args: str):
    r = subprocess.run([*RTNODE, *args, "--json", "--config", str(config)], env=env,
                       capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout) if r.returncode == 0 else None


def run_once(k: int, args, redis_url: str, course: Path, root: Path) -> float:
    folder = root / f"k{k}"
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "bench.yaml").write_text("rules:\n  - {name: bench, stages: [burn]}\n")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dicom": {"bind": "127.0.0.1", "port": free_port()},
        "storage": {"root": "storage", "min_free_gb": 0.0},
        "courses": {"quiet_seconds": 1.0, "max_wait_seconds": 5.0, "poll_seconds": 0.3,
                    "rules_dir": "rules"},
        "workers": {"cpu_workers": 1, "heartbeat_seconds": 1.0, "heartbeat_timeout": 10.0},
        "queue": {"backend": "redis", "redis_url": redis_url, "name": f"bench{k}"},
        "stages": {"plugins": ["scaleout_stages"]},
    }))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE),
                                                        os.environ.get("PYTHONPATH", "")]),
           "RTNODE_BENCH_PARTS": str(args.parts), "RTNODE_BENCH_WORK": str(args.work),
           "OMP_NUM_THREADS": "1"}
    log = open(folder / "processes.log", "ab")
    procs = [subprocess.Popen([*RTNODE, "serve", "--config", str(config)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)]
    try:
        for i in range(1, k):
            procs.append(subprocess.Popen(
                [*RTNODE, "worker", "--queue", "cpu", "--workers", "1", "--config", str(config)],
                env={**env, "RTNODE_HOST_ID": f"bench-host-{i}"}, stdout=log,
                stderr=subprocess.STDOUT))
        wait(f"{k} registered worker host(s)", lambda: len({
            w["host"] for w in (cli_json(config, env, "workers") or []) if w["live"]}) == k)
        subprocess.run([*RTNODE, "import", str(course), "--config", str(config)], env=env,
                       check=True, capture_output=True, timeout=300)
        wait("the course to finish", lambda: any(
            c["state"] in ("done", "failed") for c in (cli_json(config, env, "courses") or [])),
            timeout=3600)
        db = sqlite3.connect(folder / "storage" / "index.sqlite")
        rows = db.execute("SELECT started_at, finished_at, state, worker_host FROM stage_runs"
                          " WHERE stage='burn' AND part != ''").fetchall()
        db.close()
        if len(rows) != args.parts or any(r[2] != "done" for r in rows):
            raise SystemExit(f"k={k}: parts did not all finish: {rows}")
        start = min(dt.datetime.fromisoformat(r[0]) for r in rows)
        end = max(dt.datetime.fromisoformat(r[1]) for r in rows)
        hosts = len({r[3] for r in rows})
        span = (end - start).total_seconds()
        print(f"  {k} worker(s): {args.parts} parts in {span:.1f} s on {hosts} host id(s)",
              flush=True)
        return args.parts / span
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if p is procs[0] else signal.SIGINT)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=12)
    ap.add_argument("--work", type=float, default=2e7, help="iterations per part")
    ap.add_argument("--max-workers", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rtnode-bench-scaleout-"))
    port = free_port()
    redis = start_redis(port)
    try:
        course = write_course(root / "course")
        cores = os.cpu_count() or 1
        print(f"cores: {cores} (load average {os.getloadavg()[0]:.1f}); {args.parts} parts of "
              f"{args.work:.3g} iterations each", flush=True)
        rates = {k: run_once(k, args, f"redis://127.0.0.1:{port}/0", course, root)
                 for k in range(1, args.max_workers + 1)}
        print(f"\n{'workers':>8} {'parts/s':>9} {'speed-up':>9} {'goal':>6}")
        for k, rate in rates.items():
            print(f"{k:>8} {rate:>9.2f} {rate / rates[1]:>8.2f}x {0.8 * k:>5.1f}x")
        print(f"(cores: {cores}; the goal applies where cores >= workers + 1 for the listener)")
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
