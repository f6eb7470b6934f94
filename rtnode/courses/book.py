"""Courses, revisions and stage runs in the index: every state a course or stage goes through.

The index is the single source of truth for pipeline state. Huey only carries "run this stage
run now" messages; whatever happens to a queue or a worker, the rows here say what is pending,
running, done or failed, and why — which is what makes restarts and ``rtnode requeue`` exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from rtnode.store.index import Index, utc_now

#: stage run states; the last four are final
PENDING, QUEUED, RUNNING = "pending", "queued", "running"
DONE, FAILED, SKIPPED, CANCELLED = "done", "failed", "skipped", "cancelled"
ACTIVE = (PENDING, QUEUED, RUNNING)
FINAL = (DONE, FAILED, SKIPPED, CANCELLED)

#: course states shown to people and scripts
COURSE_STATES = ("receiving", "waiting", "running", "done", "failed", "cancelled")


@dataclass(frozen=True)
class PlannedRun:
    stage: str
    queue: str
    state: str  # pending or skipped
    reason: str = ""
    after: tuple[str, ...] = ()
    fingerprint: str = ""
    reused_revision: int | None = None
    part: str = ""


class CourseBook:
    def __init__(self, index: Index):
        self.index = index

    # -- courses -------------------------------------------------------------------------------

    def save_course(self, *, patient_id: str, key: str, anchor_series_uid: str,
                    frame_of_reference_uid: str, state: str, tag: str, rule: str,
                    calling_ae: str, members: list[dict], verdict: dict,
                    first_received_at: str, last_received_at: str) -> int:
        now = utc_now()
        with self.index.transaction() as c:
            return c.execute(
                "INSERT INTO courses(patient_id, course_key, anchor_series_uid,"
                " frame_of_reference_uid, state, tag, rule, calling_ae, instance_count, members,"
                " verdict, first_received_at, last_received_at, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(patient_id, course_key)"
                " DO UPDATE SET anchor_series_uid=excluded.anchor_series_uid,"
                " frame_of_reference_uid=excluded.frame_of_reference_uid,"
                " state=CASE WHEN courses.cancelled != 0 THEN 'cancelled' ELSE excluded.state END,"
                " tag=excluded.tag, rule=excluded.rule, calling_ae=excluded.calling_ae,"
                " instance_count=excluded.instance_count, members=excluded.members,"
                " verdict=excluded.verdict, first_received_at=excluded.first_received_at,"
                " last_received_at=excluded.last_received_at, updated_at=excluded.updated_at"
                " RETURNING id",
                (patient_id, key, anchor_series_uid, frame_of_reference_uid, state, tag, rule,
                 calling_ae, len(members), json.dumps(members), json.dumps(verdict),
                 first_received_at, last_received_at, now, now)).fetchone()[0]

    def set_state(self, course_id: int, state: str) -> None:
        with self.index.transaction() as c:
            c.execute("UPDATE courses SET state=?, updated_at=? WHERE id=? AND state != ?",
                      (state, utc_now(), course_id, state))

    def drop_course(self, course_id: int) -> None:
        """Remove a course that never ran and no longer has members (its objects moved)."""
        with self.index.transaction() as c:
            c.execute("DELETE FROM courses WHERE id=? AND NOT EXISTS"
                      " (SELECT 1 FROM revisions WHERE course_fk=?)", (course_id, course_id))

    def courses(self, state: str | None = None, patient_id: str | None = None,
                states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM courses"
        where, args = [], []
        if state:
            where.append("state=?")
            args.append(state)
        if states:
            states = list(states)
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if patient_id is not None:
            where.append("patient_id=?")
            args.append(patient_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [dict(r) for r in self.index.query(sql + " ORDER BY id", tuple(args))]

    def course(self, course_id: int) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM courses WHERE id=?", (course_id,))
        return dict(rows[0]) if rows else None

    def cancel(self, course_id: int) -> int:
        """Cancel a course: nothing more is dispatched; returns how many runs were cancelled."""
        now = utc_now()
        with self.index.transaction() as c:
            c.execute("UPDATE courses SET cancelled=1, state='cancelled', updated_at=?"
                      " WHERE id=?", (now, course_id))
            return c.execute("UPDATE stage_runs SET state=?, reason='cancelled', finished_at=?"
                             " WHERE course_fk=? AND state IN (?,?)",
                             (CANCELLED, now, course_id, PENDING, QUEUED)).rowcount

    # -- revisions -----------------------------------------------------------------------------

    def latest_revision(self, course_id: int) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM revisions WHERE course_fk=? ORDER BY revision"
                                " DESC LIMIT 1", (course_id,))
        return dict(rows[0]) if rows else None

    def revision(self, course_id: int, revision: int) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM revisions WHERE course_fk=? AND revision=?",
                                (course_id, revision))
        return dict(rows[0]) if rows else None

    def create_revision(self, course_id: int, members: list[dict], verdict: dict,
                        rule: dict, runs: list[PlannedRun], priority: float, size: int) -> int:
        """A new revision with its planned stage runs, in one commit."""
        now = utc_now()
        with self.index.transaction() as c:
            rev = c.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM revisions"
                            " WHERE course_fk=?", (course_id,)).fetchone()[0]
            c.execute("INSERT INTO revisions(course_fk, revision, created_at, members, verdict,"
                      " rule, plan) VALUES (?,?,?,?,?,?,?)",
                      (course_id, rev, now, json.dumps(members), json.dumps(verdict),
                       rule.get("name", ""), json.dumps(rule)))
            for run in runs:
                final = run.state != PENDING
                c.execute(
                    "INSERT INTO stage_runs(course_fk, revision, stage, part, queue, state,"
                    " reason, after, fingerprint, priority, size, reused_revision, pending_at,"
                    " finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (course_id, rev, run.stage, run.part, run.queue, run.state, run.reason,
                     json.dumps(list(run.after)), run.fingerprint, priority, size,
                     run.reused_revision, now, now if final else ""))
            c.execute("UPDATE courses SET state='running', updated_at=? WHERE id=?"
                      " AND cancelled=0", (now, course_id))
        return rev

    # -- stage runs ----------------------------------------------------------------------------

    def runs(self, course_id: int, revision: int | None = None) -> list[dict[str, Any]]:
        if revision is None:
            latest = self.latest_revision(course_id)
            if latest is None:
                return []
            revision = latest["revision"]
        return [dict(r) for r in self.index.query(
            "SELECT * FROM stage_runs WHERE course_fk=? AND revision=? ORDER BY id",
            (course_id, revision))]

    def run(self, run_id: int) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM stage_runs WHERE id=?", (run_id,))
        return dict(rows[0]) if rows else None

    def transition(self, run_id: int, state: str, *, reason: str = "",
                   expect: Iterable[str] | None = None, if_token: str | None = None,
                   **fields: Any) -> bool:
        """Move a run to state (stamping the matching time column); False if it was not in
        one of ``expect`` or its dispatch token no longer matches (a stale task)."""
        now = utc_now()
        sets = {"state": state, "reason": reason, **fields}
        stamp = {PENDING: "pending_at", QUEUED: "queued_at", RUNNING: "started_at"}.get(
            state, "finished_at")
        sets[stamp] = now
        sql = f"UPDATE stage_runs SET {', '.join(f'{k}=?' for k in sets)} WHERE id=?"
        args: list[Any] = [*sets.values(), run_id]
        if expect is not None:
            expect = list(expect)
            sql += f" AND state IN ({','.join('?' * len(expect))})"
            args.extend(expect)
        if if_token is not None:
            sql += " AND token=?"
            args.append(if_token)
        with self.index.transaction() as c:
            changed = c.execute(sql, args).rowcount == 1
            if changed:
                c.execute("INSERT INTO events(at, kind, detail) VALUES (?, 'stage', ?)",
                          (now, json.dumps({"run": run_id, "state": state, "reason": reason})))
        return changed

    def arm(self, run_id: int, token: str, *, if_token: str | None = None) -> bool:
        """Give a pending run the token its message will carry (or take it back with ''),
        before the message is enqueued: a worker may claim a pending run holding its token,
        so the run is marked queued only once the broker took the message."""
        # queued_at = when the message went out, kept even if a worker claims the run before
        # the scheduler marks it queued
        sql = "UPDATE stage_runs SET token=?, queued_at=? WHERE id=? AND state=?"
        args: list[Any] = [token, utc_now() if token else "", run_id, PENDING]
        if if_token is not None:
            sql += " AND token=?"
            args.append(if_token)
        with self.index.transaction() as c:
            return c.execute(sql, args).rowcount == 1

    def requeue(self, course_id: int, stages: Iterable[str] | None = None,
                only_failed: bool = False) -> int:
        """Reset runs of the latest revision to pending: all, the given stages, or only the
        failed ones (a failed part also reopens its parent, which merges again)."""
        latest = self.latest_revision(course_id)
        if latest is None:
            return 0
        now = utc_now()
        where = "course_fk=? AND revision=? AND state NOT IN (?,?)"
        args: list[Any] = [course_id, latest["revision"], QUEUED, RUNNING]
        if stages is not None:
            stages = list(stages)
            where += f" AND stage IN ({','.join('?' * len(stages))})"
            args.extend(stages)
        if only_failed:
            where += (" AND (state='failed' OR (part='' AND EXISTS (SELECT 1 FROM stage_runs p"
                      " WHERE p.course_fk=stage_runs.course_fk AND p.revision=stage_runs.revision"
                      " AND p.stage=stage_runs.stage AND p.part!='' AND p.state='failed')))")
        with self.index.transaction() as c:
            n = c.execute(
                "UPDATE stage_runs SET state=?, reason='requeued', token='', worker_pid=NULL,"
                " worker_id='',"
                " reused_revision=NULL, pending_at=?, queued_at='', started_at='',"
                f" finished_at='', footprint='normal' WHERE {where}",
                [PENDING, now, *args]).rowcount
            c.execute("UPDATE courses SET state='running', cancelled=0, updated_at=?"
                      " WHERE id=?", (now, course_id))
        return n

    def parts_of(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(r) for r in self.index.query(
            "SELECT part, state, reason FROM stage_runs WHERE course_fk=? AND revision=?"
            " AND stage=? AND part != '' ORDER BY id",
            (run["course_fk"], run["revision"], run["stage"]))]

    def split(self, run: dict[str, Any], token: str, parts: list[str]) -> bool:
        """Fan a running parent run out into part runs; the parent waits (pending) to merge."""
        now = utc_now()
        with self.index.transaction() as c:
            moved = c.execute(
                "UPDATE stage_runs SET state=?, reason=?, token='', worker_pid=NULL,"
                " pending_at=? WHERE id=? AND state=? AND token=?",
                (PENDING, f"waiting for {len(parts)} part(s)", now, run["id"], RUNNING,
                 token)).rowcount
            if not moved:
                return False
            c.executemany(
                "INSERT INTO stage_runs(course_fk, revision, stage, part, queue, state, after,"
                " priority, size, pending_at) VALUES (?,?,?,?,?,?,'[]',?,?,?)"
                " ON CONFLICT(course_fk, revision, stage, part) DO NOTHING",
                [(run["course_fk"], run["revision"], run["stage"], p, run["queue"], PENDING,
                  run["priority"], run["size"], now) for p in parts])
        return True

    def paused(self) -> set[str]:
        return {r[0] for r in self.index.query("SELECT queue FROM queue_state WHERE paused=1")}

    def set_paused(self, queue: str, paused: bool) -> None:
        with self.index.transaction() as c:
            c.execute("INSERT INTO queue_state(queue, paused) VALUES (?,?) ON CONFLICT(queue)"
                      " DO UPDATE SET paused=excluded.paused", (queue, int(paused)))

    def queue_depths(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for q, state, n in self.index.query(
                "SELECT queue, state, COUNT(*) FROM stage_runs WHERE state IN (?,?,?)"
                " GROUP BY queue, state", ACTIVE):
            out.setdefault(q, {s: 0 for s in ACTIVE})[state] = n
        return out

    def course_counts(self) -> dict[str, int]:
        counts = {s: 0 for s in COURSE_STATES}
        for state, n in self.index.query("SELECT state, COUNT(*) FROM courses GROUP BY state"):
            counts[state] = n
        return counts

    # -- read-only queries for the CLI views, the web dashboard and /metrics ------------------
    # (kept together here so that an index backend other than SQLite has one place to adapt)

    def revisions_summary(self, course_id: int) -> list[dict[str, Any]]:
        """Every revision of a course: number, when, which rule, how many members."""
        return [{"revision": r["revision"], "created_at": r["created_at"], "rule": r["rule"],
                 "members": len(json.loads(r["members"]))}
                for r in self.index.query("SELECT revision, created_at, rule, members FROM"
                                          " revisions WHERE course_fk=? ORDER BY revision",
                                          (course_id,))]

    def failed_course_ids(self, since: str = "") -> list[int]:
        """Courses with a stage run that failed at or after ``since`` (ISO date; '' = ever)."""
        return [r[0] for r in self.index.query(
            "SELECT DISTINCT course_fk FROM stage_runs WHERE state='failed'"
            " AND finished_at >= ? ORDER BY course_fk", (since or "",))]

    def recent_failures(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest failed stage runs (any revision), with their course's patient."""
        return [dict(r) for r in self.index.query(
            "SELECT s.course_fk AS course_id, c.patient_id, s.revision, s.stage, s.part,"
            " s.queue, s.reason, s.attempts, s.finished_at FROM stage_runs s"
            " JOIN courses c ON c.id = s.course_fk WHERE s.state='failed'"
            " ORDER BY s.finished_at DESC LIMIT ?", (limit,))]

    def event_counts_by(self, kind: str) -> list[dict[str, Any]]:
        """Events of one kind counted by (status, detail): the reasons of rejections."""
        return [dict(r) for r in self.index.query(
            "SELECT status, detail, COUNT(*) AS n FROM events WHERE kind=?"
            " GROUP BY status, detail", (kind,))]

    def stage_events_after(self, after_id: int, limit: int = 10000) -> list[dict[str, Any]]:
        """Stage transitions (kind 'stage') with id > after_id, oldest first, each with its
        run's ``run``, ``state``, ``stage`` and ``queue``: what /metrics turns into durations
        and failure counts."""
        events = [dict(r) for r in self.index.query(
            "SELECT id, at, detail FROM events WHERE kind='stage' AND id > ? ORDER BY id"
            " LIMIT ?", (after_id, limit))]
        for e in events:
            e.update(json.loads(e.pop("detail") or "{}"))
        ids = sorted({e["run"] for e in events if isinstance(e.get("run"), int)})
        names: dict[int, tuple[str, str]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            names.update({r[0]: (r[1], r[2]) for r in self.index.query(
                f"SELECT id, stage, queue FROM stage_runs WHERE id IN"
                f" ({','.join('?' * len(chunk))})", tuple(chunk))})
        for e in events:
            e["stage"], e["queue"] = names.get(e.get("run"), ("", ""))
        return events
