"""The dose plan of a course: which dose stands for which plan, which plan replaces which, and
which dose is the course's — decided from what DICOM says, the same whatever the arrival order.

Evidence, strongest first (docs/DVH.md, "Dose plan"):

- an RTDOSE with DoseSummationType MULTI_PLAN, or PLAN referencing two or more RTPLANs, is the
  TPS's own plan sum: it is the course dose;
- RTPlanRelationship in an RTPLAN's ReferencedRTPlanSequence: PREDECESSOR (this plan replaces the
  referenced one: a replan), PRIOR / CONCURRENT (both are delivered: their doses add),
  ALTERNATIVE (either is delivered: never added), VERIFIED_PLAN (a verification plan: no
  course dose);
- ApprovalStatus: a REJECTED plan is never the course dose; a replan takes over only when it is
  at least as approved as the plan it replaces ("the newest approved plan");
- weak hints, used only between plans on the same structure set that the data do not relate:
  a label that says boost (``BOOST_LABEL``) makes a boost *candidate*, added to the primary only
  when the rule says ``dose: {sum: [boost]}``; otherwise a later RTPlanDate (another day)
  makes a replan. Plans that stay unrelated are reported each on its own and never added.

Every plan's own dose stays a dose source of its own (a superseded plan is reported, labelled as
such); the course dose is one of them, a computed sum, the TPS plan sum, or none when the data
cannot tell. Decisions depend on UIDs, dates and labels only, never on arrival order.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

#: DoseSummationType values that are parts of one plan and add up to its dose
PLAN_PARTS = ("BEAM", "FRACTION", "BRACHY")
#: RTPlanLabel/RTPlanName words that hint at a boost (a weak hint, documented)
BOOST_LABEL = re.compile(r"boost|\bbst|\bsib\b|cone.?down|phase.?2|\bph2\b|\bph\.?\s*2", re.I)
#: how far an ApprovalStatus counts towards being the plan in use
APPROVAL_RANK = {"APPROVED": 2, "": 1, "UNAPPROVED": 1, "REJECTED": 0}
#: relationships under which both plans are delivered, so their doses add
DELIVERED_TOGETHER = ("PRIOR", "CONCURRENT")


@dataclass(frozen=True)
class PlanFacts:
    """What the dose plan needs of an RTPLAN."""

    uid: str
    label: str = ""
    date: str = ""  # RTPlanDate (YYYYMMDD); "" when absent. Times are not used: a primary and
    #                 its boost are often made minutes apart on one day
    approval: str = ""
    structure_sets: tuple[str, ...] = ()
    relations: tuple[tuple[str, str], ...] = ()  # (referenced RTPLAN UID, RTPlanRelationship)

    @property
    def name(self) -> str:
        return self.label or f"plan …{self.uid[-6:]}"


@dataclass(frozen=True)
class DoseFacts:
    """What the dose plan needs of an RTDOSE."""

    uid: str
    summation: str = "PLAN"
    plans: tuple[str, ...] = ()  # ReferencedRTPlanSequence
    date: str = ""  # ContentDate + ContentTime, only to break ties between copies


@dataclass
class DoseSource:
    """One dose a DVH is computed in, and why it is what it is."""

    key: str  # stable: plan:<uid>, plansum:<uid>, sum:<uid>+<uid>, dose:<uid>
    label: str  # what dvh_metrics.csv's dose_source says
    kind: str  # plan | tps_plan_sum | sum | dose
    rtdose: list[str]
    rtplan: list[str]
    role: str  # primary, replan, boost, superseded, alternative, rejected, verification,
    #            plan sum, sum, unrelated, not used
    course: bool = False
    why: str = ""


@dataclass
class DosePlan:
    """The course's dose sources; at most one is the course dose."""

    sources: list[DoseSource] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sum_roles: tuple[str, ...] = ()

    @property
    def course(self) -> DoseSource | None:
        return next((s for s in self.sources if s.course), None)

    @property
    def rtdose(self) -> list[str]:
        """Every RTDOSE any source uses."""
        return sorted({u for s in self.sources for u in s.rtdose})

    @property
    def mode(self) -> str:
        c = self.course
        if not self.sources:
            return "none"
        if c is None:
            return "separate"
        return {"tps_plan_sum": "tps_plan_sum", "sum": "sum"}.get(c.kind, "single")

    def describe(self) -> str:
        """The dose plan in words, for course show, QC and logs."""
        if not self.sources:
            return "No RTDOSE: no dose plan."
        c = self.course
        others = [s for s in self.sources if not s.course]
        if c is None:
            head = ("No course dose: " + ", ".join(f"'{s.label}'" for s in self.sources)
                    + " with no evidence in the data how they combine; each is reported "
                    "separately, none summed.")
        else:
            shown = f"'{c.label}'" if c.kind in ("plan", "dose") else c.label
            head = f"Course dose: {shown}" + (f" ({c.why})" if c.why else "") + "."
            if others:
                head += " Also reported separately: " + "; ".join(
                    f"'{s.label}' ({s.role}{', ' + s.why if s.why else ''})"
                    for s in others) + "."
        return " ".join([head, *self.notes])

    def as_json(self) -> dict[str, Any]:
        """The ``dose`` entry of a revision's plan (manifest) and dvh's dose_plan.json."""
        c = self.course
        return {"mode": self.mode, "rtdose": self.rtdose,
                "course_source": c.label if c else None,
                "sources": [asdict(s) for s in self.sources], "notes": list(self.notes),
                "sum": list(self.sum_roles), "words": self.describe()}


