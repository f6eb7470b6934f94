"""Deciding which pending stage run goes to a worker next.

Runs wait as 'pending' in the index, not in Huey: a queue gets at most one task more than it has
running per worker (``QUEUE_AHEAD``), so a worker that finishes takes its next task without a
round trip through the node, and whatever became more important meanwhile is at most one task
behind. The node's pipeline thread calls ``tick`` as soon as a worker reports a finished run
(``queue/wake.py``). Order: priority band (clinical 1, cohort 0, plus one band per
``courses.aging_seconds`` waited, so nothing starves), then a fair share per calling AE (the
sender with the fewest runs on the workers goes next: ``fair_share``), then smaller courses
first, then first come. A run is ready when the stages it comes after are done (or reused) and
the stages it merely uses have finished; when a stage it needs failed or was skipped, it is
skipped with that reason. Runs whose worker died go back to pending; a run far past its timeout
has its worker killed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import uuid
from typing import Any

from huey import Huey

from rtnode.config import Config
from rtnode.courses.book import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    SKIPPED,
    CourseBook,
)
from rtnode.node_info import HOST, pid_alive
from rtnode.stages.base import REGISTRY, stage_timeout
from rtnode.stages.plan import decode_after
from rtnode.store.index import Index, utc_now

log = logging.getLogger("rtnode.scheduler")

#: a run whose worker died is retried this many times before it fails
MAX_ATTEMPTS = 3
#: runs handed to Huey ahead of each worker (beyond the one it is running)
QUEUE_AHEAD = 1
#: the watchdog kills a worker this long past its run's own timeout
WATCHDOG_GRACE_S = 30.0


def fair_share(ready: list[dict[str, Any]], active: dict[str, int],
               limit: int) -> list[dict[str, Any]]:
    """Pick up to ``limit`` runs from ``ready`` (already in priority order: band, then smaller
    courses, then first come) so that no sender starves the others.

    The highest band goes first, whoever sent it. Within it, the next run goes to the calling
    AE with the fewest runs queued or running on this queue (counting those picked now), and
    that AE's own best run is taken. So 180 one-slice courses from one sender share the
    workers with a real course from another instead of all going first for being small;
    within one sender, smaller courses still go first, and aging lifts whatever waits."""
    heads: dict[str, list[dict[str, Any]]] = {}
    for run in ready:
        heads.setdefault(run.get("calling_ae") or "", []).append(run)
    load = {ae: active.get(ae, 0) for ae in heads}
    order = {id(run): i for i, run in enumerate(ready)}
    picked: list[dict[str, Any]] = []
    while heads and len(picked) < limit:
        top = max(runs[0]["band"] for runs in heads.values())
        ae = min((ae for ae, runs in heads.items() if runs[0]["band"] == top),
                 key=lambda a: (load[a], order[id(heads[a][0])]))
        picked.append(heads[ae].pop(0))
        load[ae] += 1
        if not heads[ae]:
            del heads[ae]
    return picked


def _finished(run: dict[str, Any]) -> bool:
    """Done, or skipped because the previous revision's outputs are reused."""
    return run["state"] == DONE or (run["state"] == SKIPPED and run["reused_revision"] is not None)


