"""Dose: units and summation type, prescription, every ROI inside the dose grid, and the
computed DVHs against those the TPS exported (DVHSequence)."""

from __future__ import annotations

import math

from rtnode.qc.checks import Check, from_problems, skipped
from rtnode.qc.config import QCConfig
from rtnode.qc.course import QCCourse

WHOLE_COURSE = {"PLAN", "MULTI_PLAN"}


def units(course: QCCourse) -> Check:
    title = "RTDOSE units and summation type"
    if not course.doses:
        return skipped("dose_units", title, "no RTDOSE")
    problems = []
    for d in course.doses:
        uid = str(d.SOPInstanceUID)[-12:]
        u = str(getattr(d, "DoseUnits", "") or "").upper()
        s = str(getattr(d, "DoseSummationType", "") or "").upper()
        t = str(getattr(d, "DoseType", "") or "").upper()
        if u not in ("GY", "CGY"):
            problems.append(("warn" if u == "RELATIVE" else "fail",
                             f"RTDOSE …{uid}: DoseUnits {u or 'missing'} (absolute GY expected)"))
        if s not in WHOLE_COURSE:
            problems.append(("warn", f"RTDOSE …{uid}: DoseSummationType {s or 'missing'} is not "
                                     f"a whole-plan dose"))
        if t not in ("PHYSICAL", "EFFECTIVE"):
            problems.append(("warn", f"RTDOSE …{uid}: DoseType {t or 'missing'}"))
    summary = ", ".join(sorted({f"{getattr(d, 'DoseUnits', '')}/"
                                f"{getattr(d, 'DoseSummationType', '')}" for d in course.doses}))
    return from_problems("dose_units", title, problems, summary)


def prescription(course: QCCourse) -> Check:
    from rtnode.dvh.metrics import plan_prescription

    title = "Prescription present"
    if not course.plans and not course.doses:
        return skipped("prescription", title, "no RTPLAN and no RTDOSE")
    if not course.plans:
        return from_problems("prescription", title,
                             [("fail", "no RTPLAN: the prescription is unknown")], "")
    found = [rx for rx, _ in map(plan_prescription, course.plans) if rx]
    if not found:
        return from_problems("prescription", title, [(
            "fail", "no TargetPrescriptionDose in any RTPLAN DoseReferenceSequence")], "")
    return from_problems("prescription", title, [],
                         f"{max(found):g} Gy ({len(course.plans)} RTPLAN(s))")


def coverage(course: QCCourse, config: QCConfig) -> Check:
    title = "ROIs inside the dose grid"
    results = course.dvh
    if results is None:
        return skipped("dose_coverage", title, "no RTDOSE or no manual RTSTRUCT")
    short, details = [], []
    for res in results:
        for r in res.rois:
            if r.is_empty or r.interpreted_type.upper() == "EXTERNAL":
                continue
            if r.coverage < config.min_dose_coverage:
                short.append(f"{r.roi_name} {100 * r.coverage:.0f} %")
                details.append({"roi_name": r.roi_name, "inside_fraction": r.coverage})
    problems = [("fail", f"ROI(s) not covered by the dose grid: {', '.join(short)}")] \
        if short else []
    return from_problems("dose_coverage", title, problems,
                         "every ROI lies inside the dose grid", details)


def dvh_vs_tps(course: QCCourse, config: QCConfig) -> Check:
    title = "Computed DVH vs TPS DVH"
    results = course.dvh
    rows = [row for res in (results or []) for row in res.tps_comparison]
    if not rows:
        return skipped("dvh_vs_tps", title, "no DVHSequence in the RTDOSE to compare with")
    problems = []
    for row in rows:
        dv = row["max_volume_diff_pct"]
        if not math.isfinite(dv):
            continue
        if dv > config.dvh_tps_fail_pct:
            problems.append(("fail", f"{row['roi_name']}: ΔV up to {dv:.1f} %"))
        elif dv > config.dvh_tps_warn_pct:
            problems.append(("warn", f"{row['roi_name']}: ΔV up to {dv:.1f} %"))
    worst = max((r["max_volume_diff_pct"] for r in rows
                 if math.isfinite(r["max_volume_diff_pct"])), default=0.0)
    return from_problems("dvh_vs_tps", title, problems,
                         f"{len(rows)} ROI(s) agree within {worst:.1f} %",
                         [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                           for k, v in r.items()} for r in rows])