def _rank(p: PlanFacts) -> int:
    return APPROVAL_RANK.get(p.approval.upper(), 1)


def _newest(doses: list[DoseFacts]) -> DoseFacts:
    return max(doses, key=lambda d: (d.date, d.uid))


def classify(plans: Iterable[PlanFacts], doses: Iterable[DoseFacts],
             sum_roles: Iterable[str] = ()) -> DosePlan:
    """The dose plan of one course from its RTPLANs and RTDOSEs (see the module docstring)."""
    plans = sorted({p.uid: p for p in plans}.values(), key=lambda p: p.uid)
    doses = sorted({d.uid: d for d in doses}.values(), key=lambda d: d.uid)
    sum_roles = tuple(sorted(set(sum_roles)))
    result = DosePlan(sum_roles=sum_roles)
    if not doses:
        return result
    by_uid = {p.uid: p for p in plans}

    labels = [p.label for p in plans]

    def name(uid: str) -> str:
        if uid not in by_uid:
            return f"plan …{uid[-6:]}"
        p = by_uid[uid]
        return p.name if labels.count(p.label) == 1 else f"{p.name} …{uid[-6:]}"

    # 1. each RTDOSE: a TPS plan sum, one plan's dose (or part of it), or unattached
    plan_sums, per_plan, parts, loose = [], {}, {}, []
    for d in doses:
        kind = d.summation.upper() or "PLAN"
        refs = tuple(dict.fromkeys(d.plans))
        if kind == "MULTI_PLAN" or (kind == "PLAN" and len(refs) > 1):
            plan_sums.append(d)
        elif len(refs) == 1 and kind == "PLAN":
            per_plan.setdefault(refs[0], []).append(d)
        elif len(refs) == 1 and kind in PLAN_PARTS:
            parts.setdefault(refs[0], []).append(d)
        else:
            loose.append(d)
    sources: dict[str, DoseSource] = {}  # plan UID -> its own dose source
    for uid in sorted(set(per_plan) | set(parts)):
        if uid in per_plan:
            chosen = _newest(per_plan[uid])
            if len(per_plan[uid]) > 1:
                result.notes.append(f"{len(per_plan[uid])} PLAN doses for '{name(uid)}': "
                                    f"using the newest, …{chosen.uid[-6:]}.")
            used, why = [chosen.uid], ""
        else:
            used = [d.uid for d in parts[uid]]
            why = f"sum of its {len(used)} {parts[uid][0].summation.upper()} doses"
        sources[uid] = DoseSource(key=f"plan:{uid}", label=name(uid), kind="plan", rtdose=used,
                                  rtplan=[uid], role="primary", why=why)

    # 2. plan relationships (strong) and hints (weak)
    replaced_by: dict[str, tuple[str, str]] = {}  # old plan -> (new plan, evidence)
    together: list[tuple[str, str, str]] = []  # (plan, plan, evidence): doses add
    alternatives: set[str] = set()
    verification: set[str] = set()
    related: set[frozenset[str]] = set()
    for p in plans:
        for ref, rel in p.relations:
            if ref not in by_uid or ref == p.uid:
                continue
            rel = rel.upper()
            if rel:
                related.add(frozenset((p.uid, ref)))
            if rel == "PREDECESSOR":
                replaced_by.setdefault(ref, (p.uid, "RTPlanRelationship PREDECESSOR"))
            elif rel in DELIVERED_TOGETHER:
                together.append((ref, p.uid, f"RTPlanRelationship {rel}"))
            elif rel == "ALTERNATIVE":
                alternatives |= {p.uid, ref}
            elif rel == "VERIFIED_PLAN":
                verification.add(p.uid)
    boost_hint = {p.uid for p in plans if BOOST_LABEL.search(p.label)}
    with_dose = [p for p in plans if p.uid in sources and p.uid not in verification]
    weak_boost: list[tuple[str, str]] = []
    for i, a in enumerate(with_dose):
        for b in with_dose[i + 1:]:
            if frozenset((a.uid, b.uid)) in related:
                continue
            if not (set(a.structure_sets) & set(b.structure_sets)):
                continue
            if (a.uid in boost_hint) != (b.uid in boost_hint):
                primary, boost = (b, a) if a.uid in boost_hint else (a, b)
                weak_boost.append((primary.uid, boost.uid))
            elif a.uid not in boost_hint and a.date and b.date and a.date != b.date:
                old, new = sorted((a, b), key=lambda p: p.date)
                replaced_by.setdefault(old.uid, (
                    new.uid, f"later RTPlanDate on the same structure set, no relationship "
                             f"given (a weak hint)"))

    # 3. who is superseded: a replan takes over only if at least as approved as its predecessor
    superseded: set[str] = set()
    for old, (new, why) in sorted(replaced_by.items()):
        if old not in sources or new not in sources:
            continue
        if _rank(by_uid[new]) < _rank(by_uid[old]):
            result.notes.append(
                f"'{name(new)}' replaces '{name(old)}' ({why}) but is {by_uid[new].approval or 'not approved'}"
                f" while '{name(old)}' is {by_uid[old].approval}: '{name(old)}' stays in use.")
            sources[new].role, sources[new].why = "replan (not in use)", why
            superseded.add(new)
            continue
        superseded.add(old)
        sources[old].role = "superseded"
        sources[old].why = f"replaced by '{name(new)}'"
        sources[new].role, sources[new].why = "replan", f"replaces '{name(old)}', {why}"
    for uid in sorted(sources):
        p = by_uid.get(uid)
        if p is not None and p.approval.upper() == "REJECTED":
            sources[uid].role, sources[uid].why = "rejected", "ApprovalStatus REJECTED"
            superseded.add(uid)
        if uid in verification:
            sources[uid].role, sources[uid].why = "verification", "RTPlanRelationship VERIFIED_PLAN"
            superseded.add(uid)
    active = [u for u in sorted(sources) if u not in superseded]

    # 4. the course dose
    course: DoseSource | None = None
    extra: list[DoseSource] = []
    if plan_sums:
        chosen = max(plan_sums, key=lambda d: (len(set(d.plans)), d.date, d.uid))
        names = " + ".join(f"'{name(u)}'" for u in dict.fromkeys(chosen.plans)) or "its plans"
        course = DoseSource(
            key=f"plansum:{chosen.uid}", label="plan sum", kind="tps_plan_sum",
            rtdose=[chosen.uid], rtplan=list(dict.fromkeys(chosen.plans)), role="plan sum",
            why=f"TPS plan sum ({chosen.summation.upper()}) of {names}")
        for d in plan_sums:
            if d is not chosen:
                extra.append(DoseSource(key=f"plansum:{d.uid}", label=f"plan sum …{d.uid[-6:]}",
                                        kind="tps_plan_sum", rtdose=[d.uid],
                                        rtplan=list(dict.fromkeys(d.plans)), role="not used",
                                        why="another TPS plan sum covers more plans or is newer"))
        for u in dict.fromkeys(chosen.plans):
            if u in sources and sources[u].role == "primary":
                sources[u].role, sources[u].why = "in the plan sum", ""
        stale = [u for u in chosen.plans if u in superseded]
        if stale:
            result.notes.append("The TPS plan sum includes " + ", ".join(
                f"'{name(u)}' ({sources[u].role})" for u in stale if u in sources) + ".")
    elif len(active) == 1 and not loose:
        course = sources[active[0]]
    elif len(active) > 1:
        edges = [(a, b, why) for a, b, why in together]
        if "boost" in sum_roles:
            edges += [(a, b, "a boost by its label, added by the rule dose: {sum: [boost]}")
                      for a, b in weak_boost]
        for a, b, why in edges:
            if b in sources and a in sources and sources[b].role == "primary":
                sources[b].role, sources[b].why = "boost", why
        group = _connected(set(active), [(a, b) for a, b, _ in edges])
        if group == set(active) and not (alternatives & set(active)):
            members = sorted(active, key=lambda u: (sources[u].role != "primary",
                                                    by_uid[u].date if u in by_uid else "",
                                                    name(u)))
            course = DoseSource(
                key="sum:" + "+".join(members),
                label="sum of " + "+".join(name(u) for u in members), kind="sum",
                rtdose=[d for u in members for d in sources[u].rtdose], rtplan=members,
                role="sum", why="; ".join(dict.fromkeys(why for _, _, why in edges)))
        else:
            for a, b in weak_boost:
                if b in sources and sources[b].role == "primary":
                    sources[b].role = "boost?"
                    sources[b].why = (f"its label suggests a boost to '{name(a)}'; not added "
                                      "without rule dose: {sum: [boost]}")
            for u in active:
                if sources[u].role == "primary":
                    sources[u].role = "alternative" if u in alternatives else "unrelated"
    elif not active and not loose:
        result.notes.append("Every plan is superseded, rejected or a verification plan.")
    for d in loose:
        extra.append(DoseSource(key=f"dose:{d.uid}", label=f"RTDOSE …{d.uid[-6:]}", kind="dose",
                                rtdose=[d.uid], rtplan=list(d.plans),
                                role="unattached",
                                why=f"{d.summation.upper() or 'no'} DoseSummationType, "
                                    f"{len(set(d.plans))} plan reference(s)"))
    if course is None and not sources and len(loose) == 1:
        course, extra = extra[-1], extra[:-1]
        course.role, course.why = "the only RTDOSE", "no RTPLAN reference to check"
    if course is not None:
        course.course = True
    own = [sources[u] for u in sorted(sources, key=lambda u: (name(u), u))]
    ordered = ([course] if course is not None else []) + \
        [s for s in own if s is not course] + extra
    result.sources = ordered
    return result


