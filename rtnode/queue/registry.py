"""The worker registry: every queue consumer, on this host or another, with its slots and a
heartbeat, in the index's ``workers`` table.

Why in the index: it is the one thing every host already shares, and the scheduler needs the
registry and the stage runs in the same place. Capacity per queue is the sum of the slots of
live workers (heartbeat younger than ``workers.heartbeat_timeout``), so one more
``rtnode worker`` anywhere is one more run dispatched at once. A worker whose heartbeat stops
(host down, kill -9, network cut) has its runs given back — by whichever process notices first:
the scheduler on the serving node, for any host.

Clocks: heartbeats are wall-clock UTC written by each host; keep the hosts on NTP.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from rtnode import __version__
from rtnode.courses.book import FAILED, PENDING, RUNNING, CourseBook
from rtnode.node_info import HOST, pid_alive
from rtnode.store.index import Index, seconds_since, utc_ago, utc_now

log = logging.getLogger("rtnode.workers")

#: a run whose worker died is retried this many times before it fails
MAX_ATTEMPTS = 3
#: registry rows silent for this long are forgotten (after their runs were given back)
FORGET_AFTER_S = 3600.0
#: a run's task process is killed this long past the run's own timeout (hung in native code,
#: where the stage's own deadline cannot reach)
WATCHDOG_GRACE_S = 30.0
#: the environment variable that tells a consumer's task processes which worker they belong to
WORKER_ID_ENV = "RTNODE_WORKER_ID"


def run_timeout(run: dict[str, Any], config) -> float:
    """The seconds a run may take: its stage's timeout (a part's: scaled by the stage's
    ``part_timeout``), else stages.default_timeout. The one rule for every watchdog."""
    from rtnode.stages.base import REGISTRY, stage_timeout

    stage = REGISTRY.get(run["stage"])
    if stage is None:
        return config.stages.default_timeout
    return stage_timeout(stage, config, run.get("part") or "")


def worker_id(host: str, pid: int, queue: str) -> str:
    return f"{host}:{pid}:{queue}"


def release_run(book: CourseBook, run: dict[str, Any], why: str) -> bool:
    """A running run whose worker is gone: back to pending, or failed after MAX_ATTEMPTS tries
    (the same rule wherever the death is noticed)."""
    if run["attempts"] >= MAX_ATTEMPTS:
        changed = book.transition(run["id"], FAILED, expect=[RUNNING],
                                  if_token=run["token"],
                                  reason=f"{why} ({run['attempts']} tries)")
    else:
        changed = book.transition(run["id"], PENDING, expect=[RUNNING], if_token=run["token"],
                                  reason=f"{why}; retrying", token="", worker_pid=None,
                                  worker_id="")
    if changed:
        log.warning("course %s r%s %s%s: %s", run["course_fk"], run["revision"], run["stage"],
                    f" [{run['part']}]" if run["part"] else "", why)
    return changed


class Registry:
    def __init__(self, index: Index, heartbeat_timeout: float):
        self.index = index
        self.timeout = heartbeat_timeout

    # -- a worker about itself -----------------------------------------------------------------

    def register(self, wid: str, *, host: str, pid: int, queue: str, slots: int,
                 device: str = "") -> None:
        now = utc_now()
        with self.index.transaction() as c:
            c.execute("INSERT INTO workers(id, host, pid, queue, slots, device, version,"
                      " started_at, heartbeat_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id)"
                      " DO UPDATE SET slots=excluded.slots, device=excluded.device,"
                      " heartbeat_at=excluded.heartbeat_at",
                      (wid, host, pid, queue, slots, device or "", __version__, now, now))

    def beat(self, wid: str) -> bool:
        """Refresh the heartbeat; False when the row is gone (forgotten as dead: re-register)."""
        with self.index.transaction() as c:
            return c.execute("UPDATE workers SET heartbeat_at=? WHERE id=?",
                             (utc_now(), wid)).rowcount == 1

    def unregister(self, wid: str) -> None:
        with self.index.transaction() as c:
            c.execute("DELETE FROM workers WHERE id=?", (wid,))

    def release_dead_tasks(self, wid: str, config=None) -> int:
        """On the worker's own host: its runs whose task process died (the consumer lives on
        and Huey restarts the process) go back to pending; with ``config``, a run far past its
        timeout has its task process killed and fails with that reason (the watchdog the
        serving node keeps for its own host, here for every host)."""
        book = CourseBook(self.index)
        n = 0
        for run in self.index.query("SELECT * FROM stage_runs WHERE state=? AND worker_id=?",
                                    (RUNNING, wid)):
            run = dict(run)
            pid = run["worker_pid"]
            if pid and not pid_alive(pid):
                n += release_run(book, run, f"worker process {pid} died")
            elif pid and config is not None:
                limit = run_timeout(run, config)
                age = seconds_since(run["started_at"])
                if age is not None and age > limit + WATCHDOG_GRACE_S:
                    log.error("course %s %s: running %.0f s, past its timeout; killing task "
                              "process %s", run["course_fk"], run["stage"], age, pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    book.transition(run["id"], FAILED, expect=[RUNNING], if_token=run["token"],
                                    reason=f"timed out after {limit:g} s (worker killed)")
        return n

    # -- the scheduler's view ------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        """Every registered worker, with ``live`` and ``age_s`` (seconds since its heartbeat)."""
        out = []
        for row in self.index.query("SELECT * FROM workers ORDER BY queue, host, pid"):
            w = dict(row)
            w["age_s"] = round(seconds_since(w["heartbeat_at"]) or 0.0, 1)
            w["live"] = w["age_s"] < self.timeout
            out.append(w)
        return out

    def capacity(self) -> dict[str, int]:
        """Slots per queue over the live workers."""
        rows = self.index.query("SELECT queue, SUM(slots) FROM workers WHERE heartbeat_at >= ?"
                                " GROUP BY queue", (utc_ago(self.timeout),))
        return {r[0]: int(r[1] or 0) for r in rows}

    def live_ids(self) -> set[str]:
        return {r[0] for r in self.index.query("SELECT id FROM workers WHERE heartbeat_at >= ?",
                                               (utc_ago(self.timeout),))}

    def release_orphans(self, book: CourseBook) -> int:
        """Running runs whose registered worker is silent or gone, on any host."""
        live = self.live_ids()
        n = 0
        for run in self.index.query("SELECT * FROM stage_runs WHERE state=? AND worker_id != ''",
                                    (RUNNING,)):
            if run["worker_id"] not in live:
                n += release_run(book, dict(run), f"worker {run['worker_id']} is gone "
                                                  "(no live heartbeat)")
        return n

    def forget_dead(self) -> int:
        """Drop rows of this host's consumers that no longer exist, and rows silent for long."""
        gone = [r["id"] for r in self.index.query("SELECT id, pid FROM workers WHERE host=?",
                                                  (HOST,))
                if r["pid"] != os.getpid() and not pid_alive(r["pid"])]
        with self.index.transaction() as c:
            for wid in gone:
                c.execute("DELETE FROM workers WHERE id=?", (wid,))
            n = c.execute("DELETE FROM workers WHERE heartbeat_at < ?",
                          (utc_ago(FORGET_AFTER_S),)).rowcount
        return len(gone) + n
