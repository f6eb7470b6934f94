"""Dose: units and summation type, prescription, every ROI inside the dose grid, and the
computed DVHs against those the TPS exported (DVHSequence)."""

from __future__ import annotations

import math

from rtnode.qc.checks import Check, from_problems, skipped
from rtnode.qc.config import QCConfig
from rtnode.qc.course import QCCourse

WHOLE_COURSE = {"PLAN", "MULTI_PLAN"}


def dose_plan(course: QCCourse):
    """The course's dose plan (``rtnode.courses.doseplan``): from the dvh results when QC
    computed them, else from the RTPLAN/RTDOSE headers."""
    from rtnode.courses.doseplan import from_datasets

    try:
        results = course.dvh or []
    except Exception:  # a dose the DVH engine refuses is reported by the other checks
        results = []
    for res in results:
        if res.dose_plan is not None:
            return res.dose_plan
    return from_datasets(course.plans, course.doses)


def units(course: QCCourse) -> Check:
    """Units and summation type of every RTDOSE, and the dose plan in words: which dose is the
    course's (warn when the data cannot tell and each plan is reported on its own)."""
    title = "RTDOSE units, summation type and dose plan"
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
    plan = dose_plan(course)
    words = plan.describe()
    if plan.sources and plan.course is None:
        problems.append(("warn", words))
    details = [{"dose_plan": words, "course_source": plan.course.label if plan.course else None,
                "sources": [{"dose_source": x.label, "role": x.role, "why": x.why,
                             "course_dose": x.course} for x in plan.sources]}]
    return from_problems("dose_units", title, problems, f"{summary}. {words}", details)


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
        course_label = res.dose_plan.course.label if res.dose_plan and res.dose_plan.course \
            else None
        seen = set()
        for r in res.rois:
            if r.is_empty or r.interpreted_type.upper() == "EXTERNAL":
                continue
            if course_label is not None and r.dose_source not in ("", course_label):
                continue  # the course dose decides; other sources repeat the ROIs
            if (r.roi_name, r.source) in seen:
                continue
            seen.add((r.roi_name, r.source))
            if r.coverage < config.min_dose_coverage:
                short.append(f"{r.roi_name} {100 * r.coverage:.0f} %")
                details.append({"roi_name": r.roi_name, "inside_fraction": r.coverage})
    problems = [("fail", f"ROI(s) not covered by the dose grid: {', '.join(short)}")] \
        if short else []
    return from_problems("dose_coverage", title, problems,
                         "every ROI lies inside the dose grid", details)


#: the DVH dose tolerance, in % of the prescription, for warn and fail (paired with the
#: volume tolerances dvh_tps_warn_pct / dvh_tps_fail_pct of the QC config)
DOSE_TOL_WARN_PCT_RX = 2.0
DOSE_TOL_FAIL_PCT_RX = 5.0
#: below this ROI volume (cc) the volume tolerance widens as sqrt(SMALL_ROI_CC / volume): a
#: 0.5 cc ROI is a few dose voxels, where any two engines differ by several %
SMALL_ROI_CC = 3.0


def volume_tolerance_pct(base_pct: float, volume_cc: float) -> float:
    """Volume tolerance (% of the ROI) for an ROI of this size."""
    if not volume_cc or volume_cc <= 0 or not math.isfinite(volume_cc):
        return base_pct
    return base_pct * max(1.0, math.sqrt(SMALL_ROI_CC / volume_cc))


def disagreement(row: dict, vol_tol_pct: float, dose_tol_gy: float) -> tuple[float, int]:
    """How far a computed DVH is from the TPS's, in units of the tolerance (<= 1 agrees), and
    at which TPS point: a point agrees when its volume difference is within the volume
    tolerance OR the dose difference at its volume within the dose tolerance — a steep DVH
    shoulder moves much volume for a tiny dose shift, a flat tail much dose for little volume."""
    dv, dd = row.get("_dv") or [], row.get("_dd") or []
    if not dv:
        return math.nan, -1
    scores = [min(v / vol_tol_pct, d / dose_tol_gy) for v, d in zip(dv, dd)]
    worst = max(range(len(scores)), key=scores.__getitem__)
    return scores[worst], worst


