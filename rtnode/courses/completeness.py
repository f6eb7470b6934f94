"""Do a course's references close? The verdict behind 'ready' and behind QC's 'what was missing'.

A course is complete when there is a planning CT, every CT slice the RTSTRUCT contours
reference is present, the CT slices are evenly spaced along the slice normal with no gap, every
RTPLAN's structure set and every RTDOSE's plan are present. Each failed check becomes one line a
physicist can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rtnode.courses.grouping import CourseDraft

#: relative spacing deviation tolerated before slices count as unevenly spaced
SPACING_TOLERANCE = 0.05


@dataclass
class Verdict:
    complete: bool
    missing: list[str] = field(default_factory=list)
    slice_spacing_mm: float | None = None

    def as_json(self) -> dict:
        return {"complete": self.complete, "missing": self.missing,
                "slice_spacing_mm": self.slice_spacing_mm}


def slice_gaps(positions: list[list[float]], orientation: list[float]) -> tuple[float | None,
                                                                                list[str]]:
    """Median spacing along the normal and a description of every gap or irregular step."""
    if len(positions) < 2:
        return None, []
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    z = np.sort(np.asarray(positions, float) @ normal)
    steps = np.diff(z)
    if np.any(steps <= 1e-6):
        return None, ["CT has two slices at the same position"]
    spacing = float(np.median(steps))
    problems = []
    for i in np.nonzero(np.abs(steps - spacing) > SPACING_TOLERANCE * spacing)[0]:
        n = int(round(steps[i] / spacing)) - 1
        what = f"{n} missing CT slice(s)" if n >= 1 else "an irregular CT slice step"
        problems.append(f"{what} between {z[i]:.2f} and {z[i + 1]:.2f} mm "
                        f"(spacing {spacing:.2f} mm)")
    return spacing, problems


def judge(course: CourseDraft) -> Verdict:
    missing: list[str] = []
    ct = course.of("CT")
    if not ct:
        series = course.anchor_series_uid or "?"
        missing.append(f"no planning CT received (RT objects reference series {series})")
    have = {m.sop_instance_uid for m in course.members}
    for rs in course.of("RTSTRUCT"):
        absent = [u for u in rs.refs_of("image") if u not in have]
        if absent and ct:
            missing.append(f"{len(absent)} CT slice(s) referenced by RTSTRUCT "
                           f"{rs.sop_instance_uid} not received")
    for plan in course.of("RTPLAN"):
        for uid in plan.refs_of("rtstruct"):
            if uid not in have:
                missing.append(f"RTPLAN {plan.sop_instance_uid} references structure set {uid}, "
                               "not received")
    for dose in course.of("RTDOSE"):
        for uid in dose.refs_of("rtplan"):
            if uid not in have:
                missing.append(f"RTDOSE {dose.sop_instance_uid} references plan {uid}, "
                               "not received")
    spacing = None
    positioned = [m for m in ct if m.attrs.get("ImagePositionPatient")]
    if positioned:
        orientation = positioned[0].attrs.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0]
        spacing, gaps = slice_gaps([m.attrs["ImagePositionPatient"] for m in positioned],
                                   orientation)
        missing.extend(gaps)
    return Verdict(complete=not missing, missing=missing, slice_spacing_mm=spacing)
