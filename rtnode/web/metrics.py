"""/metrics (Prometheus text format) and /healthz, derived from the index at scrape time.

Nothing is counted on the receive path: the index already records every received, duplicate,
replaced and rejected instance and every refused association as an event, and every stage
transition as a 'stage' event. Counters are those events counted (so they survive restarts and
count what other processes did too); stage durations are built incrementally from the stage
events since the last scrape (running → done/failed), so a scrape reads only what is new.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from typing import Any, Callable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from rtnode.config import Config

#: stage duration buckets, seconds: a manifest takes well under a second, a segmentation an hour
BUCKETS = (0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)


def association_reason(detail: str) -> str:
    """A refused association's reason as a small fixed label set (the detail names AE titles)."""
    d = detail or ""
    if "allowed_callers" in d:
        return "calling_ae_not_allowed"
    if "max_associations" in d:
        return "association_limit"
    if "called AE title" in d:
        return "called_ae_not_ours"
    return "other"


def status_label(status: int | None) -> str:
    return "unknown" if status is None else f"0x{int(status):04X}"


def _seconds(start: str, end: str) -> float | None:
    try:
        return max(0.0, (dt.datetime.fromisoformat(end)
                         - dt.datetime.fromisoformat(start)).total_seconds())
    except (TypeError, ValueError):
        return None


