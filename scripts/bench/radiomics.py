"""Radiomics fan-out benchmark: one course with N ROIs (default 20), extracted

  (a) by one process running pyradiomics ROI after ROI (``extract_course``, what
      ``rtnode radiomics`` does), and
  (b) by the ``radiomics`` stage in a running node at DEFAULT dispatch settings (no poll
      override: workers wake the node; ROIs grouped into workers.parts_per_worker balanced parts
      per worker) — once with 1 cpu worker and once with the default budget (every core) —
      timed from the split's start to the merge's end as the index recorded them,

in one run, and prints all three and the ratios. Goals: the default budget (2 workers on 2 cores)
>= 1.7x one worker, and one course at default settings no slower than the sequential run.
The sequential run is at the workers' priority (nice +workers.nice), so a machine shared with
other work treats both sides alike.

    .venv/bin/python scripts/bench/radiomics.py [--rois 20] [--workers 1,default]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this file is named radiomics.py: its own folder must not shadow the pyradiomics package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import yaml  # noqa: E402

from rtnode.phantom import CTGeometry, EllipticBody, Patient, PhantomCourse, Sphere  # noqa: E402
from rtnode.radiomics.config import RadiomicsConfig  # noqa: E402
from rtnode.radiomics.course import extract_course, folder_course  # noqa: E402


def course(n: int) -> PhantomCourse:
    """n organ-sized spheres (radius 22-34 mm, 45-165 cc) in two rings inside the body: at the
    shipped 1 mm resampling each takes about a second, as organs of a clinical CT do."""
    import math

    shapes = []
    for i in range(n):
        a = 2 * math.pi * i / n
        z = -24.0 if i % 2 else 24.0
        shapes.append(Sphere(f"OAR{i + 1:02d}", center=(75 * math.cos(a), 50 * math.sin(a), z),
                             radius=22.0 + 4.0 * (i % 4)))
    shapes.append(EllipticBody(semi_x=120.0, semi_y=90.0))
    return PhantomCourse(patient=Patient(patient_id="BENCHRAD"), shapes=shapes,
                         geometry=CTGeometry(rows=128, columns=128, pixel_spacing=(2.0, 2.0),
                                             slices=48, slice_spacing=2.5)).build()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_run(files: list[Path], workers: int, work: Path) -> tuple[float, list[dict]]:
    port = free_port()
    (work / "rules").mkdir()
    (work / "rules" / "r.yaml").write_text("rules:\n  - {name: bench, stages: [radiomics]}\n")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dicom": {"bind": "127.0.0.1", "port": port}, "storage": {"root": "storage",
                                                                "min_free_gb": 0.0},
        "courses": {"quiet_seconds": 1.0, "rules_dir": str(work / "rules")},
        **({"workers": {"cpu_workers": workers}} if workers else {}),
        "stages": {"plugins": ["rtnode.stages.radiomics"]}}))
    cmd = [sys.executable, "-m", "rtnode"]
    log = open(work / "serve.log", "wb")
    serve = subprocess.Popen([*cmd, "serve", "--config", str(config)], stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        while not (work / "storage" / "node.json").exists():
            time.sleep(0.1)
        subprocess.run(["storescu", "-aec", "RTNODE", "127.0.0.1", str(port),
                        *map(str, files)], check=True, env={**os.environ, "TCP_NODELAY": "1"})
        # wait on the merge's output file: polling the CLI would start a Python process every
        # poll and take CPU from the very workers being measured
        while not list((work / "storage" / "courses").glob("*/r*/radiomics.csv")):
            time.sleep(0.5)
        time.sleep(1.0)  # the merge's 'done' row is written right after its file
        r = subprocess.run([*cmd, "courses", "--json", "--config", str(config)],
                           capture_output=True, text=True, check=True)
        courses = json.loads(r.stdout)
        import pandas as pd

        status = pd.read_csv(next((work / "storage" / "courses").glob("*/r*/"
                                                                      "radiomics_status.csv")))
        courses[0]["extract_seconds"] = float(status["seconds"].sum())
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        serve.wait(60)
    runs = [s for s in courses[0]["stages"] if s["stage"] == "radiomics"]
    t = [dt.datetime.fromisoformat(s[k]) for s in runs for k in ("started_at", "finished_at")]
    return (max(t) - min(t)).total_seconds(), runs, courses[0]["extract_seconds"]


def sequential_child(folder: Path) -> None:
    start = time.perf_counter()
    results = extract_course(folder_course(folder), RadiomicsConfig())
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "done": sum(r.state == "done" for r in results)}))


def main(argv: list[str] | None = None) -> int:
    from rtnode.config import Config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rois", type=int, default=20)
    ap.add_argument("--workers", default="1,default",
                    help="comma-separated worker counts; 'default' = the node's own budget")
    ap.add_argument("--nice", type=int, default=None,
                    help="run the node's workers and the sequential side at this nice instead "
                         "of workers.nice (on a machine shared with other work)")
    ap.add_argument("--sequential-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sequential_child:
        sequential_child(args.sequential_child)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    defaults = Config().workers
    nice = defaults.nice if args.nice is None else args.nice
    if args.nice is not None:
        os.environ["RTNODE_WORKERS__NICE"] = str(args.nice)
    runs_wanted = [None if w == "default" else int(w) for w in args.workers.split(",")]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = course(args.rois).write(tmp / "course")
        r = subprocess.run([sys.executable, __file__, "--sequential-child", str(tmp / "course")],
                           check=True, capture_output=True, text=True,
                           preexec_fn=lambda: os.nice(nice))
        seq = json.loads(r.stdout.strip().splitlines()[-1])
        for i, workers in enumerate(runs_wanted):
            (tmp / f"node{i}").mkdir()
            results[workers] = node_run(files, workers, tmp / f"node{i}")
    sequential, done = seq["seconds"], seq["done"]
    print(f"{args.rois} ROIs, {os.cpu_count()} cores, node defaults: "
          f"{defaults.cpu_budget()} cpu workers, {defaults.parts_per_worker} parts per worker, "
          f"fallback poll {Config().courses.poll_seconds:g} s (not overridden); workers and "
          f"sequential side at nice +{nice}; load average {os.getloadavg()[0]:.1f}")
    print(f"  one process, ROI after ROI       : {sequential:7.2f} s  ({done} ROIs extracted)")
    for workers, (fanned, runs, extract_s) in results.items():
        parts = [r for r in runs if r["part"]]
        n_done = sum(r["state"] == "done" for r in parts)
        busy = sum((dt.datetime.fromisoformat(r["finished_at"])
                    - dt.datetime.fromisoformat(r["started_at"])).total_seconds() for r in parts)
        label = f"node, {workers} worker(s)" if workers else \
            f"node, default ({defaults.cpu_budget()} workers)"
        print(f"  {label:33s}: {fanned:7.2f} s  ({n_done} of {len(parts)} parts done, "
              f"{busy:.1f} s inside parts, {extract_s:.1f} s mask+pyradiomics; "
              f"sequential/node {sequential / fanned:.2f}x)")
    if 1 in results and None in results:
        ratio = results[1][0] / results[None][0]
        print(f"  default budget vs 1 worker       : {ratio:7.2f}x  (goal >= 1.7 with 2 workers)")
    if None in results:
        print(f"  default node vs sequential       : {results[None][0] / sequential:7.2f}   "
              f"(goal <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
