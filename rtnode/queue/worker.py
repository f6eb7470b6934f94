"""Worker processes: a Huey consumer per queue, and the supervisor that keeps them alive.

The worker budget is one level of parallelism: a consumer runs N process workers, and every
process caps its BLAS/OpenMP/NumExpr threads (``workers.threads_per_worker``) before numpy is
imported, so N workers never become N × cores threads.

Every consumer registers in the index's worker registry (queue/registry.py) with its host, pid,
queue and slots, and a heartbeat thread keeps the row fresh: the scheduler dispatches as many
runs as there are live slots, wherever they are.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("rtnode.workers")

#: ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS: SimpleITK's filters (resampling in pyradiomics, the
#: body segmentation's morphology) otherwise start a thread per core in every worker
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_MAX_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
#: the longest an idle worker waits before looking at its queue again
IDLE_POLL_S = 0.1
#: seconds a consumer gets to finish its running tasks after SIGINT before it is killed
STOP_GRACE_S = 20.0


#: set by the node on each consumer it starts: the pid that consumer must die with
PARENT_PID_ENV = "RTNODE_PARENT_PID"


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG).

    A consumer whose node was killed, or a Huey worker whose consumer was, must not live on
    taking tasks outside the worker budget. The request only covers a death after it is made:
    a parent that died first (a node killed while its consumer was still importing) has left
    this process to init, so when the parent's pid is known and getppid() no longer matches,
    the process ends here. Elsewhere than Linux this is a no-op.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


_forking_pid = 0


def _note_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _die_with_forking_process() -> None:
    die_with_parent(_forking_pid or None)


def allow_child_processes() -> None:
    """Huey starts its process workers as daemons, and multiprocessing refuses children to a
    daemon; stages such as TotalSegmentator start processes of their own. Each worker is
    stopped by its consumer and dies with it (PR_SET_PDEATHSIG), so nothing relies on the flag."""
    import multiprocessing

    multiprocessing.current_process()._config["daemon"] = False


def cap_threads(threads: int, environ: dict | None = None) -> dict:
    env = os.environ if environ is None else environ
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    return env


class Heartbeat(threading.Thread):
    """Keeps this consumer's registry row fresh, gives back runs of its own task processes that
    died (Huey restarts the process; the run would otherwise stay 'running'), and kills a task
    process far past its run's timeout (on any host, not only the serving node's).

    Each beat opens and closes its own connection: Huey forks task processes from this
    process, and a forked child must never inherit (and later close) a live connection."""

    def __init__(self, config, wid: str, register: dict):
        super().__init__(name="rtnode-heartbeat", daemon=True)
        self.config, self.wid, self.row = config, wid, register
        self.stop_event = threading.Event()

    def _with_registry(self, action) -> None:
        from rtnode.queue.registry import Registry
        from rtnode.store.index import open_index

        index = open_index(self.config, migrate=False)
        try:
            action(Registry(index, self.config.workers.heartbeat_timeout))
        finally:
            index.close()

    def register(self) -> None:
        self._with_registry(lambda r: r.register(self.wid, **self.row))

    def _beat(self, registry) -> None:
        if not registry.beat(self.wid):
            log.warning("worker %s was forgotten as silent; registering again", self.wid)
            registry.register(self.wid, **self.row)
        registry.release_dead_tasks(self.wid, self.config)

    def run(self) -> None:
        while not self.stop_event.wait(self.config.workers.heartbeat_seconds):
            try:
                self._with_registry(self._beat)
            except Exception as exc:  # the index unreachable for a moment: beat again later
                log.warning("worker %s: heartbeat failed: %s", self.wid, exc)

    def stop(self) -> None:
        self.stop_event.set()
        try:
            self._with_registry(lambda r: r.unregister(self.wid))
        except Exception as exc:
            log.warning("worker %s: could not unregister: %s", self.wid, exc)


def lower_priority(increment: int) -> int:
    """Run this consumer (and every worker it forks) ``increment`` steps nicer than the node.

    The budget gives the workers every core; the listener and the pipeline thread stay at the
    node's own priority, so a C-STORE or a hand-over still gets a core at once while workers
    take whatever is left (docs/ARCHITECTURE.md, "One worker budget")."""
    if increment <= 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    try:
        return os.nice(increment)
    except OSError as exc:
        log.warning("cannot lower the worker priority by %d: %s", increment, exc)
        return os.getpriority(os.PRIO_PROCESS, 0)


def notify_node_on_finish(huey, config) -> None:
    """Tell the node's pipeline thread each time a task ends, whatever its outcome, so the next
    run is dispatched at once instead of at the next poll (``queue/wake.py``): through this
    host's wake socket, or through Redis pub/sub when the queues are on Redis (workers on other
    hosts)."""
    from huey import signals as S

    from rtnode.queue.wake import RedisWake, WakeSender

    senders: dict[int, object] = {}  # one sender per worker process (opened after the fork)

    def sender():
        if config.queue.backend == "redis":
            return RedisWake(config.queue.redis_url, config.queue.name)
        return WakeSender(config.storage_root)

    @huey.signal(S.SIGNAL_COMPLETE, S.SIGNAL_ERROR, S.SIGNAL_CANCELED, S.SIGNAL_EXPIRED,
                 S.SIGNAL_REVOKED, S.SIGNAL_INTERRUPTED)
    def _finished(signal, task, *args, **kwargs) -> None:
        pid = os.getpid()
        if pid not in senders:
            senders.clear()
            senders[pid] = sender()
        senders[pid].notify()


def run_consumer(config_path: Path, queue: str, workers: int) -> None:
    """Run one queue's consumer in this process until SIGINT (graceful) or SIGTERM."""
    from rtnode.config import load_config
    from rtnode.node_info import HOST
    from rtnode.queue.hueys import make_huey
    from rtnode.queue.registry import WORKER_ID_ENV, worker_id
    from rtnode.stages.base import load_stages
    from rtnode.store.index import open_index

    parent = os.environ.get(PARENT_PID_ENV, "")
    die_with_parent(int(parent) if parent.isdigit() else None)
    config = load_config(config_path)
    lower_priority(config.workers.nice)
    cap_threads(config.workers.threads_per_worker)
    os.environ["RTNODE_CONFIG"] = str(Path(config_path).resolve())
    load_stages(config.stages.plugins)
    open_index(config).close()  # create or migrate it before registering (a worker may be first)
    wid = worker_id(HOST, os.getpid(), queue)
    os.environ[WORKER_ID_ENV] = wid  # the task processes Huey forks record it on their runs
    heartbeat = Heartbeat(config, wid, {"host": HOST, "pid": os.getpid(), "queue": queue,
                                        "slots": workers,
                                        "device": os.environ.get("RTNODE_DEVICE", "")})
    heartbeat.register()
    huey = make_huey(config, queue)
    # every process Huey forks (workers and its scheduler) dies with this consumer
    os.register_at_fork(before=_note_forking_pid, after_in_child=_die_with_forking_process)
    huey.on_startup()(allow_child_processes)
    notify_node_on_finish(huey, config)
    # an idle worker looks at its queue at least every IDLE_POLL_S: a run dispatched to an idle
    # pool starts within that (a busy worker finds its queued-ahead run at once)
    consumer = huey.create_consumer(workers=workers, worker_type="process", periodic=False,
                                    initial_delay=0.02, backoff=1.5, max_delay=IDLE_POLL_S,
                                    check_worker_health=True, health_check_interval=2)
    log.info("%s queue: %d process worker(s), %d thread(s) each, nice +%d, backend %s,"
             " registered as %s", queue, workers, config.workers.threads_per_worker,
             os.getpriority(os.PRIO_PROCESS, 0), config.queue.backend, wid)
    heartbeat.start()
    try:
        consumer.run()
    finally:
        heartbeat.stop()


