"""Deciding which pending stage run goes to a worker next.

Runs wait as 'pending' in the index, not in Huey: the cpu queue gets at most one task more
than it has running per worker (``QUEUE_AHEAD``; none on the gpu queue), so a worker that
finishes takes its next task without a round trip through the node, and whatever became more
important meanwhile is at most one task behind. The node's pipeline thread calls ``tick`` as soon as a worker reports a finished run
(``queue/wake.py``). Order: priority band (clinical 1, cohort 0, plus one band per
``courses.aging_seconds`` waited, so nothing starves), then a fair share per calling AE (the
sender with the fewest runs on the workers goes next: ``fair_share``), then smaller courses
first, then first come. A run is ready when the stages it comes after are done (or reused) and
the stages it merely uses have finished; when a stage it needs failed or was skipped, it is
skipped with that reason.
Capacity per queue is the sum of the slots of live registered workers, on every host
(queue/registry.py). A run whose worker died — a dead local process, or a worker on any host
whose heartbeat stopped — goes back to pending; a run far past its timeout has its worker killed.
A run becomes 'queued' only once its message is in the broker; a broker that is down leaves it
pending (logged once, dispatched again when the broker is back), and a queued run whose message
was lost (not claimed within ``queue.claim_timeout`` while a worker of its queue was free) goes
back to pending.
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
from rtnode.queue.registry import (  # noqa: F401
    MAX_ATTEMPTS,
    WATCHDOG_GRACE_S,
    Registry,
    release_run,
    run_timeout,
)
from rtnode.stages.plan import decode_after
from rtnode.store.index import Index, seconds_since, utc_ago, utc_now

log = logging.getLogger("rtnode.scheduler")

#: runs handed to Huey ahead of each worker (beyond the one it is running), per queue: cpu
#: tasks are seconds long, so the hand-over saved matters; gpu tasks (segmentation) take
#: minutes, so a clinical course arriving meanwhile must not wait behind a queued cohort task
QUEUE_AHEAD = {"cpu": 1, "gpu": 0}


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
        #: slots per queue: refreshed from the worker registry every tick (the argument is the
        #: node's own budget, used only until the first tick)
        self.capacity = capacity
        self.registry = Registry(index, config.workers.heartbeat_timeout)
        self._broker_down: dict[str, str] = {}

    # -- start-up ------------------------------------------------------------------------------

    def recover(self) -> int:
        """After a restart nothing is queued or running: empty the queues and put every such
        run back to pending, so each course resumes where it stood."""
        for queue, huey in self.hueys.items():
            try:
                huey.flush()
            except Exception as exc:  # a broker that is down: the claim bound catches up
                self._note_broker(queue, exc)
        self.registry.forget_dead()
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
        capacity = self.registry.capacity()
        if capacity != self.capacity:
            log.info("capacity from registered workers: %s", ", ".join(
                f"{q} {n} slot(s)" for q, n in sorted(capacity.items())) or "none yet")
        self.capacity = capacity
        sent = self._dispatch()
        self._update_courses()
        return sent

    def _reap(self) -> None:
        """Runs whose worker is gone go back to pending (or fail): a dead process on this host,
        a registered worker on any host whose heartbeat stopped; queued runs whose message was
        never claimed go back to pending."""
        for run in self._rows("SELECT * FROM stage_runs WHERE state=? AND worker_host=?",
                              (RUNNING, HOST)):
            pid = run["worker_pid"]
            if pid and not pid_alive(pid):
                release_run(self.book, run, f"worker {pid} died")
            elif pid and run["started_at"]:
                self._watchdog(run)
        self.registry.forget_dead()
        self.registry.release_orphans(self.book)
        bound = self.config.queue.claim_timeout
        running = {q: n for q, n in self.index.query(
            "SELECT queue, COUNT(*) FROM stage_runs WHERE state=? GROUP BY queue", (RUNNING,))}
        for run in self._rows("SELECT id, queue, token FROM stage_runs WHERE state=?"
                              " AND queued_at < ?", (QUEUED, utc_ago(bound))):
            if running.get(run["queue"], 0) >= self.capacity.get(run["queue"], 0):
                continue  # queued ahead behind busy workers, not lost
            if self.book.transition(run["id"], PENDING, expect=[QUEUED], if_token=run["token"],
                                    reason=f"not claimed within {bound:g} s (message lost?);"
                                           " dispatching again", token=""):
                log.warning("run %s: its message was not claimed within %g s; back to pending",
                            run["id"], bound)

    def _watchdog(self, run: dict[str, Any]) -> None:
        limit = run_timeout(run, self.config) + WATCHDOG_GRACE_S
        age = seconds_since(run["started_at"])
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
            "SELECT r.*, c.tag, c.cancelled, c.calling_ae FROM stage_runs r"
            " JOIN courses c ON r.course_fk = c.id"
            " WHERE r.state=? AND r.queue=? AND c.cancelled=0", (PENDING, queue))
        if not rows:
            return []
        for run in rows:  # the band in Python: no engine's date functions in the scheduler
            run["band"] = run["priority"] + int((seconds_since(run["pending_at"]) or 0.0) / aging)
        rows.sort(key=lambda r: (-r["band"], r["size"], r["pending_at"], r["id"]))
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
            free = self.capacity.get(queue, 0) * (1 + QUEUE_AHEAD.get(queue, 0)) - busy
            if free <= 0:
                continue
            for run in self._ready(queue, free):
                outcome = self._send(queue, huey, run)
                if outcome is None:
                    break  # the broker is down: the rest wait as pending too
                sent += outcome
        return sent

    def _send(self, queue: str, huey: Huey, run: dict[str, Any]) -> int | None:
        """Enqueue first, then mark queued: the run carries its token while still pending (a
        worker may claim it at once), and becomes 'queued' only once the broker took the
        message. A broker that refuses leaves the run pending, untouched. Returns 1 when sent,
        0 when the run was no longer pending, None when the broker refused."""
        token = uuid.uuid4().hex
        if not self.book.arm(run["id"], token):
            return 0  # no longer pending (cancelled, skipped): nothing to send
        try:
            huey.run_stage(run["id"], token)
        except Exception as exc:
            self.book.arm(run["id"], "", if_token=token)
            self._note_broker(queue, exc)
            return None
        if queue in self._broker_down:
            log.warning("%s queue: the broker is reachable again; dispatching", queue)
            del self._broker_down[queue]
        self.book.transition(run["id"], QUEUED, expect=[PENDING], if_token=token)
        return 1

    def _note_broker(self, queue: str, exc: Exception) -> None:
        """Log a broker outage once (not every tick); receiving goes on regardless."""
        text = f"{type(exc).__name__}: {exc}"
        if queue not in self._broker_down:
            log.error("%s queue: cannot reach the queue broker (%s); runs stay pending and "
                      "receiving goes on", queue, text)
        self._broker_down[queue] = text

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
