"""Turning arrivals into ready course revisions, incrementally.

Each tick regroups only the patients that received something since the last tick (instance
rows added or replaced since then). For each it
regroups the instances into courses, judges completeness, picks the rule, and when a course is
quiet and complete — or quiet past max-wait — snapshots its members as a new revision with
planned stage runs. Courses still waiting are not regrouped on every tick: what this process last
saw of them (arrival times, completeness) says when their quiet period or max-wait runs out, and
only then is the patient regrouped from the index to decide. A course row is written only when
something in it changed, and the cursor only when it moved, so an idle or unchanged node commits
nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from rtnode.config import Config
from rtnode.courses.book import CourseBook
from rtnode.courses.completeness import judge
from rtnode.courses.grouping import COURSE_MODALITIES, CourseDraft, group_courses, member_from_row
from rtnode.courses.rules import CourseFacts, RuleSet
from rtnode.stages.base import Stage
from rtnode.stages.plan import plan_runs
from rtnode.store.index import Index

log = logging.getLogger("rtnode.courses")

CURSOR_KEY = "detector.cursor"
TAG_BAND = {"clinical": 1, "cohort": 0}
#: after a restart, instances are looked for this far behind the stored cursor: an instance's
#: arrival time is taken before its transaction waits for the index's write lock (at most the
#: 60 s busy timeout), so one can commit after a later one was already seen
LATE_COMMIT_S = 65.0
#: course states whose timing the detector keeps watching
WATCHED = ("receiving", "waiting")


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts)


def member_signature(members: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((m["sop_instance_uid"], m["received_at"]) for m in members)


def signature_digest(members: list[dict[str, Any]]) -> str:
    return hashlib.sha1(json.dumps(member_signature(members)).encode()).hexdigest()


@dataclass
class Seen:
    """What this process last decided and wrote for one course."""

    course_id: int
    state: str
    written: tuple  # the course row's values as last written (members by digest)
    last_received_at: str
    quiet_for: float
    complete: bool

    def due_state(self, now: dt.datetime, max_wait: float) -> str:
        """The state the clock alone would move this course to now."""
        if self.state not in WATCHED:
            return self.state
        idle = (now - _parse(self.last_received_at)).total_seconds()
        if idle < self.quiet_for:
            return "receiving"
        return "running" if self.complete or idle >= max_wait else "waiting"

    def due_at(self, max_wait: float) -> dt.datetime | None:
        if self.state not in WATCHED:
            return None
        wait = self.quiet_for if self.state == "receiving" else max_wait
        return _parse(self.last_received_at) + dt.timedelta(seconds=wait)


class Detector:
    def __init__(self, config: Config, index: Index, rules: RuleSet,
                 registry: dict[str, Stage]):
        self.config = config
        self.index = index
        self.book = CourseBook(index)
        self.rules = rules
        self.registry = registry
        self._max_id: int | None = None  # the highest instance row id looked at
        self._seen: dict[str, dict[str, Seen]] = {}  # patient -> course key -> last decision
        self._due: dict[tuple[str, str], dt.datetime] = {}  # watched courses' next deadline
        self._revision_digest: dict[int, tuple[int, str]] = {}  # course -> (revision, digest)

    # -- what to look at -----------------------------------------------------------------------

    def _cursor(self) -> str:
        rows = self.index.query("SELECT value FROM node_state WHERE key=?", (CURSOR_KEY,))
        return rows[0][0] if rows else ""

    def _set_cursor(self, value: str) -> None:
        with self.index.transaction() as c:
            c.execute("INSERT INTO node_state(key, value) VALUES (?,?) ON CONFLICT(key)"
                      " DO UPDATE SET value=excluded.value", (CURSOR_KEY, value))

    def _patients_to_check(self) -> tuple[set[str], set[str], str, str]:
        """(patients that received something, patients with watched courses, newest arrival,
        the cursor as stored).

        New rows are found by row id (in SQLite assigned in commit order, since writers are
        serialised, so an instance whose arrival time was taken before it waited for the write
        lock is still found; an index whose ids are not in commit order, such as a PostgreSQL
        sequence, needs the look-back on arrival time instead) and replaced ones by
        an arrival time after the cursor; the first tick of a process looks back
        ``LATE_COMMIT_S`` behind the stored cursor instead and takes every patient it finds."""
        cursor = self._cursor()
        top = self.index.query("SELECT MAX(id) FROM instances")[0][0] or 0
        sql = ("SELECT p.patient_id, MAX(i.received_at), MAX(i.id) FROM instances i"
               " JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id"
               " JOIN patients p ON st.patient_fk = p.id WHERE {} GROUP BY p.patient_id")
        if self._max_id is None:
            since = cursor
            if cursor:
                since = (_parse(cursor) - dt.timedelta(seconds=LATE_COMMIT_S)).isoformat(
                    timespec="milliseconds")
            rows = self.index.query(sql.format("i.received_at >= ?"), (since,))
            touched = {r[0] for r in rows}
        else:
            rows = self.index.query(sql.format("i.id > ? OR i.received_at >= ?"),
                                    (self._max_id, cursor))
            touched = {r[0] for r in rows if r[2] > self._max_id or r[1] > cursor}
        self._max_id = max(top, max((r[2] for r in rows), default=0))
        newest = max((r[1] for r in rows), default=cursor)
        watched = set()
        for patient_id, key in self.index.query(
                "SELECT patient_id, course_key FROM courses WHERE state IN (?,?)", WATCHED):
            watched.add(patient_id)
            seen = self._seen.get(patient_id, {}).get(key)
            if seen is None or seen.state not in WATCHED:
                # put back to waiting by another process (e.g. `rtnode delete` of a series):
                # what is left of the patient is grouped again
                touched.add(patient_id)
        return touched, watched, max(newest, cursor), cursor

    def _members(self, patient_id: str) -> list:
        marks = ",".join("?" * len(COURSE_MODALITIES))
        rows = [dict(r) for r in self.index.query(
            "SELECT i.id, i.sop_instance_uid, i.sop_class_uid, i.modality,"
            " i.frame_of_reference_uid, i.path, i.received_at, i.calling_ae, i.called_ae,"
            " i.origin, i.attrs, se.series_uid, se.description AS series_description,"
            " st.study_uid, st.description AS study_description FROM instances i"
            " JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id"
            " JOIN patients p ON st.patient_fk = p.id"
            f" WHERE p.patient_id = ? AND i.modality IN ({marks})"
            " AND i.origin != 'derived'",  # rtnode's own outputs are never course inputs
            (patient_id, *COURSE_MODALITIES))]
        rt_ids = [r["id"] for r in rows if r["modality"] != "CT"]
        refs: dict[int, list[tuple[str, str]]] = {}
        for start in range(0, len(rt_ids), 500):
            chunk = rt_ids[start:start + 500]
            for fk, kind, uid in self.index.query(
                    f"SELECT instance_fk, kind, uid FROM instance_refs WHERE instance_fk IN"
                    f" ({','.join('?' * len(chunk))})", tuple(chunk)):
                refs.setdefault(fk, []).append((kind, uid))
        return [member_from_row(r, refs.get(r["id"], ())) for r in rows]

    # -- one tick ------------------------------------------------------------------------------

    def tick(self, now: dt.datetime | None = None) -> list[tuple[int, int]]:
        """Returns the (course id, revision) pairs created in this tick."""
        now = now or dt.datetime.now(dt.timezone.utc)
        touched, watched, newest, cursor = self._patients_to_check()
        for key in [k for k in self._due if k[0] not in watched and k[0] not in touched]:
            del self._due[key]  # moved on elsewhere (cancelled from the command line)
        created = []
        for patient_id in sorted(touched | watched):
            if patient_id in touched or self._clock_moves(patient_id, now):
                created.extend(self._check_patient(patient_id, now))
        if newest and newest != cursor:
            self._set_cursor(newest)
        return created

    def _clock_moves(self, patient_id: str, now: dt.datetime) -> bool:
        """Whether a watched course of this untouched patient changes state by time alone (or
        is unknown to this process, e.g. after a restart)."""
        seen = self._seen.get(patient_id)
        if not seen:
            return True
        wait = self.config.courses.max_wait_seconds
        return any(v.due_state(now, wait) != v.state for v in seen.values())

    def seconds_to_next_due(self, now: dt.datetime | None = None) -> float | None:
        """Seconds until the first watched course's quiet period or max-wait runs out (may be
        negative), None when no course is waiting: the pipeline thread sleeps until then."""
        if not self._due:
            return None
        now = now or dt.datetime.now(dt.timezone.utc)
        return (min(self._due.values()) - now).total_seconds()

    def facts(self, draft: CourseDraft) -> CourseFacts:
        first = min(draft.members, key=lambda m: m.received_at)
        anchor = next((m for m in draft.of("CT")), first)
        return CourseFacts(calling_ae=first.calling_ae, called_ae=first.called_ae,
                           modalities=frozenset(m.modality for m in draft.members),
                           study_description=anchor.study_description,
                           series_description=anchor.series_description, tag=draft.tag)

    def _check_patient(self, patient_id: str, now: dt.datetime) -> list[tuple[int, int]]:
        drafts = group_courses(patient_id, self._members(patient_id))
        keys = {d.key for d in drafts}
        for old in self.index.query("SELECT id, course_key FROM courses WHERE patient_id=?",
                                    (patient_id,)):
            if old["course_key"] not in keys:
                self.book.drop_course(old["id"])
        seen = self._seen.setdefault(patient_id, {})
        for key in [k for k in seen if k not in keys]:
            del seen[key]
            self._due.pop((patient_id, key), None)
        created = []
        for draft in drafts:
            result = self._check_course(draft, now)
            if result is not None:
                created.append(result)
        return created

    def _latest_digest(self, course_id: int) -> tuple[dict[str, Any] | None, str]:
        """The latest revision's number row and the digest of its members, read in full only
        when this process has not seen that revision yet."""
        rows = self.index.query("SELECT revision FROM revisions WHERE course_fk=? ORDER BY"
                                " revision DESC LIMIT 1", (course_id,))
        if not rows:
            return None, ""
        number = rows[0][0]
        cached = self._revision_digest.get(course_id)
        if cached is None or cached[0] != number:
            latest = self.book.latest_revision(course_id)
            assert latest is not None
            cached = (number, signature_digest(json.loads(latest["members"])))
            self._revision_digest[course_id] = cached
        return {"revision": number}, cached[1]

    def _check_course(self, draft: CourseDraft, now: dt.datetime) -> tuple[int, int] | None:
        verdict = judge(draft)
        facts = self.facts(draft)
        rule = self.rules.select(facts)
        members = [m.as_json() for m in draft.members]
        digest = signature_digest(members)
        quiet_for = rule.quiet_seconds if rule.quiet_seconds is not None \
            else self.config.courses.quiet_seconds
        idle = (now - _parse(draft.last_received_at)).total_seconds()
        existing = self._existing(draft)
        latest, latest_digest = self._latest_digest(existing["id"]) if existing else (None, "")
        unchanged = latest is not None and latest_digest == digest
        if unchanged or (existing and existing["cancelled"]):
            state = existing["state"]
        elif idle < quiet_for:
            state = "receiving"
        elif verdict.complete or idle >= self.config.courses.max_wait_seconds:
            state = "running"
        else:
            state = "waiting"
        written = (state, draft.anchor_series_uid, draft.frame_of_reference_uid, draft.tag,
                   rule.name, facts.calling_ae, digest, json.dumps(verdict.as_json()),
                   draft.first_received_at, draft.last_received_at)
        seen = self._seen.setdefault(draft.patient_id, {}).get(draft.key)
        if (seen is not None and existing is not None and seen.course_id == existing["id"]
                and seen.written == written and existing["state"] == state):
            course_id = seen.course_id  # nothing changed: no write, no 320 KB JSON re-encoded
        else:
            course_id = self.book.save_course(
                patient_id=draft.patient_id, key=draft.key,
                anchor_series_uid=draft.anchor_series_uid,
                frame_of_reference_uid=draft.frame_of_reference_uid, state=state,
                tag=draft.tag, rule=rule.name, calling_ae=facts.calling_ae, members=members,
                verdict=verdict.as_json(), first_received_at=draft.first_received_at,
                last_received_at=draft.last_received_at)
        seen = Seen(course_id, state, written, draft.last_received_at, quiet_for,
                    verdict.complete)
        self._seen[draft.patient_id][draft.key] = seen
        due = seen.due_at(self.config.courses.max_wait_seconds)
        if due is None:
            self._due.pop((draft.patient_id, draft.key), None)
        else:
            self._due[(draft.patient_id, draft.key)] = due
        if state != "running" or unchanged:
            return None
        roles = rule.dose.sum if rule.dose.sum is not None else self.config.dvh.sum
        plan = {**rule.model_dump(),
                "dose": draft.dose_plan(roles, self.config.storage_root)}
        previous = self.book.runs(course_id) if latest else []
        runs = plan_runs(rule.stages, self.registry, plan, draft.members, previous,
                         len(self.config.gpu_devices()))
        revision = self.book.create_revision(
            course_id, members, verdict.as_json(), plan, runs,
            priority=TAG_BAND.get(draft.tag, 0), size=len(draft.members))
        self._revision_digest[course_id] = (revision, digest)
        # patient IDs stay out of INFO: the course id leads to them for whoever may see them
        log.debug("course %d is patient %s", course_id, draft.patient_id)
        log.info("course %d revision %d: %d objects, %s, rule %s%s", course_id,
                 revision, len(members),
                 "complete" if verdict.complete else "INCOMPLETE after max-wait", rule.name,
                 "" if verdict.complete else ": " + "; ".join(verdict.missing))
        return course_id, revision

    def _existing(self, draft: CourseDraft) -> dict[str, Any] | None:
        rows = self.index.query("SELECT id, state, cancelled FROM courses WHERE patient_id=?"
                                " AND course_key=?", (draft.patient_id, draft.key))
        return dict(rows[0]) if rows else None
