"""Check computed DVHs against the DVHs a TPS exported in the RTDOSE (DVHSequence).

A disagreement flags a wrong structure set, a different dose, or a TPS/engine difference worth
a physicist's look; the report gives, per TPS curve point, the volume difference (in % of the
ROI) at its dose and the dose difference at its volume, and the difference in mean dose. TPS
statistics are taken from the curve itself: the numbers written next to it (DVHMeanDose...) are
only checked against it, since some TPSs write them in % of the prescription.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from rtnode.dvh.engine import RoiDVH


#: a TPS statistic agrees with its own curve within this many Gy, or this fraction of it
STAT_TOLERANCE_GY = 0.05
STAT_TOLERANCE_REL = 0.02


@dataclass
class TPSCurve:
    """A DVHSequence item as a cumulative curve: volume_pct[k] receives >= dose_gy[k].

    ``mean_gy`` is always derived from the curve (checked by construction); the statistics the
    TPS wrote next to it (DVHMeanDose, DVHMaximumDose, DVHMinimumDose) are kept as written and
    judged against the curve in ``header_check``: Eclipse, for one, writes them in % of the
    prescription while DVHData is in Gy.
    """

    roi_number: int
    dose_gy: np.ndarray
    volume_pct: np.ndarray
    mean_gy: float
    max_gy: float = math.nan
    header_mean: float = math.nan  # DVHMeanDose as written
    header_max: float = math.nan  # DVHMaximumDose as written
    header_check: str = "absent"  # agrees | % of prescription | disagrees | absent

    @property
    def top_gy(self) -> float:
        return float(self.dose_gy[-1]) if self.dose_gy.size else 0.0


def _dose_factor(units: str) -> float:
    return {"GY": 1.0, "CGY": 0.01}.get(units.upper(), math.nan)


def _number(item: Dataset, keyword: str) -> float:
    value = getattr(item, keyword, None)
    try:
        return float(value) if value not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def curve_mean(edges: np.ndarray, widths: np.ndarray, volumes: np.ndarray) -> float:
    """Mean dose of a cumulative curve (Gy): the area under V(D)/V0, trapezoids between bin
    edges and down to 0 over the last bin."""
    upper = np.append(volumes[1:], 0.0)
    return float(np.sum(widths * 0.5 * (volumes + upper)) / volumes[0])


def _agrees(header: float, curve: float) -> bool:
    return abs(header - curve) <= max(STAT_TOLERANCE_GY, STAT_TOLERANCE_REL * abs(curve))


def judge_header(mean_header: float, mean_curve: float, prescription_gy: float | None) -> str:
    """How DVHMeanDose relates to the curve's mean: agrees, is in % of the prescription
    (Eclipse), disagrees, or is absent."""
    if not math.isfinite(mean_header):
        return "absent"
    if _agrees(mean_header, mean_curve):
        return "agrees"
    if prescription_gy and _agrees(mean_header * prescription_gy / 100.0, mean_curve):
        return "% of prescription"
    return "disagrees"


def read_tps_curve(item: Dataset, prescription_gy: float | None = None) -> TPSCurve | None:
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
    mean = curve_mean(edges, widths, volumes)
    reached = np.nonzero(volumes > 0)[0]
    top = float(edges[reached[-1]] + widths[reached[-1]]) if reached.size else 0.0
    header_mean = _number(item, "DVHMeanDose") * factor
    return TPSCurve(roi_number=int(refs[0].ReferencedROINumber), dose_gy=edges,
                    volume_pct=100.0 * volumes / total, mean_gy=mean, max_gy=top,
                    header_mean=header_mean,
                    header_max=_number(item, "DVHMaximumDose") * factor,
                    header_check=judge_header(header_mean, mean, prescription_gy))


def compare(tps: TPSCurve, computed: RoiDVH) -> dict[str, Any]:
    """Per TPS curve point: |ΔV| (% of ROI) at its dose, and |ΔD| (Gy) at its volume, the
    dose our curve gives that volume; the row holds the largest of each and both lists
    (``_dv``, ``_dd``, for tolerance checks that weigh volume against dose), and ΔDmean
    (computed − TPS curve mean, Gy)."""
    covered = computed.covered_cc
    row: dict[str, Any] = {
        "roi_number": computed.roi_number, "roi_name": computed.roi_name,
        "volume_cc": computed.volume_cc, "tps_dmean_gy": tps.mean_gy,
        "dmean_diff_gy": computed.dmean_gy - tps.mean_gy,
        "tps_dmean_header": tps.header_mean, "tps_header_check": tps.header_check,
        "max_volume_diff_pct": math.nan, "max_dose_diff_gy": math.nan, "_dv": [], "_dd": []}
    if covered > 0:
        doses, vol = computed.dvh.doses, computed.dvh.volume_cc
        ours = 100.0 * np.interp(tps.dose_gy, doses, vol, right=0.0) / covered
        dv = np.abs(ours - tps.volume_pct)
        # the dose at which our curve falls to each TPS volume (curves decrease with dose)
        at = np.interp(tps.volume_pct * covered / 100.0, vol[::-1], doses[::-1])
        dd = np.abs(at - tps.dose_gy)
        row.update(max_volume_diff_pct=float(dv.max()), max_dose_diff_gy=float(dd.max()),
                   _dv=dv.tolist(), _dd=dd.tolist())
    return row


def compare_with_tps(dvh_sequence: list[Dataset], results: list[RoiDVH],
                     prescription_gy: float | None = None) -> list[dict[str, Any]]:
    """One comparison per TPS DVH whose ROI was computed."""
    by_number = {r.roi_number: r for r in results}
    out = []
    for item in dvh_sequence:
        curve = read_tps_curve(item, prescription_gy)
        if curve is not None and curve.roi_number in by_number:
            out.append(compare(curve, by_number[curve.roi_number]))
    return out
