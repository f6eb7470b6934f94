"""Which instances of a patient form which treatment course.

A course is anchored on one planning CT series. RT objects join the course their references lead
to — RTSTRUCT → its referenced CT series, RTPLAN → its RTSTRUCT, RTDOSE → its RTPLAN — and fall
back on the FrameOfReferenceUID only when a reference is absent. So several CTs of one study
(4D phases, a CBCT) stay separate courses, and a plan on another frame of reference is another
course. An RT object whose CT has not arrived yet anchors on the CT series it references; the
course is then simply incomplete until the CT comes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

#: the modalities that make up a course
COURSE_MODALITIES = ("CT", "RTSTRUCT", "RTPLAN", "RTDOSE")


@dataclass(frozen=True)
class Member:
    """One instance of a course, with what stages need to find and judge it."""

    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    path: str
    received_at: str
    calling_ae: str = ""
    called_ae: str = ""
    origin: str = "received"
    study_description: str = ""
    series_description: str = ""
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    refs: tuple[tuple[str, str], ...] = ()

    def refs_of(self, kind: str) -> list[str]:
        return [uid for k, uid in self.refs if k == kind]

    def as_json(self) -> dict[str, Any]:
        return {"sop_instance_uid": self.sop_instance_uid, "sop_class_uid": self.sop_class_uid,
                "modality": self.modality, "series_uid": self.series_uid,
                "study_uid": self.study_uid,
                "frame_of_reference_uid": self.frame_of_reference_uid, "path": self.path,
                "received_at": self.received_at, "calling_ae": self.calling_ae,
                "origin": self.origin, "attrs": self.attrs, "refs": [list(r) for r in self.refs]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Member":
        return cls(**{**d, "refs": tuple(tuple(r) for r in d.get("refs", []))})


@dataclass
class CourseDraft:
    """A course as the instances now on disk define it (before completeness and rules)."""

    patient_id: str
    key: str
    anchor_series_uid: str = ""
    frame_of_reference_uid: str = ""
    members: list[Member] = field(default_factory=list)

    def of(self, modality: str) -> list[Member]:
        return [m for m in self.members if m.modality == modality]

    @property
    def last_received_at(self) -> str:
        return max((m.received_at for m in self.members), default="")

    @property
    def first_received_at(self) -> str:
        return min((m.received_at for m in self.members), default="")

    @property
    def tag(self) -> str:
        """clinical unless every member came in as part of a cohort (retrieval or import)."""
        cohort = {"retrieved", "cohort"}
        return "cohort" if self.members and all(m.origin in cohort for m in self.members) \
            else "clinical"

    def dose_plan(self, sum_roles: Iterable[str] = (), root: Path | None = None) -> dict[str, Any]:
        """How the course's dose is put together (``rtnode.courses.doseplan``): the revision's
        ``dose`` entry. With the storage ``root`` the RTPLAN headers are read for their
        RTPlanRelationship (the index keeps which plans a plan references, not how); without
        it, or for a file that cannot be read, the index's attributes stand in."""
        from rtnode.courses.doseplan import classify

        return classify([plan_facts_of(m, root) for m in self.of("RTPLAN")],
                        [dose_facts_of(m) for m in self.of("RTDOSE")], sum_roles).as_json()


def plan_facts_of(m: Member, root: Path | None = None):
    """PlanFacts of an RTPLAN member: from its header when the file can be read under
    ``root``, else from the index's attributes (no RTPlanRelationship there)."""
    from rtnode.courses.doseplan import PlanFacts, plan_facts

    if root is not None:
        try:
            import pydicom

            return plan_facts(pydicom.dcmread(Path(root) / m.path, stop_before_pixels=True))
        except Exception:  # the attributes below still give label, date and approval
            pass

    a = m.attrs
    return PlanFacts(uid=m.sop_instance_uid,
                     label=str(a.get("RTPlanLabel") or a.get("RTPlanName") or ""),
                     date=str(a.get("RTPlanDate") or ""),
                     approval=str(a.get("ApprovalStatus") or "").upper(),
                     structure_sets=tuple(m.refs_of("rtstruct")),
                     relations=tuple((u, "") for u in m.refs_of("rtplan")))


