"""CT geometry: one orientation, uniform slice spacing, no missing slices."""

from __future__ import annotations

import numpy as np

from rtnode.qc.checks import Check, from_problems, skipped
from rtnode.qc.course import QCCourse
from rtnode.radiomics.images import slice_offsets

AXIAL = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def is_axial(iop) -> bool:
    """Rows along ±x and columns along ±y: an axial scan in any patient position (HFS writes
    1,0,0,0,1,0; FFS -1,0,0,0,1,0; HFP -1,0,0,0,-1,0 …)."""
    v = np.abs(np.asarray(iop, float))
    return bool(np.allclose(v, AXIAL, atol=1e-3))


def _gaps(course: QCCourse) -> np.ndarray:
    return np.diff(slice_offsets(course.images))


def missing_slices(course: QCCourse, tol: float) -> Check:
    title = "CT: no missing slices"
    if len(course.images) < 2:
        return skipped("ct_missing_slices", title, "fewer than two image slices")
    gaps = _gaps(course)
    step = float(np.min(gaps))
    problems = []
    details = []
    for k, g in enumerate(gaps):
        n = int(round(g / step)) - 1
        if n >= 1 and abs(g - (n + 1) * step) <= max(tol, 0.05 * step):
            z = float(course.images[k].ImagePositionPatient[2])
            details.append({"after_slice": k, "at_z_mm": z, "missing": n})
    if details:
        total = sum(d["missing"] for d in details)
        where = ", ".join(f"after z={d['at_z_mm']:g} mm" for d in details[:5])
        problems.append(("fail", f"{total} slice(s) missing in the {step:g} mm stack ({where})"))
    return from_problems("ct_missing_slices", title, problems,
                         f"{len(course.images)} contiguous slices", details)


def slice_spacing(course: QCCourse, tol: float) -> Check:
    """Spacing is uniform when every gap is the base step (whole missing slices are counted by
    the missing-slices check, not here)."""
    title = "CT: uniform slice spacing"
    if len(course.images) < 2:
        return skipped("ct_slice_spacing", title, "fewer than two image slices")
    gaps = _gaps(course)
    step = float(np.min(gaps))
    if step <= tol:
        return from_problems("ct_slice_spacing", title,
                             [("fail", "two slices share one position (duplicates)")], "")
    multiples = gaps / step
    off = np.abs(multiples - np.round(multiples)) * step > tol
    problems = []
    if off.any():
        problems.append(("fail", f"{int(off.sum())} irregular gap(s): spacing ranges "
                                 f"{gaps.min():g}-{gaps.max():g} mm"))
    thickness = {round(float(getattr(d, "SliceThickness", 0) or 0), 3) for d in course.images}
    if len(thickness) > 1:
        problems.append(("warn", f"SliceThickness varies: {sorted(thickness)} mm"))
    return from_problems("ct_slice_spacing", title, problems, f"{step:g} mm between slices")


def orientation(course: QCCourse) -> Check:
    title = "CT: orientation"
    if not course.images:
        return skipped("ct_orientation", title, "no image series")
    iops = {tuple(np.round(np.asarray(d.ImageOrientationPatient, float), 4))
            for d in course.images}
    positions = {str(getattr(d, "PatientPosition", "") or "") for d in course.images}
    problems = []
    if len(iops) > 1:
        problems.append(("fail", f"{len(iops)} different ImageOrientationPatient in one series"))
    elif not is_axial(next(iter(iops))):
        problems.append(("warn", f"not axial (oblique or another plane): "
                                 f"ImageOrientationPatient {list(next(iter(iops)))}"))
    if len(positions) > 1:
        problems.append(("fail", f"PatientPosition differs between slices: {sorted(positions)}"))
    return from_problems("ct_orientation", title, problems,
                         f"axial, PatientPosition {', '.join(sorted(positions)) or 'unset'}")