class Scheduler:
    def __init__(self, config: Config, index: Index, hueys: dict[str, Huey],
                 capacity: dict[str, int]):
        self.config = config
        self.index = index
        self.book = CourseBook(index)
        self.hueys = hueys
        self.capacity = capacity

    # -- start-up ------------------------------------------------------------------------------

    def recover(self) -> int:
        """After a restart nothing is queued or running: empty the queues and put every such
        run back to pending, so each course resumes where it stood."""
        for huey in self.hueys.values():
            huey.flush()
        now = utc_now()
        with self.index.transaction() as c:
            n = c.execute("UPDATE stage_runs SET state=?, reason='requeued after restart',"
                          " token='', worker_pid=NULL, pending_at=? WHERE state IN (?,?)",
                          (PENDING, now, QUEUED, RUNNING)).rowcount
        if n:
            log.warning("%d stage run(s) interrupted by the last stop were requeued", n)
        return n

    # -- one tick ------------------------------------------------------------------------------

    def tick(self) -> int:
        self._reap()
        self._resolve()
        sent = self._dispatch()
        self._update_courses()
        return sent

    def _reap(self) -> None:
        """Running runs whose worker process is gone go back to pending (or fail)."""
        for run in self._rows("SELECT * FROM stage_runs WHERE state=? AND worker_host=?",
                              (RUNNING, HOST)):
            pid = run["worker_pid"]
            if pid and not pid_alive(pid):
                if run["attempts"] >= MAX_ATTEMPTS:
                    self.book.transition(run["id"], FAILED, expect=[RUNNING],
                                         reason=f"worker died {run['attempts']} times")
                else:
                    self.book.transition(run["id"], PENDING, expect=[RUNNING],
                                         reason=f"worker {pid} died; retrying", token="",
                                         worker_pid=None)
                log.warning("course %s %s: worker %s died", run["course_fk"], run["stage"], pid)
            elif pid and run["started_at"]:
                self._watchdog(run)

    def _watchdog(self, run: dict[str, Any]) -> None:
        stage = REGISTRY.get(run["stage"])
        limit = (stage_timeout(stage, self.config, run["part"]) if stage else
                 self.config.stages.default_timeout) + WATCHDOG_GRACE_S
        age = self.index.query("SELECT (julianday('now') - julianday(?)) * 86400",
                               (run["started_at"],))[0][0]
        if age is not None and age > limit:
            log.error("course %s %s: running %.0f s, past its timeout; killing worker %s",
                      run["course_fk"], run["stage"], age, run["worker_pid"])
            try:
                os.kill(run["worker_pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.book.transition(run["id"], FAILED, expect=[RUNNING],
                                 reason=f"timed out after {limit - WATCHDOG_GRACE_S:g} s "
                                        "(worker killed)")

    def _resolve(self) -> None:
        """Skip pending runs whose upstream failed or was skipped for lack of input."""
        waiting = self._rows("SELECT * FROM stage_runs WHERE state=? AND after != '[]'",
                             (PENDING,))
        if not waiting:
            return
        parents: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
        for up in self._rows(
                "SELECT course_fk, revision, stage, state, reason, reused_revision"
                " FROM stage_runs WHERE part='' AND course_fk IN"
                " (SELECT course_fk FROM stage_runs WHERE state=? AND after != '[]')",
                (PENDING,)):
            parents.setdefault((up["course_fk"], up["revision"]), {})[up["stage"]] = up
        changed = True
        while changed:  # a skip propagates down the whole chain in one tick
            changed = False
            for run in list(waiting):
                after, _ = decode_after(json.loads(run["after"]))
                ups = parents.get((run["course_fk"], run["revision"]), {})
                for name in after:
                    up = ups.get(name)
                    if up is None:
                        continue
                    blocked = up["state"] in (FAILED, CANCELLED) or (
                        up["state"] == SKIPPED and up["reused_revision"] is None)
                    if blocked:
                        self.book.transition(run["id"], SKIPPED, expect=[PENDING],
                                             reason=f"upstream {name} {up['state']}")
                        waiting.remove(run)
                        if not run["part"]:
                            ups[run["stage"]] = {**run, "state": SKIPPED,
                                                 "reused_revision": None}
                        changed = True
                        break

    def _ready(self, queue: str, limit: int) -> list[dict[str, Any]]:
        """The best pending runs of a queue whose upstream stages are all finished, at most
        ``limit``, shared fairly between senders (see ``fair_share``)."""
        aging = self.config.courses.aging_seconds
        rows = self._rows(
            "SELECT r.*, c.tag, c.cancelled, c.calling_ae,"
            " r.priority + CAST((julianday('now') - julianday(r.pending_at)) * 86400 / ?"
            "   AS INTEGER) AS band"
            " FROM stage_runs r JOIN courses c ON r.course_fk = c.id"
            " WHERE r.state=? AND r.queue=? AND c.cancelled=0"
            " ORDER BY band DESC, r.size ASC, r.pending_at ASC, r.id ASC",
            (aging, PENDING, queue))
        if not rows:
            return []
        # every run of the courses concerned, in one query: readiness is then judged in memory
        # instead of with two queries per pending run
        revisions: dict[tuple[int, int], list[dict[str, Any]]] = {}
        wanted = {(r["course_fk"], r["revision"]) for r in rows}
        for other in self._rows(
                "SELECT course_fk, revision, stage, part, state, reused_revision FROM stage_runs"
                " WHERE course_fk IN (SELECT course_fk FROM stage_runs WHERE state=? AND queue=?)",
                (PENDING, queue)):
            key = (other["course_fk"], other["revision"])
            if key in wanted:
                revisions.setdefault(key, []).append(other)
        ready = [run for run in rows
                 if self._is_ready(run, revisions.get((run["course_fk"], run["revision"]), []))]
        active = {ae: n for ae, n in self.index.query(
            "SELECT c.calling_ae, COUNT(*) FROM stage_runs r JOIN courses c ON r.course_fk = c.id"
            " WHERE r.queue=? AND r.state IN (?,?) GROUP BY c.calling_ae",
            (queue, QUEUED, RUNNING))}
        return fair_share(ready, active, limit)

    @staticmethod
    def _is_ready(run: dict[str, Any], siblings: list[dict[str, Any]]) -> bool:
        if not run["part"] and any(
                s["stage"] == run["stage"] and s["part"] and s["state"] in (PENDING, QUEUED, RUNNING)
                for s in siblings):
            return False  # a split parent merges only once every part has finished
        required, optional = decode_after(json.loads(run["after"]))
        if not (required or optional):
            return True
        ups = {s["stage"]: s for s in siblings if not s["part"]}
        if not all(a not in ups or _finished(ups[a]) for a in required):
            return False
        return not any(a in ups and ups[a]["state"] in (PENDING, QUEUED, RUNNING)
                       for a in optional)

    def _dispatch(self) -> int:
        paused = self.book.paused()
        sent = 0
        for queue, huey in self.hueys.items():
            if queue in paused:
                continue
            busy = self.index.query("SELECT COUNT(*) FROM stage_runs WHERE queue=? AND state IN"
                                    " (?,?)", (queue, QUEUED, RUNNING))[0][0]
            # one run queued ahead per worker: a worker that finishes takes the next task
            # straight from its queue, without waiting for this thread
            free = self.capacity.get(queue, 0) * (1 + QUEUE_AHEAD) - busy
            if free <= 0:
                continue
            for run in self._ready(queue, free):
                token = uuid.uuid4().hex
                if self.book.transition(run["id"], QUEUED, expect=[PENDING], token=token):
                    huey.run_stage(run["id"], token)
                    sent += 1
        return sent

    def _update_courses(self) -> None:
        """running while any run of the latest revision is active; else failed or done."""
        for course in self.book.courses(states=["running"]):
            runs = self.book.runs(course["id"])
            states = {r["state"] for r in runs}
            if states & {PENDING, QUEUED, RUNNING}:
                continue
            self.book.set_state(course["id"], "failed" if FAILED in states else "done")

    def _rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.index.query(sql, args)]
