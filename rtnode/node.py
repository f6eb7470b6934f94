"""``rtnode serve``: the node as one supervised process tree.

The main process holds the DICOM listener (threads), the pipeline thread (course detector and
scheduler) and supervises one consumer process per queue. Start-up order matters for the
no-loss promise: recover the storage (drop partial writes), open and migrate the index, requeue
what the last stop interrupted, open the port, then start the workers and the pipeline. Shutdown is the
reverse: stop accepting, let in-flight stores finish and be acknowledged, stop the pipeline, let
workers finish their running tasks (or requeue them at the next start).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import pydicom
import yaml

from rtnode import __version__
from rtnode.config import Config, usable_cores
from rtnode.courses.detector import Detector
from rtnode.courses.rules import load_rules
from rtnode.dicom.qrscp import QueryRetrieveSCP
from rtnode.dicom.scp import StorageSCP
from rtnode.node_info import HEARTBEAT_S, NodeInfo, pid_alive, read_node_info, write_node_info
from rtnode.queue.hueys import QUEUES, make_huey
from rtnode.queue.scheduler import Scheduler
from rtnode.queue.wake import ARRIVAL, RedisWake, WakeListener
from rtnode.queue.worker import WorkerPool
from rtnode.stages.base import load_stages
from rtnode.store.archive import Archive
from rtnode.store.index import utc_now
from rtnode.store.files import FileStore
from rtnode.store.retention import RetentionThread
from rtnode.store.schema import SCHEMA_VERSION
from rtnode.web.server import start_web
from rtnode.store.verify import verify

log = logging.getLogger("rtnode.node")

#: how long shutdown waits for open associations to finish their stores
DRAIN_SECONDS = 60.0
#: the supervisor's own tick (worker health)
SUPERVISE_S = 1.0
#: how often the pipeline thread looks at the listener's arrival counter (an in-memory int),
#: and how often at most arrivals make the detector regroup during a burst
ARRIVAL_CHECK_S = 0.5
ARRIVAL_TICK_S = 1.0
#: a course's deadline wakes the detector at most this often (guards against a busy loop)
DUE_MIN_GAP_S = 0.1


class NodeAlreadyRunning(RuntimeError):
    """A live node already serves this storage root."""


class ListenerError(RuntimeError):
    """The DICOM port could not be opened (in use, not permitted, bad TLS files)."""


def write_effective_config(config: Config) -> os.PathLike:
    """The configuration the workers load: file + environment + command line, paths absolute."""
    data = config.model_dump(mode="json")
    data["storage"]["root"] = str(config.storage_root)
    data["courses"]["rules_dir"] = str(config.rules_dir)
    if config.log_file is not None:
        data["logging"]["file"] = str(config.log_file)
    from rtnode.dicom.tls import resolve
    for key in ("certificate", "private_key", "ca_certificates"):
        p = resolve(getattr(config.dicom.tls, key), config.base_dir)
        data["dicom"]["tls"][key] = None if p is None else str(p)
    text = ("# written by rtnode serve for its workers; edit the real config instead\n"
            + yaml.safe_dump(data, sort_keys=False))
    folder = config.storage_root / "run"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "config.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk must not stop the node: the workers read it from /tmp
        fd, name = tempfile.mkstemp(prefix="rtnode-config-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        log.error("cannot write %s (%s); the workers read their config from %s", folder, exc,
                  name)
        return Path(name)
    return path


def release_reserve_if_full(config: Config) -> None:
    """On a full disk, give the reserve back before anything else writes (index, queues)."""
    files = FileStore(config.storage_root, fsync=False)
    reserve = int(config.storage.reserve_mb * 1024 * 1024)
    held = files.reserve_path.exists()
    free = files.free_bytes()
    if reserve and (free < reserve or (not held and free < 2 * reserve)):
        freed = files.release_reserve()
        log.error("STORAGE FULL at start-up: %.1f MB free under %s%s; the node runs, stores are "
                  "refused with 0xA700 until space is freed", files.free_bytes() / 2**20,
                  config.storage_root,
                  f" after releasing the {freed >> 20} MB reserve" if freed else "")


def startup_verify(archive: Archive) -> None:
    """The cheap part of `rtnode verify` (no hashing): adopt orphans, report the rest."""
    try:
        report = verify(archive, hash_files=False, repair=True, drop_missing=False)
    except Exception:
        log.exception("start-up check of the storage failed")
        return
    if not report.ok:
        log.warning("storage check: %s; see `rtnode verify`", report.summary())
    elif report.orphans:
        log.warning("storage check: %s", report.summary())
    else:
        log.info("storage check: %s", report.summary())


class Pipeline(threading.Thread):
    """Detector then scheduler, woken by news rather than by a clock.

    The scheduler ticks as soon as a worker reports a finished run (``queue/wake.py``); the
    detector ticks when instances arrived (the listener's in-memory counter, looked at every
    ``ARRIVAL_CHECK_S`` and acted on at most every ``ARRIVAL_TICK_S``) and when the earliest
    quiet period or max-wait of a waiting course runs out. Both also run every
    ``courses.poll_seconds`` as a fallback for news nobody sends (a consumer that died, a row
    changed by another program). A failing tick is logged, not fatal."""

    def __init__(self, detector: Detector, scheduler: Scheduler, every: float,
                 wake: WakeListener | None = None, arrivals: Callable[[], int] | None = None):
        super().__init__(name="rtnode-pipeline", daemon=True)
        self.detector, self.scheduler, self.every = detector, scheduler, every
        self.wake, self.arrivals = wake, arrivals
        self.stop_event = threading.Event()

    def run(self) -> None:
        seen = -1  # arrivals counted at the last detector tick
        last_detect = last_full = -float("inf")
        news: set[str] = set()
        while not self.stop_event.is_set():
            now = time.monotonic()
            count = self.arrivals() if self.arrivals is not None else 0
            full = now - last_full >= self.every
            due = self.detector.seconds_to_next_due()
            detect = full or ARRIVAL in news or (
                due is not None and due <= 0 and now - last_detect >= DUE_MIN_GAP_S) or (
                count != seen and now - last_detect >= ARRIVAL_TICK_S)
            try:
                if detect:
                    seen, last_detect = count, now
                    self.detector.tick()
                if detect or news:
                    self.scheduler.tick()
            except Exception:
                log.exception("pipeline tick failed; retrying")
            if full:
                last_full = now
            news = self._wait(last_full, count != seen)

    def _wait(self, last_full: float, arrivals_pending: bool) -> set[str]:
        timeout = max(0.0, self.every - (time.monotonic() - last_full))
        due = self.detector.seconds_to_next_due()
        if due is not None:
            timeout = min(timeout, max(due + 0.01, DUE_MIN_GAP_S))
        if self.arrivals is not None:
            timeout = min(timeout, ARRIVAL_TICK_S if arrivals_pending else ARRIVAL_CHECK_S)
        if self.wake is None:
            self.stop_event.wait(timeout)
            return set()
        return self.wake.wait(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        if self.wake is not None:
            self.wake.notify()
        self.join(30)


class Node:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = threading.Event()

    def _log_start(self, archive: Archive, port: int, capacity: dict[str, int],
                   wake_ok: bool = True) -> None:
        c = self.config
        cores = usable_cores()
        log.info("rtnode %s starting (pid %d)", __version__, os.getpid())
        log.info("config: %s", c.source or "embedded defaults")
        log.info("DICOM: AE %s on %s:%d, max PDU %s, max associations %d, allowed callers: %s",
                 c.dicom.ae_title, c.dicom.bind, port, c.dicom.max_pdu or "unlimited",
                 c.dicom.max_associations, ", ".join(c.dicom.allowed_callers) or "any")
        log.info("storage: %s (fsync %s, min free %.1f GB), index schema v%d",
                 archive.root, "on" if c.storage.fsync else "OFF", c.storage.min_free_gb,
                 SCHEMA_VERSION)
        log.info("cores: %d, cpu worker budget: %d (reserved %d, workers at nice +%d), "
                 "gpu slots: %s, threads per worker: %d, queue backend: %s", cores,
                 capacity["cpu"], c.workers.reserved_cores, c.workers.nice,
                 ", ".join(c.gpu_devices()) or "none (gpu stages run in the cpu pool)",
                 c.workers.threads_per_worker, c.queue.backend)
        log.info("dispatch: %s, one cpu task queued ahead per worker, fallback poll every %g s",
                 "woken by workers" if wake_ok else "POLLING ONLY (no wake-up socket)",
                 c.courses.poll_seconds)

    def _on_signal(self, signum: int, _frame) -> None:
        log.info("received %s: finishing in-flight stores, then stopping",
                 signal.Signals(signum).name)
        self.stopping.set()

    def _heartbeat(self, root: Path, info: NodeInfo, pool: WorkerPool, archive: Archive,
                   failing: bool) -> bool:
        """node.json, waiting events, the reserve; a full disk degrades this, never stops the
        node. Returns whether the heartbeat is failing (logged once per change)."""
        try:
            info.workers[:] = pool.describe()
            write_node_info(root, info)
            archive.flush_events()
            if archive.reserve_bytes and archive.files.hold_reserve(archive.reserve_bytes) \
                    and failing:
                log.info("storage writable again; reserve held")
        except Exception as exc:
            if not failing:
                log.error("heartbeat cannot write under %s (%s); serving on, node.json is stale",
                          root, exc)
            return True
        if failing:
            log.info("heartbeat writes again")
        return False

    def run(self) -> int:
        root = self.config.storage_root
        other = read_node_info(root)
        if other is not None and other.pid != os.getpid() and pid_alive(other.pid):
            raise NodeAlreadyRunning(
                f"another rtnode (pid {other.pid}, {other.ae_title} on port {other.port}) is "
                f"serving {root}; stop it first or use another storage.root")
        # The archive judges UIDs itself and answers with a status; pydicom's per-value warnings
        # would only repeat that, unformatted, on standard error.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        registry = load_stages(self.config.stages.plugins)
        rules = load_rules(self.config.rules_dir, registry)
        release_reserve_if_full(self.config)
        archive = Archive.from_config(self.config)
        archive.recover()
        devices = self.config.gpu_devices()
        capacity = {"cpu": self.config.workers.cpu_budget(), "gpu": len(devices)}
        hueys = {q: make_huey(self.config, q) for q in QUEUES}
        scheduler = Scheduler(self.config, archive.index, hueys, capacity)
        scheduler.recover()
        pool = WorkerPool(write_effective_config(self.config), capacity["cpu"], devices,
                          self.config.workers.threads_per_worker)
        wake = WakeListener(root)  # before the workers start, so that none of their news is lost
        wake_stop = threading.Event()
        if self.config.queue.backend == "redis":  # workers on other hosts publish there
            redis_wake = RedisWake(self.config.queue.redis_url, self.config.queue.name)
            threading.Thread(target=redis_wake.forward, args=(wake, wake_stop),
                             name="rtnode-wake-redis", daemon=True).start()
        scp = StorageSCP(self.config.dicom, archive, self.config.base_dir,
                         qr=QueryRetrieveSCP(self.config, archive))
        retention = RetentionThread(self.config, archive.index)
        pipeline = Pipeline(Detector(self.config, archive.index, rules, registry), scheduler,
                            self.config.courses.poll_seconds, wake, lambda: scp.stored)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:  # first: a port already in use stops us before any worker is spawned
            scp.start()
        except (OSError, ValueError) as exc:
            archive.close()
            raise ListenerError(
                f"cannot start the listener on {self.config.dicom.bind}:"
                f"{self.config.dicom.port}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            web = start_web(self.config, scp)  # dashboard, API, /metrics (http.enabled)
        except Exception:
            scp.stop(0)
            archive.close()
            raise
        pool.start()
        pipeline.start()
        retention.start()
        self._log_start(archive, scp.port, capacity, wake.event_driven)
        log.info("rules: %d from %s", len(rules.rules), self.config.rules_dir)
        threading.Thread(target=startup_verify, args=(archive,), name="rtnode-verify",
                         daemon=True).start()
        info = NodeInfo(pid=os.getpid(), ae_title=self.config.dicom.ae_title,
                        bind=self.config.dicom.bind, port=scp.port, started_at=utc_now())
        last_beat = 0.0
        beat_failing = False
        try:
            while not self.stopping.is_set():
                pool.check()
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    last_beat = time.monotonic()
                    beat_failing = self._heartbeat(root, info, pool, archive, beat_failing)
                self.stopping.wait(SUPERVISE_S)
        finally:
            drained = scp.stop(DRAIN_SECONDS)
            if web is not None:
                web.stop()
            pipeline.stop()
            retention.stop()
            wake_stop.set()
            wake.close()
            pool.stop()
            (root / "node.json").unlink(missing_ok=True)
            try:
                archive.close()
            except Exception:
                log.exception("closing the index failed")
            log.info("stopped after %d stored instance(s)%s", scp.stored,
                     "" if drained else " (some associations were aborted)")
        return 0
