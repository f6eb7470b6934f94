"""Auto-segmentation sanity: organ volumes plausible, left/right organs on the patient's own
side, and agreement with the manual contours of the same organ (Dice, surface distance)."""

from __future__ import annotations

import re

import numpy as np

from rtnode.qc.checks import Check, from_problems, skipped
from rtnode.qc.config import QCConfig
from rtnode.qc.course import QCCourse
from rtnode.qc.surface import dice, hd95, mean_surface_distance
from rtnode.radiomics.selection import matches_any

LEFT = re.compile(r"(?i)(^|[_\s\-.])(l|lt|left)$|^(l|lt|left)[_\s\-.]")
RIGHT = re.compile(r"(?i)(^|[_\s\-.])(r|rt|right)$|^(r|rt|right)[_\s\-.]")
BODY = ("body", "external*", "outline", "skin")


def side(name: str) -> str | None:
    """'L', 'R' or None from the ROI name's laterality marker (Kidney_L, Left_Lung, Parotid R)."""
    if LEFT.search(name):
        return "L"
    if RIGHT.search(name):
        return "R"
    return None


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name).lower()


def _centroid_x(course: QCCourse, mask: np.ndarray) -> float:
    k, j, i = (float(v.mean()) for v in np.nonzero(mask))
    return float(course.image.TransformContinuousIndexToPhysicalPoint((i, j, k))[0])


def _midline_x(course: QCCourse) -> tuple[float, str]:
    for source in ("manual", "auto"):
        for name, mask in course.masks(source).items():
            if matches_any(name, BODY) and mask.any():
                return _centroid_x(course, mask), f"{name} centroid"
    size = course.image.GetSize()
    centre = course.image.TransformContinuousIndexToPhysicalPoint(
        tuple((s - 1) / 2 for s in size))
    return float(centre[0]), "image centre"


def volumes(course: QCCourse, config: QCConfig) -> Check:
    title = "Auto-segmentation: organ volumes plausible"
    auto = course.masks("auto") if course.structure_sets.get("auto") else {}
    if not auto:
        return skipped("autoseg_volumes", title, "no auto-segmentation")
    problems, details = [], []
    for name, mask in auto.items():
        for pattern, (lo, hi) in config.organ_volume_cc.items():
            if matches_any(name, [pattern]):
                cc = float(mask.sum()) * course.voxel_cc
                details.append({"roi_name": name, "volume_cc": cc, "range_cc": [lo, hi]})
                if not lo <= cc <= hi:
                    problems.append(("warn", f"{name} {cc:.0f} cc outside {lo:g}-{hi:g} cc"))
                break
    if not details:
        return skipped("autoseg_volumes", title, f"none of the {len(auto)} auto ROI(s) has a "
                                                 "plausible range in qc.organ_volume_cc")
    return from_problems("autoseg_volumes", title, problems,
                         f"{len(details)} organ(s) within their ranges", details)


def laterality(course: QCCourse) -> Check:
    """DICOM patient coordinates: +x points to the patient's left, whatever the position."""
    title = "Auto-segmentation: left/right organs on the correct side"
    auto = course.masks("auto") if course.structure_sets.get("auto") else {}
    if not auto:
        return skipped("autoseg_laterality", title, "no auto-segmentation")
    mid, ref = _midline_x(course)
    problems, details = [], []
    for name, mask in auto.items():
        s = side(name)
        if s is None or not mask.any():
            continue
        x = _centroid_x(course, mask)
        found = "L" if x > mid else "R"
        details.append({"roi_name": name, "expected": s, "centroid_x_mm": x, "midline_x_mm": mid})
        if found != s:
            problems.append(("fail", f"{name} lies on the patient's "
                                     f"{'left' if found == 'L' else 'right'} "
                                     f"(centroid x {x:.0f} mm, {ref} {mid:.0f} mm)"))
    if not details:
        return skipped("autoseg_laterality", title, f"none of the {len(auto)} auto ROI(s) "
                                                    "has a left/right marker in its name")
    return from_problems("autoseg_laterality", title, problems,
                         f"{len(details)} lateral organ(s) on their side", details)


def pairs(course: QCCourse, config: QCConfig) -> list[tuple[str, str]]:
    """(auto name, manual name) of ROIs that are the same organ by the name map or by name."""
    manual = list(course.masks("manual"))
    by_norm = {normalise(m): m for m in manual}
    mapped = {normalise(k): v for k, v in config.name_map.items()}
    out = []
    for a in course.masks("auto"):
        target = mapped.get(normalise(a))
        m = target if target in manual else by_norm.get(normalise(target or a))
        if m is not None:
            out.append((a, m))
    return out


def auto_vs_manual(course: QCCourse, config: QCConfig) -> Check:
    title = "Auto vs manual contours (Dice, surface distance)"
    if not course.structure_sets.get("auto") or not course.structure_sets.get("manual"):
        return skipped("auto_vs_manual", title, "needs both an auto and a manual structure set")
    matched = pairs(course, config)
    if not matched:
        return skipped("auto_vs_manual", title, "no auto ROI matches a manual ROI by name "
                                                 "(see qc.name_map)")
    sx, sy, sz = course.image.GetSpacing()
    problems, details = [], []
    for a, m in matched:
        ma, mm = course.masks("auto")[a], course.masks("manual")[m]
        if not ma.any() or not mm.any():
            continue
        d = dice(ma, mm)
        h = hd95(ma, mm, (sz, sy, sx))
        details.append({"auto": a, "manual": m, "dice": d, "hd95_mm": h,
                        "msd_mm": mean_surface_distance(ma, mm, (sz, sy, sx))})
        if d < config.dice_fail:
            problems.append(("fail", f"{a}: Dice {d:.2f} < {config.dice_fail:g}"))
        elif d < config.dice_warn:
            problems.append(("warn", f"{a}: Dice {d:.2f} < {config.dice_warn:g}"))
        elif h > config.hd95_warn_mm:
            problems.append(("warn", f"{a}: HD95 {h:.1f} mm > {config.hd95_warn_mm:g} mm"))
    if not details:
        return skipped("auto_vs_manual", title, f"{len(matched)} matching pair(s), but one "
                                                "side of each is empty")
    low = min((x["dice"] for x in details), default=float("nan"))
    return from_problems("auto_vs_manual", title, problems,
                         f"{len(details)} pair(s), lowest Dice {low:.2f}", details)
