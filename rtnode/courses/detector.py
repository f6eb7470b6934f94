"""Turning arrivals into ready course revisions.

Each tick looks only at patients that received something since the last tick, plus patients whose
courses are still waiting (their quiet period or max-wait may have run out). For each it regroups
the instances into courses, judges completeness, picks the rule, and when a course is quiet and
complete — or quiet past max-wait — snapshots its members as a new revision with planned stage
runs. A course whose members have not changed since its last revision is left alone.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts)


def member_signature(members: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((m["sop_instance_uid"], m["received_at"]) for m in members)


class Detector:
    def __init__(self, config: Config, index: Index, rules: RuleSet,
                 registry: dict[str, Stage]):
        self.config = config
        self.index = index
        self.book = CourseBook(index)
        self.rules = rules
        self.registry = registry

    # -- what to look at -----------------------------------------------------------------------

    def _cursor(self) -> str:
        rows = self.index.query("SELECT value FROM node_state WHERE key=?", (CURSOR_KEY,))
        return rows[0][0] if rows else ""

    def _set_cursor(self, value: str) -> None:
        with self.index.transaction() as c:
            c.execute("INSERT INTO node_state(key, value) VALUES (?,?) ON CONFLICT(key)"
                      " DO UPDATE SET value=excluded.value", (CURSOR_KEY, value))

    def _patients_to_check(self) -> tuple[set[str], str]:
        cursor = self._cursor()
        rows = self.index.query(
            "SELECT DISTINCT p.patient_id, MAX(i.received_at) FROM instances i"
            " JOIN series se ON i.series_fk = se.id JOIN studies st ON se.study_fk = st.id"
            " JOIN patients p ON st.patient_fk = p.id WHERE i.received_at >= ?"
            " GROUP BY p.patient_id", (cursor,))
        patients = {r[0] for r in rows}
        newest = max((r[1] for r in rows), default=cursor)
        waiting = self.index.query("SELECT DISTINCT patient_id FROM courses"
                                   " WHERE state IN ('receiving', 'waiting')")
        return patients | {r[0] for r in waiting}, newest

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
        patients, newest = self._patients_to_check()
        created = []
        for patient_id in sorted(patients):
            created.extend(self._check_patient(patient_id, now))
        if newest:
            self._set_cursor(newest)
        return created

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
        for old in self.book.courses(patient_id=patient_id):
            if old["course_key"] not in keys:
                self.book.drop_course(old["id"])
        created = []
        for draft in drafts:
            result = self._check_course(draft, now)
            if result is not None:
                created.append(result)
        return created

    def _check_course(self, draft: CourseDraft, now: dt.datetime) -> tuple[int, int] | None:
        verdict = judge(draft)
        facts = self.facts(draft)
        rule = self.rules.select(facts)
        members = [m.as_json() for m in draft.members]
        quiet_for = rule.quiet_seconds if rule.quiet_seconds is not None \
            else self.config.courses.quiet_seconds
        idle = (now - _parse(draft.last_received_at)).total_seconds()
        existing = self._existing(draft)
        latest = self.book.latest_revision(existing["id"]) if existing else None
        unchanged = latest is not None and \
            member_signature(json.loads(latest["members"])) == member_signature(members)
        if unchanged or (existing and existing["cancelled"]):
            state = existing["state"]
        elif idle < quiet_for:
            state = "receiving"
        elif verdict.complete or idle >= self.config.courses.max_wait_seconds:
            state = "running"
        else:
            state = "waiting"
        course_id = self.book.save_course(
            patient_id=draft.patient_id, key=draft.key, anchor_series_uid=draft.anchor_series_uid,
            frame_of_reference_uid=draft.frame_of_reference_uid, state=state, tag=draft.tag,
            rule=rule.name, calling_ae=facts.calling_ae, members=members,
            verdict=verdict.as_json(), first_received_at=draft.first_received_at,
            last_received_at=draft.last_received_at)
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
        log.info("course %d (patient %s) revision %d: %d objects, %s, rule %s%s", course_id,
                 draft.patient_id, revision, len(members),
                 "complete" if verdict.complete else "INCOMPLETE after max-wait", rule.name,
                 "" if verdict.complete else ": " + "; ".join(verdict.missing))
        return course_id, revision

    def _existing(self, draft: CourseDraft) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM courses WHERE patient_id=? AND course_key=?",
                                (draft.patient_id, draft.key))
        return dict(rows[0]) if rows else None