def _public(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items() if not k.startswith("_")}


def dvh_vs_tps(course: QCCourse, config: QCConfig) -> Check:
    """Computed vs TPS DVHs with tolerances that scale with ROI size (volume) and the
    prescription (dose); the reason names the ROIs that drove the verdict."""
    title = "Computed DVH vs TPS DVH"
    results = course.dvh
    rows = [row for res in (results or []) for row in res.tps_comparison]
    if not rows:
        return skipped("dvh_vs_tps", title, "no DVHSequence in the RTDOSE to compare with")
    rx = next((res.prescription_gy for res in results or [] if res.prescription_gy), None)
    top = max((r.dvh.doses[-1] for res in results or [] for r in res.rois
               if r.dvh.doses.size), default=0.0)
    reference_gy = rx or top
    basis = f"{reference_gy:g} Gy " + ("prescription" if rx else "(highest dose: no prescription)")
    problems, details = [], []
    several = len({row.get("dose_source") for row in rows}) > 1
    for row in rows:
        tol = {"warn": (volume_tolerance_pct(config.dvh_tps_warn_pct, row.get("volume_cc")),
                        DOSE_TOL_WARN_PCT_RX * reference_gy / 100.0),
               "fail": (volume_tolerance_pct(config.dvh_tps_fail_pct, row.get("volume_cc")),
                        DOSE_TOL_FAIL_PCT_RX * reference_gy / 100.0)}
        status, score = "pass", math.nan
        for level in ("warn", "fail"):
            vol_tol, dose_tol = tol[level]
            if dose_tol <= 0:
                continue
            s, k = disagreement(row, vol_tol, dose_tol)
            if level == "warn":
                score = s
            if math.isfinite(s) and s > 1.0:
                status = level
                at = k
        detail = {**_public(row), "status": status, "score": score,
                  "volume_tolerance_pct": round(tol["warn"][0], 2),
                  "dose_tolerance_gy": round(tol["warn"][1], 3)}
        details.append(detail)
        label = row["roi_name"] + (f" [{row['dose_source']}]" if several else "")
        if status != "pass":
            dv, dd = row["_dv"][at], row["_dd"][at]
            vol_tol, dose_tol = tol[status]
            problems.append((status, f"{label}: ΔV up to {row['max_volume_diff_pct']:.1f} %; "
                                     f"{dv:.1f} % of the ROI differs where the doses differ by "
                                     f"{dd:.2f} Gy (tolerance {vol_tol:.1f} % or "
                                     f"{dose_tol:.2f} Gy)"))
        if row.get("tps_header_check") == "% of prescription":
            problems.append(("warn", f"{label}: the TPS wrote DVHMeanDose in % of the "
                                     "prescription, not Gy; its mean dose is taken from the DVH "
                                     "curve"))
        elif row.get("tps_header_check") == "disagrees":
            problems.append(("warn", f"{label}: the TPS DVHMeanDose disagrees with its own DVH "
                                     "curve; the curve is used"))
    problems.sort(key=lambda p: (p[0] != "fail", p[1]))
    worst = max((d for d in details if d["score"] is not None and math.isfinite(d["score"])),
                key=lambda d: d["score"], default=None)
    summary = f"{len(rows)} ROI(s) agree within tolerance (ΔV {config.dvh_tps_warn_pct:g} %, " \
              f"wider below {SMALL_ROI_CC:g} cc, or ΔD {DOSE_TOL_WARN_PCT_RX:g} % of {basis})"
    if worst is not None:
        summary += f"; closest to it: {worst['roi_name']} ({worst['score']:.2f} of the tolerance)"
    return from_problems("dvh_vs_tps", title, problems, summary, details)