class StageDurations:
    """Histogram state per stage, fed with stage events in id order."""

    def __init__(self) -> None:
        self.cursor = 0
        self.started: dict[int, str] = {}
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.lock = threading.Lock()

    def feed(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.cursor = max(self.cursor, e["id"])
            run, state, stage = e.get("run"), e.get("state"), e.get("stage") or "unknown"
            if state == "running":
                self.started[run] = e["at"]
                continue
            if state not in ("done", "failed", "skipped", "cancelled", "pending"):
                continue
            start = self.started.pop(run, None)
            if state == "failed":
                self.failures[stage] = self.failures.get(stage, 0) + 1
            if state in ("done", "failed") and start is not None:
                seconds = _seconds(start, e["at"])
                if seconds is None:
                    continue
                counts = self.buckets.setdefault(stage, [0] * (len(BUCKETS) + 1))
                for i, edge in enumerate(BUCKETS):
                    if seconds <= edge:
                        counts[i] += 1
                counts[-1] += 1
                self.sums[stage] = self.sums.get(stage, 0.0) + seconds


class NodeCollector(Collector):
    """Everything /metrics shows; ``book()`` gives a CourseBook or None (no index yet)."""

    def __init__(self, cfg: Config, book: Callable[[], Any], scp: Any = None):
        self.cfg, self.book, self.scp = cfg, book, scp
        self.durations = StageDurations()

    def collect(self):
        book = self.book()
        free = shutil.disk_usage(self.cfg.storage_root if self.cfg.storage_root.exists()
                                 else self.cfg.storage_root.parent).free
        g = GaugeMetricFamily("rtnode_storage_free_bytes", "Free space on the storage "
                              "filesystem", value=free)
        yield g
        yield GaugeMetricFamily("rtnode_storage_min_free_bytes", "Below this, stores are "
                                "refused (storage.min_free_gb)",
                                value=self.cfg.storage.min_free_gb * 1024**3)
        if self.scp is not None:
            server = getattr(self.scp, "ae", None)
            active = len(server.active_associations) if server is not None else 0
            yield GaugeMetricFamily("rtnode_associations_active", "Open DICOM associations",
                                    value=active)
        if book is None:
            return
        index = book.index
        events = index.event_counts()
        for kind, what in (("received", "Instances stored (new SOP Instance UIDs)"),
                           ("duplicate", "Identical resends acknowledged, nothing stored"),
                           ("replaced", "Instances replaced by different bytes")):
            yield CounterMetricFamily(f"rtnode_instances_{kind}", what,
                                      value=events.get(kind, 0))
        rejected = CounterMetricFamily("rtnode_instances_rejected", "Instances refused, by "
                                       "the DICOM status answered", labels=["status"])
        by_status: dict[str, int] = {}
        for row in book.event_counts_by("rejected"):
            label = status_label(row["status"])
            by_status[label] = by_status.get(label, 0) + row["n"]
        for label, n in sorted(by_status.items()):
            rejected.add_metric([label], n)
        yield rejected
        assoc = CounterMetricFamily("rtnode_associations_rejected", "Associations refused, "
                                    "by reason", labels=["reason"])
        by_reason: dict[str, int] = {}
        for row in book.event_counts_by("association_rejected"):
            label = association_reason(row["detail"])
            by_reason[label] = by_reason.get(label, 0) + row["n"]
        for label, n in sorted(by_reason.items()):
            assoc.add_metric([label], n)
        yield assoc

        depth = GaugeMetricFamily("rtnode_queue_depth", "Stage runs waiting or running, by "
                                  "queue and state", labels=["queue", "state"])
        paused = GaugeMetricFamily("rtnode_queue_paused", "1 while a queue is held",
                                   labels=["queue"])
        depths, held = book.queue_depths(), book.paused()
        for q in ("gpu", "cpu"):
            for state in ("pending", "queued", "running"):
                depth.add_metric([q, state], depths.get(q, {}).get(state, 0))
            paused.add_metric([q], 1 if q in held else 0)
        yield depth
        yield paused
        courses = GaugeMetricFamily("rtnode_courses", "Courses by state", labels=["state"])
        for state, n in book.course_counts().items():
            courses.add_metric([state], n)
        yield courses

        d = self.durations
        with d.lock:
            while True:
                batch = book.stage_events_after(d.cursor)
                d.feed(batch)
                if len(batch) < 10000:
                    break
            hist = HistogramMetricFamily("rtnode_stage_duration_seconds", "Run time of "
                                         "finished stage runs (done or failed), by stage",
                                         labels=["stage"])
            for stage, counts in sorted(d.buckets.items()):
                edges = [(repr(float(b)), counts[i]) for i, b in enumerate(BUCKETS)]
                hist.add_metric([stage], edges + [("+Inf", counts[-1])], d.sums[stage])
            failures = CounterMetricFamily("rtnode_stage_failures", "Stage runs that failed, "
                                           "by stage", labels=["stage"])
            for stage, n in sorted(d.failures.items()):
                failures.add_metric([stage], n)
        yield hist
        yield failures


def health(cfg: Config, book: Any, scp: Any = None) -> tuple[bool, dict[str, Any]]:
    """/healthz: listener, index, queues (a live consumer per queue that has slots), disk."""
    from rtnode.node_info import node_is_up, pid_alive, read_node_info

    checks: dict[str, Any] = {}
    if scp is not None:
        up = getattr(scp, "_server", None) is not None
        checks["listener"] = {"ok": up, "ae_title": cfg.dicom.ae_title, "port": scp.port}
    else:
        info = read_node_info(cfg.storage_root)
        checks["listener"] = {"ok": node_is_up(info), "detail": "from node.json"}
    try:
        if book is None:
            raise RuntimeError("no index yet")
        book.index.last_received()
        checks["index"] = {"ok": True}
    except Exception as exc:  # any failure to read is an unhealthy index
        checks["index"] = {"ok": False, "detail": str(exc)}
    info = read_node_info(cfg.storage_root)
    workers = info.workers if info else []
    expected = {"cpu": cfg.workers.cpu_budget(), "gpu": len(cfg.gpu_devices())}
    held = book.paused() if checks["index"]["ok"] else set()
    queues = {}
    for q, slots in expected.items():
        alive = sum(1 for w in workers if w.get("queue") == q and w.get("pid")
                    and pid_alive(w["pid"]))
        queues[q] = {"ok": slots == 0 or alive > 0, "consumers_alive": alive,
                     "slots": slots, "paused": q in held}
    checks["queues"] = {"ok": all(v["ok"] for v in queues.values()), **queues}
    root = cfg.storage_root if cfg.storage_root.exists() else cfg.storage_root.parent
    free_gb = shutil.disk_usage(root).free / 1024**3
    checks["disk"] = {"ok": free_gb >= cfg.storage.min_free_gb, "free_gb": round(free_gb, 2),
                      "min_free_gb": cfg.storage.min_free_gb}
    return all(c["ok"] for c in checks.values()), checks