@dataclass
class WorkerProcess:
    queue: str
    workers: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class WorkerPool:
    """The node's own consumers as child processes, restarted (with back-off) if they die."""

    def __init__(self, config_path: Path, cpu_workers: int, gpu_devices: list[str],
                 threads: int):
        """One cpu consumer with cpu_workers processes, and one single-worker gpu consumer per
        gpu slot, told its device through RTNODE_DEVICE."""
        self.config_path = config_path
        self.threads = threads
        self.children = [WorkerProcess("cpu", cpu_workers)] + [
            WorkerProcess("gpu", 1, {"RTNODE_DEVICE": device}) for device in gpu_devices]

    def _spawn(self, w: WorkerProcess) -> None:
        env = cap_threads(self.threads, dict(os.environ))
        env["RTNODE_CONFIG"] = str(self.config_path)
        env[PARENT_PID_ENV] = str(os.getpid())
        env.update(w.env)
        w.proc = subprocess.Popen(
            [sys.executable, "-m", "rtnode", "worker", "--queue", w.queue, "--workers",
             str(w.workers), "--config", str(self.config_path)], env=env)
        w.started.append(time.monotonic())
        log.info("started %s worker process %d (%d worker(s)%s)", w.queue, w.proc.pid, w.workers,
                 f", device {w.env['RTNODE_DEVICE']}" if "RTNODE_DEVICE" in w.env else "")

    def start(self) -> None:
        for w in self.children:
            self._spawn(w)

    def check(self) -> None:
        """Restart consumers that exited; back off when one keeps dying."""
        now = time.monotonic()
        for w in self.children:
            if w.proc is None or w.proc.poll() is None:
                continue
            if w.next_start == 0.0:
                delay = min(30.0, 2.0 ** min(w.restarts, 5)) if w.restarts else 0.0
                w.next_start = now + delay
                log.error("%s worker process %d exited with %s; restarting in %.0f s", w.queue,
                          w.proc.pid, w.proc.returncode, delay)
            if now >= w.next_start:
                w.restarts += 1
                w.next_start = 0.0
                self._spawn(w)

    def describe(self) -> list[dict]:
        return [{"queue": w.queue, "pid": w.pid, "workers": w.workers,
                 "device": w.env.get("RTNODE_DEVICE")} for w in self.children]

    def stop(self) -> None:
        """SIGINT: Huey finishes running tasks; whoever is still there after the grace period
        is killed (its runs are requeued at the next start)."""
        for w in self.children:
            if w.proc and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for w in self.children:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s worker process %d did not stop in time; killing it", w.queue,
                            w.proc.pid)
                w.proc.kill()
                w.proc.wait(10)
