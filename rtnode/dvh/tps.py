"""Check computed DVHs against the DVHs a TPS exported in the RTDOSE (DVHSequence).

A disagreement flags a wrong structure set, a different dose, or a TPS/engine difference worth
a physicist's look; the report gives the largest cumulative-volume difference (in % of the ROI)
over the TPS DVH's dose range and the difference in mean dose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from rtnode.dvh.engine import RoiDVH


@dataclass
class TPSCurve:
    """A DVHSequence item as a cumulative curve: volume_pct[k] receives >= dose_gy[k]."""

    roi_number: int
    dose_gy: np.ndarray
    volume_pct: np.ndarray
    mean_gy: float


def _dose_factor(units: str) -> float:
    return {"GY": 1.0, "CGY": 0.01}.get(units.upper(), math.nan)


def read_tps_curve(item: Dataset) -> TPSCurve | None:
    """Parse one DVHSequence item; None when it cannot be turned into a Gy / % curve."""
    refs = getattr(item, "DVHReferencedROISequence", None) or []
    if not refs or "DVHData" not in item:
        return None
    factor = _dose_factor(str(getattr(item, "DoseUnits", "GY")))
    if math.isnan(factor):
        return None
    scaling = float(getattr(item, "DVHDoseScaling", 1.0) or 1.0) * factor
    data = np.asarray([float(v) for v in item.DVHData], dtype=float)
    widths, volumes = data[0::2] * scaling, data[1::2]
    if str(getattr(item, "DVHType", "CUMULATIVE")).upper() == "DIFFERENTIAL":
        volumes = np.cumsum(volumes[::-1])[::-1]
    edges = np.concatenate([[0.0], np.cumsum(widths)[:-1]])  # lower edge of each bin
    total = volumes[0] if volumes.size else 0.0
    if total <= 0:
        return None
    mean = getattr(item, "DVHMeanDose", None)
    return TPSCurve(roi_number=int(refs[0].ReferencedROINumber), dose_gy=edges,
                    volume_pct=100.0 * volumes / total,
                    mean_gy=float(mean) * factor if mean not in (None, "") else math.nan)


def compare(tps: TPSCurve, computed: RoiDVH) -> dict[str, Any]:
    """Max |ΔV| (% of ROI) over the TPS dose points and ΔDmean (computed − TPS, Gy)."""
    covered = computed.covered_cc
    if covered > 0:
        ours = 100.0 * np.interp(tps.dose_gy, computed.dvh.doses, computed.dvh.volume_cc,
                                 right=0.0) / covered
        dv = float(np.max(np.abs(ours - tps.volume_pct)))
    else:
        dv = math.nan
    return {"roi_number": computed.roi_number, "roi_name": computed.roi_name,
            "max_volume_diff_pct": dv, "tps_dmean_gy": tps.mean_gy,
            "dmean_diff_gy": computed.dmean_gy - tps.mean_gy}


def compare_with_tps(dvh_sequence: list[Dataset], results: list[RoiDVH]) -> list[dict[str, Any]]:
    """One comparison per TPS DVH whose ROI was computed."""
    by_number = {r.roi_number: r for r in results}
    out = []
    for item in dvh_sequence:
        curve = read_tps_curve(item)
        if curve is not None and curve.roi_number in by_number:
            out.append(compare(curve, by_number[curve.roi_number]))
    return out
