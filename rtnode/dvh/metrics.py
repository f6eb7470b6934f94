"""DVH metrics per ROI: the numbers a plan review and a clinical trial QA protocol ask for.

Definitions (docs/DVH.md): Dx% is the minimum dose to the hottest x % of the ROI volume inside
the dose grid; Dv cc the same for an absolute volume; VxGy the volume receiving at least x Gy;
V95/V100/V107 the % of a target receiving 95/100/107 % of the prescription; HI = (D2 − D98) / D50
(ICRU 83); CI = TV_PIV² / (TV × PIV) (Paddick), with PIV the volume inside the EXTERNAL ROI (or
the dose grid when there is none) receiving at least the prescription.
"""

from __future__ import annotations

import math
from typing import Any

from pydicom.dataset import Dataset

from rtnode.dvh.config import DVHConfig
from rtnode.dvh.engine import RoiDVH

#: coverage below this is reported as "partly outside the dose grid"
FULL_COVERAGE = 0.999
#: fixed absolute-volume dose metrics (cc)
ABSOLUTE_VOLUMES_CC = (0.03, 1.0)


def _num(x: float) -> str:
    """98.0 -> '98', 0.03 -> '0.03': metric names as clinicians write them."""
    return f"{x:g}"


def dose_metric_name(pct: float) -> str:
    return f"d{_num(pct)}_gy"


def plan_prescription(rtplan: Dataset | None) -> tuple[float | None, set[int]]:
    """Largest TargetPrescriptionDose (Gy) of the RTPLAN's DoseReferenceSequence and the ROI
    numbers its dose references point at."""
    if rtplan is None:
        return None, set()
    doses, rois = [], set()
    for ref in getattr(rtplan, "DoseReferenceSequence", None) or []:
        value = getattr(ref, "TargetPrescriptionDose", None)
        if value not in (None, ""):
            doses.append(float(value))
            if "ReferencedROINumber" in ref:
                rois.add(int(ref.ReferencedROINumber))
    return (max(doses) if doses else None), rois


def course_prescription(rtplans: list[Dataset], referenced_plans: list[str],
                        summed: bool) -> float | None:
    """Prescription (Gy) of the course dose: from the plans the dose refers to (all plans given
    if it refers to none of them); their prescriptions add when the dose is a sum of plans
    (primary + boost, TPS plan sum), else the largest counts."""
    chosen = [p for p in rtplans if str(getattr(p, "SOPInstanceUID", "")) in referenced_plans]
    values = [rx for rx, _ in map(plan_prescription, chosen or rtplans) if rx is not None]
    if not values:
        return None
    return sum(values) if summed and len(values) > 1 else max(values)


def plan_targets(rtplans: list[Dataset], rtstruct: Dataset) -> set[int]:
    """ROI numbers the plans' dose references point at, from plans drawn on this structure set
    (ROI numbers mean nothing in another one, e.g. an auto-segmentation)."""
    uid = str(getattr(rtstruct, "SOPInstanceUID", ""))
    targets: set[int] = set()
    for plan in rtplans:
        refs = {str(r.ReferencedSOPInstanceUID)
                for r in getattr(plan, "ReferencedStructureSetSequence", None) or []
                if "ReferencedSOPInstanceUID" in r}
        if not refs or uid in refs:
            targets |= plan_prescription(plan)[1]
    return targets


def paddick_ci(target: RoiDVH, rx_gy: float, piv_cc: float | None) -> float:
    """Paddick conformity index; NaN when the prescription isodose volume is unknown or 0."""
    if not piv_cc or target.covered_cc <= 0:
        return math.nan
    tv_piv = target.dvh.volume_at(rx_gy)
    return tv_piv * tv_piv / (target.covered_cc * piv_cc)


def roi_metrics(r: RoiDVH, config: DVHConfig, prescription_gy: float | None = None,
                piv_cc: float | None = None) -> dict[str, Any]:
    """Flat metric record of one ROI (JSON/CSV ready); dose metrics NaN for an empty ROI."""
    covered = r.covered_cc
    row: dict[str, Any] = {
        "roi_number": r.roi_number, "roi_name": r.roi_name,
        "interpreted_type": r.interpreted_type, "source": r.source, "engine": r.engine,
        "volume_cc": r.volume_cc, "covered_cc": covered,
        "dose_coverage": r.coverage if r.volume_cc > 0 else math.nan,
        "empty": r.is_empty,
        "partly_outside_dose": bool(r.volume_cc > 0 and r.coverage < FULL_COVERAGE),
        "skipped_contours": r.skipped_contours,
        "dmean_gy": r.dmean_gy, "dmin_gy": r.dmin_gy, "dmax_gy": r.dmax_gy,
    }
    has_dose = covered > 0

    def dose_at(volume_cc: float) -> float:
        if not has_dose:
            return math.nan
        return min(max(r.dvh.dose_at(volume_cc), r.dmin_gy), r.dmax_gy)

    for pct in dict.fromkeys([98.0, 95.0, 50.0, 2.0, *config.dose_levels_pct]):
        row[dose_metric_name(pct)] = dose_at(covered * pct / 100.0)
    for cc in ABSOLUTE_VOLUMES_CC:
        row[f"d_{_num(cc)}cc_gy"] = dose_at(cc) if covered >= cc else math.nan
    for gy in config.volume_levels_gy:
        v = r.dvh.volume_at(gy) if has_dose else math.nan
        row[f"v{_num(gy)}gy_cc"] = v
        row[f"v{_num(gy)}gy_pct"] = 100.0 * v / covered if has_dose else math.nan
    if prescription_gy:
        row["prescription_gy"] = prescription_gy
        for level in (95, 100, 107):
            v = r.dvh.volume_at(prescription_gy * level / 100.0) if has_dose else math.nan
            row[f"v{level}_rx_pct"] = 100.0 * v / covered if has_dose else math.nan
        d50 = row["d50_gy"]
        row["hi"] = (row["d2_gy"] - row["d98_gy"]) / d50 if has_dose and d50 > 0 else math.nan
        row["ci"] = paddick_ci(r, prescription_gy, piv_cc) if has_dose else math.nan
    return row
