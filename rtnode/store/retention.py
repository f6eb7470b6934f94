"""Retention: what the node deletes by itself, on a schedule, by the config's ``retention:``.

Three rules, each off unless configured:

- ``received_after_days``: the received instances of a *done* clinical course go N days after
  its last stage finished; the course row, its outputs (RTSTRUCT, DVH, radiomics, QC) and the
  auto RTSTRUCT rtnode filed stay.
- ``cohort_after_days``: a cohort course (retrieved or imported with --cohort) that has finished
  — done, failed or cancelled — goes entirely M days after its last stage finished: instances,
  rows and outputs.
- disk pressure (``free_below_gb`` / ``max_stored_gb``): while free space is below the one or
  the DICOM held exceeds the other, the oldest eligible data goes first — cohort courses and the
  received instances of done clinical courses, by when they finished — until the condition
  clears or nothing eligible is left.

Never touched: a course that has not been processed (any state but done, or for cohorts any
non-final state), a course with a stage pending, queued or running, and instances that belong
to no course. Every deletion is a ``deleted`` event (by: retention); the last pass is kept in
``node_state`` for ``rtnode status``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rtnode.store.delete import DeleteRefused, Deleter
from rtnode.store.index import Index, utc_now

log = logging.getLogger("rtnode.retention")

LAST_KEY = "retention.last"
LAST_REMOVAL_KEY = "retention.last_removal"
GB = 1024**3


@dataclass(frozen=True)
class Candidate:
    """One unit retention may remove: a course's received instances, or a whole cohort course."""

    course_id: int
    tag: str
    finished_at: str
    whole: bool  # True: instances + rows + outputs (cohort); False: received instances only


def policy_active(settings) -> bool:
    return any(v is not None for v in (settings.received_after_days, settings.cohort_after_days,
                                       settings.free_below_gb, settings.max_stored_gb))