def dose_facts_of(m: Member):
    from rtnode.courses.doseplan import DoseFacts

    a = m.attrs
    return DoseFacts(uid=m.sop_instance_uid,
                     summation=str(a.get("DoseSummationType") or "PLAN").upper(),
                     plans=tuple(m.refs_of("rtplan")),
                     date=str(a.get("ContentDate") or "") + str(a.get("ContentTime") or ""))


def _pick_by_for(anchors: dict[str, CourseDraft], frame: str,
                 prefer: Iterable[str] = ()) -> CourseDraft | None:
    """The anchor on this frame of reference; ties go to one already holding RT objects,
    then to the series with the most slices (the planning CT, not a single 4D phase)."""
    candidates = [d for d in anchors.values() if frame and d.frame_of_reference_uid == frame]
    if not candidates:
        return None
    preferred = set(prefer)
    return max(candidates, key=lambda d: (d.key in preferred,
                                          len(d.members) - len(d.of("CT")) > 0,
                                          len(d.of("CT"))))


def group_courses(patient_id: str, members: list[Member]) -> list[CourseDraft]:
    """Partition a patient's CT/RT instances into course drafts, keyed stably by anchor."""
    drafts: dict[str, CourseDraft] = {}

    def draft(key: str, anchor: str = "", frame: str = "") -> CourseDraft:
        if key not in drafts:
            drafts[key] = CourseDraft(patient_id, key, anchor, frame)
        d = drafts[key]
        d.frame_of_reference_uid = d.frame_of_reference_uid or frame
        return d

    for m in members:
        if m.modality == "CT":
            draft(f"series:{m.series_uid}", m.series_uid, m.frame_of_reference_uid).members.append(m)
    anchors = dict(drafts)
    home: dict[str, str] = {}  # SOP Instance UID of an RT object -> course key

    def place(m: Member, key: str | None) -> None:
        if key is None:
            frame = m.frame_of_reference_uid or (m.refs_of("frame_of_reference") or [""])[0]
            found = _pick_by_for(anchors, frame)
            key = found.key if found else f"for:{frame or m.sop_instance_uid}"
            if not found:
                draft(key, "", frame)
        drafts[key].members.append(m)
        home[m.sop_instance_uid] = key

    for m in (x for x in members if x.modality == "RTSTRUCT"):
        key = None
        for series in m.refs_of("series"):
            key = f"series:{series}"
            if key not in drafts:
                frame = (m.refs_of("frame_of_reference") or [m.frame_of_reference_uid])[0]
                draft(key, series, frame)
            break
        place(m, key)
    for m in (x for x in members if x.modality == "RTPLAN"):
        key = next((home[u] for u in m.refs_of("rtstruct") if u in home), None)
        if key is None and m.frame_of_reference_uid:
            found = _pick_by_for(anchors, m.frame_of_reference_uid, prefer=home.values())
            key = found.key if found else None
        place(m, key)
    for m in (x for x in members if x.modality == "RTDOSE"):
        key = next((home[u] for u in m.refs_of("rtplan") + m.refs_of("rtstruct") if u in home),
                   None)
        if key is None and m.frame_of_reference_uid:
            found = _pick_by_for(anchors, m.frame_of_reference_uid, prefer=home.values())
            key = found.key if found else None
        place(m, key)
    return [d for d in drafts.values() if d.members]


def member_from_row(row: dict[str, Any], refs: Iterable[tuple[str, str]]) -> Member:
    return Member(
        sop_instance_uid=row["sop_instance_uid"], sop_class_uid=row["sop_class_uid"],
        modality=row["modality"], series_uid=row["series_uid"], study_uid=row["study_uid"],
        frame_of_reference_uid=row["frame_of_reference_uid"], path=row["path"],
        received_at=row["received_at"], calling_ae=row["calling_ae"],
        called_ae=row["called_ae"], origin=row["origin"],
        study_description=row["study_description"],
        series_description=row["series_description"],
        attrs=json.loads(row["attrs"] or "{}"), refs=tuple(refs))