def _connected(nodes: set[str], edges: list[tuple[str, str]]) -> set[str]:
    """The nodes connected to the smallest one (all of them when the edges join every node)."""
    if not nodes:
        return set()
    start = min(nodes)
    seen, todo = {start}, [start]
    while todo:
        n = todo.pop()
        for a, b in edges:
            for x, y in ((a, b), (b, a)):
                if x == n and y in nodes and y not in seen:
                    seen.add(y)
                    todo.append(y)
    return seen


def plan_facts(ds: Any) -> PlanFacts:
    """PlanFacts of a pydicom RTPLAN (only header attributes are read)."""
    relations = tuple(
        (str(r.ReferencedSOPInstanceUID), str(getattr(r, "RTPlanRelationship", "") or ""))
        for r in getattr(ds, "ReferencedRTPlanSequence", None) or []
        if "ReferencedSOPInstanceUID" in r)
    structs = tuple(str(r.ReferencedSOPInstanceUID)
                    for r in getattr(ds, "ReferencedStructureSetSequence", None) or []
                    if "ReferencedSOPInstanceUID" in r)
    return PlanFacts(
        uid=str(ds.SOPInstanceUID),
        label=str(getattr(ds, "RTPlanLabel", "") or getattr(ds, "RTPlanName", "") or ""),
        date=str(getattr(ds, "RTPlanDate", "") or ""),
        approval=str(getattr(ds, "ApprovalStatus", "") or "").upper(),
        structure_sets=structs, relations=relations)


def dose_facts(ds: Any) -> DoseFacts:
    """DoseFacts of a pydicom RTDOSE (header only)."""
    return DoseFacts(
        uid=str(ds.SOPInstanceUID),
        summation=str(getattr(ds, "DoseSummationType", "") or "PLAN").upper(),
        plans=tuple(str(r.ReferencedSOPInstanceUID)
                    for r in getattr(ds, "ReferencedRTPlanSequence", None) or []
                    if "ReferencedSOPInstanceUID" in r),
        date=str(getattr(ds, "ContentDate", "") or "") + str(getattr(ds, "ContentTime", "") or ""))


def from_datasets(plans: Iterable[Any], doses: Iterable[Any],
                  sum_roles: Iterable[str] = ()) -> DosePlan:
    """The dose plan of pydicom RTPLANs and RTDOSEs (what the dvh stage and QC see)."""
    return classify([plan_facts(p) for p in plans], [dose_facts(d) for d in doses], sum_roles)