class Retention:
    """One pass of the policy over one storage root."""

    def __init__(self, settings, index: Index, storage_root: Path,
                 free_bytes: Callable[[], int] | None = None):
        self.settings = settings
        self.index = index
        self.root = Path(storage_root)
        self.deleter = Deleter(index, self.root)
        self.free_bytes = free_bytes or (lambda: shutil.disk_usage(self.root).free)

    # -- what is eligible ----------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Processed courses with no active stage run and instances still to remove, oldest
        finished first."""
        rows = self.index.query(
            "SELECT c.id, c.tag, c.state, MAX(r.finished_at) AS finished_at FROM courses c"
            " JOIN stage_runs r ON r.course_fk = c.id"
            " WHERE NOT EXISTS (SELECT 1 FROM stage_runs a WHERE a.course_fk = c.id"
            "   AND a.state IN ('pending', 'queued', 'running'))"
            " GROUP BY c.id, c.tag, c.state ORDER BY finished_at, c.id")
        out = []
        for r in rows:
            cohort = r["tag"] == "cohort"
            if r["state"] == "done" or (cohort and r["state"] in ("failed", "cancelled")):
                out.append(Candidate(r["id"], r["tag"], r["finished_at"] or "", whole=cohort))
        return out

    def _age_days(self, c: Candidate, now: dt.datetime) -> float:
        if not c.finished_at:
            return 0.0
        return (now - dt.datetime.fromisoformat(c.finished_at)).total_seconds() / 86400

    def _plan(self, c: Candidate):
        plan = self.deleter.plan_course(c.course_id, keep_outputs=not c.whole)
        return None if plan.empty else plan

    def stored_bytes(self) -> int:
        return int(self.index.query("SELECT COALESCE(SUM(size), 0) FROM instances")[0][0])

    def under_pressure(self) -> str:
        """Why the disk-pressure rule applies now ('' when it does not)."""
        s = self.settings
        if s.free_below_gb is not None and self.free_bytes() < s.free_below_gb * GB:
            return f"free space below retention.free_below_gb ({s.free_below_gb:g} GB)"
        if s.max_stored_gb is not None and self.stored_bytes() > s.max_stored_gb * GB:
            return f"DICOM held above retention.max_stored_gb ({s.max_stored_gb:g} GB)"
        return ""

    # -- one pass ------------------------------------------------------------------------------

    def run(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or dt.datetime.now(dt.timezone.utc)
        s = self.settings
        report: dict[str, Any] = {"at": utc_now(), "removed": [], "instances": 0, "bytes": 0,
                                  "pressure": "", "refused": []}
        done: set[int] = set()

        def remove(c: Candidate, why: str) -> None:
            plan = self._plan(c)
            if plan is None:
                return
            try:
                summary = self.deleter.execute(plan, by="retention")
            except DeleteRefused as exc:  # a stage started since we looked: next pass
                report["refused"].append({"course": c.course_id, "reason": str(exc)})
                return
            done.add(c.course_id)
            report["removed"].append({"course": c.course_id, "tag": c.tag, "rule": why,
                                      "instances": summary["instances"],
                                      "bytes": summary["bytes"], "outputs_kept": not c.whole})
            report["instances"] += summary["instances"]
            report["bytes"] += summary["bytes"]

        for c in self.candidates():
            age = self._age_days(c, now)
            if c.whole and s.cohort_after_days is not None and age >= s.cohort_after_days:
                remove(c, f"cohort_after_days={s.cohort_after_days:g}")
            elif (not c.whole and c.tag == "clinical" and s.received_after_days is not None
                  and age >= s.received_after_days):
                remove(c, f"received_after_days={s.received_after_days:g}")
        why = self.under_pressure()
        report["pressure"] = why
        if why:
            log.warning("retention: %s; removing the oldest eligible data first", why)
            for c in self.candidates():
                if not self.under_pressure():
                    break
                if c.course_id not in done:
                    remove(c, "disk pressure")
            if self.under_pressure():
                log.error("retention: still %s and nothing more is eligible (courses not yet "
                          "processed are never removed)", why)
        for r in report["removed"]:
            log.info("retention removed course %d (%s, %s): %d instance(s), %.1f MB%s",
                     r["course"], r["tag"], r["rule"], r["instances"], r["bytes"] / 1024**2,
                     ", outputs kept" if r["outputs_kept"] else ", with its outputs")
        self._remember(report)
        return report

    def _remember(self, report: dict[str, Any]) -> None:
        keys = [LAST_KEY] + ([LAST_REMOVAL_KEY] if report["removed"] else [])
        with self.index.transaction() as c:
            for key in keys:
                c.execute("DELETE FROM node_state WHERE key=?", (key,))
                c.execute("INSERT INTO node_state(key, value) VALUES (?, ?)",
                          (key, json.dumps(report)))


def last_report(index: Index, key: str = LAST_KEY) -> dict[str, Any] | None:
    rows = index.query("SELECT value FROM node_state WHERE key=?", (key,))
    return json.loads(rows[0][0]) if rows else None


def status(config, index: Index | None) -> dict[str, Any]:
    """The ``retention`` block of ``rtnode status``."""
    s = config.retention
    policy = {k: getattr(s, k) for k in ("received_after_days", "cohort_after_days",
                                         "free_below_gb", "max_stored_gb")}
    last = last_report(index) if index is not None else None
    removal = last_report(index, LAST_REMOVAL_KEY) if index is not None else None
    return {"active": policy_active(s), "policy": policy, "interval_seconds":
            s.interval_seconds, "last": last, "last_removal": removal}


class RetentionThread(threading.Thread):
    """Runs the policy every retention.interval_seconds inside the node; a failing pass is
    logged, not fatal. Also notices deletions made by other processes (``rtnode delete``) and
    forgets the index's cached hierarchy rows, which may name deleted series."""

    WATCH_S = 2.0

    def __init__(self, config, index: Index):
        super().__init__(name="rtnode-retention", daemon=True)
        self.config, self.index = config, index
        self.stop_event = threading.Event()
        self._seen_deleted = self._last_deleted()

    def _last_deleted(self) -> int:
        return int(self.index.query(
            "SELECT COALESCE(MAX(id), 0) FROM events WHERE kind='deleted'")[0][0])

    def _forget_hierarchy_if_deleted(self) -> None:
        newest = self._last_deleted()
        if newest != self._seen_deleted:
            self._seen_deleted = newest
            cache = getattr(self.index, "_hierarchy", None)
            if isinstance(cache, dict):
                cache.clear()

    def run(self) -> None:
        settings = self.config.retention
        active = policy_active(settings)
        if active:
            log.info("retention: %s, every %g s", ", ".join(
                f"{k}={getattr(settings, k)}" for k in ("received_after_days",
                                                        "cohort_after_days", "free_below_gb",
                                                        "max_stored_gb")
                if getattr(settings, k) is not None), settings.interval_seconds)
        retention = Retention(settings, self.index, self.config.storage_root)
        next_pass = time.monotonic() + min(settings.interval_seconds, 10.0)
        while not self.stop_event.is_set():
            try:
                if active and time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + settings.interval_seconds
                    retention.run()
                self._forget_hierarchy_if_deleted()
            except Exception:
                log.exception("retention pass failed; retrying at the next interval")
            self.stop_event.wait(min(self.WATCH_S, settings.interval_seconds))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)
