"""Course throughput: N phantom courses (30 ROIs + BODY, CT + RTSTRUCT + RTPLAN + RTDOSE each)
sent at once to a node at DEFAULT settings, against the same stages run one after another in one
process, measured in the same run.

  (a) sequential: the courses are filed into a fresh storage, the detector makes their
      revisions, and one process runs every stage run of the default rule (manifest, segment
      with builtin:body, rtstruct, send, dvh, radiomics, qc) through the node's own runner,
      course after course, stage after stage, with radiomics as ONE part per course (no
      fan-out). It runs at the workers' priority (nice +workers.nice), so a machine shared with
      other work treats both sides alike.
  (b) node: ``rtnode serve`` with nothing set but its port, storage folder and
      ``courses.quiet_seconds: 2`` (so the bench does not wait 30 s per course; the clock starts
      when the first course is ready anyway); every course sent by its own storescu at once.
      Timed from the first course ready (its revision) to the last stage run finished, as the
      index recorded them.

Prints both times and their ratio (goal: node <= 0.6x sequential on 2 cores), each side's CPU
utilisation (CPU seconds of the whole process tree / (wall x cores)), the median idle gap between
a course's tasks (time in which no task of a started, unfinished course runs; goal < 0.1 s) and
the median hand-over gap of each worker (its previous task's end to its next task's start).

    .venv/bin/python scripts/bench/throughput.py [--courses 4] [--rois 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# the bench folder holds radiomics.py: it must not shadow the pyradiomics package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


def build_course(index: int, rois: int, folder: Path) -> list[Path]:
    from rtnode.phantom import CTGeometry, EllipticBody, Patient, PhantomCourse, Sphere

    shapes = []
    for i in range(rois):
        a = 2 * math.pi * i / rois
        z = -24.0 if i % 2 else 24.0
        shapes.append(Sphere(f"OAR{i + 1:02d}", center=(75 * math.cos(a), 50 * math.sin(a), z),
                             radius=12.0 + 3.0 * (i % 4)))
    shapes.append(EllipticBody(semi_x=120.0, semi_y=90.0))
    course = PhantomCourse(patient=Patient(patient_id=f"TPUT{index:03d}"), shapes=shapes,
                           geometry=CTGeometry(rows=128, columns=128, pixel_spacing=(2.0, 2.0),
                                               slices=48, slice_spacing=2.5)).build()
    return course.write(folder)


def ts(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the index's view of what ran ------------------------------------------------------------

def read_runs(index: Path) -> tuple[list[dict], list[float]]:
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    runs = [dict(r) for r in db.execute(
        "SELECT course_fk, stage, part, state, started_at, finished_at, worker_pid"
        " FROM stage_runs WHERE started_at != '' AND finished_at != ''")]
    ready = [ts(r[0]) for r in db.execute("SELECT created_at FROM revisions")]
    db.close()
    return runs, ready


def idle_stretches(runs: list[dict]) -> list[tuple[float, float]]:
    """For each course: the (from, to) stretches between its first start and last end in which
    none of its tasks ran."""
    stretches = []
    by_course: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        by_course.setdefault(r["course_fk"], []).append((ts(r["started_at"]),
                                                         ts(r["finished_at"])))
    for spans in by_course.values():
        spans.sort()
        end = spans[0][1]
        for start, finish in spans[1:]:
            if start > end:
                stretches.append((end, start))
            end = max(end, finish)
    return stretches


def course_gaps(runs: list[dict]) -> list[float]:
    """The length of every idle stretch within a course."""
    return [start - end for end, start in idle_stretches(runs)]


def gaps_with_a_free_worker(runs: list[dict], workers: int) -> list[float]:
    """For each idle gap within a course: how much of it passed while fewer than ``workers``
    tasks (of any course) ran — time the course waited although a worker was free, which is
    what dispatch latency costs (a course waiting for busy workers is not idle machine)."""
    events = sorted([(ts(r["started_at"]), 1) for r in runs] +
                    [(ts(r["finished_at"]), -1) for r in runs])
    free: list[tuple[float, float]] = []  # intervals with a free worker
    running, since = 0, None
    for t, step in events:
        if running < workers and since is not None and t > since:
            free.append((since, t))
        running += step
        since = t
    return [sum(max(0.0, min(b, start) - max(a, end)) for a, b in free)
            for end, start in idle_stretches(runs)]


def worker_gaps(runs: list[dict]) -> list[float]:
    gaps = []
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for r in runs:
        by_pid.setdefault(r["worker_pid"], []).append((ts(r["started_at"]), ts(r["finished_at"])))
    for spans in by_pid.values():
        spans.sort()
        gaps += [max(0.0, b[0] - a[1]) for a, b in zip(spans, spans[1:])]
    return gaps


def describe(gaps: list[float]) -> str:
    if not gaps:
        return "none"
    return (f"median {statistics.median(gaps):.3f} s over {len(gaps)} gaps "
            f"(total {sum(gaps):.1f} s)")


# -- (a) sequential --------------------------------------------------------------------------

def sequential_child(work: Path) -> None:
    """Runs in its own process (at the workers' priority): file, detect, run every stage."""
    from rtnode.cohorts.importer import import_path
    from rtnode.config import load_config
    from rtnode.courses.book import PENDING, QUEUED, CourseBook
    from rtnode.courses.detector import Detector
    from rtnode.courses.rules import load_rules
    from rtnode.queue.scheduler import Scheduler
    from rtnode.stages.base import load_stages
    from rtnode.stages.runner import execute
    from rtnode.store.archive import Archive

    config_path = work / "config.yaml"
    os.environ["RTNODE_CONFIG"] = str(config_path)
    config = load_config(config_path)
    registry = load_stages(config.stages.plugins)
    rules = load_rules(config.rules_dir, registry)
    archive = Archive.from_config(config)
    for folder in sorted((work / "courses").iterdir()):
        import_path(archive, folder)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    Detector(config, archive.index, rules, registry).tick(now=later)
    scheduler = Scheduler(config, archive.index, {}, {})
    book = CourseBook(archive.index)
    start = time.perf_counter()
    while True:
        scheduler._resolve()
        ready = scheduler._ready("cpu", 1)
        if not ready:
            break
        token = uuid.uuid4().hex
        book.transition(ready[0]["id"], QUEUED, expect=[PENDING], token=token)
        execute(ready[0]["id"], token)
    (work / "seconds").write_text(str(time.perf_counter() - start))


def sequential(course_dirs: list[Path], work: Path, nice: int) -> tuple[float, float, list]:
    work.mkdir()
    (work / "courses").symlink_to(course_dirs[0].parent)
    (work / "config.yaml").write_text(yaml.safe_dump({
        "storage": {"root": str(work / "storage"), "min_free_gb": 0.0},
        "courses": {"quiet_seconds": 0.0, "rules_dir": str(REPO / "rules")},
        "workers": {"cpu_workers": 1, "parts_per_worker": 1}}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, __file__, "--sequential-child", str(work)], check=True,
                   preexec_fn=lambda: os.nice(nice))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    runs, _ = read_runs(work / "storage" / "index.sqlite")
    return float((work / "seconds").read_text()), cpu, runs


# -- (b) the node ----------------------------------------------------------------------------

def tree_cpu(root: int) -> float:
    """CPU seconds of root and every live descendant (plus children they reaped)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime
    total = 0.0
    for pid in times:
        p = pid
        while p > 1 and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += times[pid]
    return total


def node(files: list[list[Path]], work: Path, n: int) -> tuple[float, float, list, float]:
    port = free_port()
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dicom": {"bind": "127.0.0.1", "port": port},
        "storage": {"root": "storage", "min_free_gb": 0.0},
        "courses": {"quiet_seconds": 2.0, "rules_dir": str(REPO / "rules")}}))
    index = work / "storage" / "index.sqlite"
    log = open(work / "serve.log", "wb")
    serve = subprocess.Popen([sys.executable, "-m", "rtnode", "serve", "--config", str(config)],
                             stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, float]] = []
    try:
        while not (work / "storage" / "node.json").exists():
            if serve.poll() is not None:
                raise SystemExit(f"rtnode serve exited:\n{(work / 'serve.log').read_text()}")
            time.sleep(0.1)
        time.sleep(3.0)  # workers up and idle before anything is sent
        env = {**os.environ, "TCP_NODELAY": "1"}
        senders = [subprocess.Popen(["storescu", "-aec", "RTNODE", "127.0.0.1", str(port),
                                     *map(str, course)], env=env) for course in files]
        for s in senders:
            assert s.wait(600) == 0, "storescu failed"
        last_sent = time.time()
        while True:
            samples.append((time.time(), tree_cpu(serve.pid)))
            db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
            states = [r[0] for r in db.execute("SELECT state FROM courses")]
            db.close()
            if len(states) == n and all(s in ("done", "failed") for s in states):
                break
            time.sleep(0.5)
        samples.append((time.time(), tree_cpu(serve.pid)))
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        serve.wait(120)
    runs, ready = read_runs(index)
    first_ready = min(ready)
    last_done = max(ts(r["finished_at"]) for r in runs)
    before = max((s for s in samples if s[0] <= first_ready), default=samples[0])
    cpu = samples[-1][1] - before[1]
    return last_done - first_ready, cpu, runs, last_done - last_sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--courses", type=int, default=4)
    ap.add_argument("--rois", type=int, default=30)
    ap.add_argument("--nice", type=int, default=None,
                    help="run the node's workers and the sequential side at this nice instead "
                         "of workers.nice (on a machine shared with other work)")
    ap.add_argument("--sequential-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sequential_child:
        sequential_child(args.sequential_child)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from rtnode.config import Config

    defaults = Config()
    from rtnode.config import usable_cores

    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dirs = [tmp / "courses" / f"c{i:03d}" for i in range(args.courses)]
        files = [build_course(i, args.rois, d) for i, d in enumerate(dirs)]
        nice = defaults.workers.nice if args.nice is None else args.nice
        if args.nice is not None:
            os.environ["RTNODE_WORKERS__NICE"] = str(args.nice)
        seq_s, seq_cpu, seq_runs = sequential(dirs, tmp / "sequential", nice)
        (tmp / "node").mkdir()
        node_s, node_cpu, node_runs, from_sent = node(files, tmp / "node", args.courses)
    bad = [r for r in node_runs if r["state"] == "failed"]
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {cores} cores (a machine "
          "shared with other work gives both sides less than the full cores)")
    print(f"{args.courses} courses x {args.rois} ROIs (+BODY), default rule, {cores} cores; node "
          f"at defaults: {defaults.workers.cpu_budget()} cpu workers at nice "
          f"+{nice}, {defaults.workers.parts_per_worker} parts per worker, "
          f"fallback poll {defaults.courses.poll_seconds:g} s")
    print(f"  sequential, one process : {seq_s:7.1f} s   CPU {seq_cpu:6.1f} s = "
          f"{100 * seq_cpu / (seq_s * cores):4.0f} % of {cores} cores")
    print(f"  node, default settings  : {node_s:7.1f} s   CPU {node_cpu:6.1f} s = "
          f"{100 * node_cpu / (node_s * cores):4.0f} % of {cores} cores  "
          f"(first course ready -> last run done; {from_sent:.1f} s after the last send)")
    print(f"  node / sequential       : {node_s / seq_s:7.2f}    (goal <= 0.6)")
    busy = sum(ts(r["finished_at"]) - ts(r["started_at"]) for r in node_runs)
    workers = len({r["worker_pid"] for r in node_runs})
    print(f"  node worker utilisation : {100 * busy / (node_s * max(workers, 1)):6.0f} %   "
          f"({len(node_runs)} tasks on {workers} worker processes)")
    print(f"  CPU seconds node / sequential         : {node_cpu / seq_cpu:5.2f}  (the node's "
          "overhead for the same work: listener, pipeline, hand-overs, parts)")
    print(f"  idle gaps within a course (node)      : {describe(course_gaps(node_runs))}")
    print(f"    of which a worker was free          : "
          f"{describe(gaps_with_a_free_worker(node_runs, workers))}  (goal: median < 0.1 s)")
    print(f"  hand-over gaps of each worker (node)  : {describe(worker_gaps(node_runs))}")
    print(f"  idle gaps within a course (sequential): {describe(course_gaps(seq_runs))}")
    print("  seconds inside each stage, summed over courses (sequential | node):")
    for name in dict.fromkeys(r["stage"] for r in seq_runs + node_runs):
        def total(runs):
            return sum(ts(r["finished_at"]) - ts(r["started_at"]) for r in runs
                       if r["stage"] == name)
        print(f"    {name:10s} {total(seq_runs):7.1f} | {total(node_runs):7.1f}")
    if bad:
        print(f"  FAILED runs in the node: {json.dumps(bad)[:600]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
