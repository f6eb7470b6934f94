"""Do a course's references close? The verdict behind 'ready' and behind QC's 'what was missing'.

A course is complete when there is a planning CT, every CT slice the RTSTRUCT contours
reference is present, the CT slices are evenly spaced along the slice normal with no gap, every
RTPLAN's structure set and every RTDOSE's plan are present, and every RT object lies on the
planning CT's FrameOfReferenceUID (one on another frame means its own CT never arrived, and
no DVH can be computed). Each failed check becomes one line a physicist can act on.

What DICOM only hints at does not hold a course back but is said: a CT series with fewer slices
than its ImagesInAcquisition (or NumberOfSlices) announces, or structures reaching beyond the
CT's first or last slice, make the course "possibly incomplete" (``possibly_incomplete``).
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
    #: hints that the course may lack data although its references close
    possibly_incomplete: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"complete": self.complete, "missing": self.missing,
                "slice_spacing_mm": self.slice_spacing_mm,
                "possibly_incomplete": self.possibly_incomplete}


def announced_count_hints(n_slices: int, announced: dict[str, list[int]]) -> list[str]:
    """'possibly incomplete' lines when a series holds fewer slices than an attribute
    (ImagesInAcquisition, NumberOfSlices) announces; ``announced`` maps the attribute to the
    values its slices carry."""
    out = []
    for attr, values in announced.items():
        expected = max((int(v) for v in values if v not in (None, "") and int(v) > 0),
                       default=0)
        if expected > n_slices:
            out.append(f"possibly incomplete: the CT series has {n_slices} slice(s), its "
                       f"{attr} says {expected}")
    return out


def extent_hint(ct_z: tuple[float, float], structure_z: tuple[float, float],
                spacing: float | None) -> list[str]:
    """'possibly incomplete' when contours reach more than a slice beyond the CT's ends."""
    tol = (spacing or 0.0) + 1e-3
    lo, hi = ct_z
    slo, shi = structure_z
    if slo < lo - tol or shi > hi + tol:
        return [f"possibly incomplete: structures span z {slo:.1f} to {shi:.1f} mm, the CT "
                f"only {lo:.1f} to {hi:.1f} mm"]
    return []


def frame_of_reference_problems(ct_frames: set[str],
                                rt: list[tuple[str, str, str]]) -> list[str]:
    """One line per RT object (modality, SOP Instance UID, FrameOfReferenceUID) on another
    frame of reference than the planning CT."""
    ct_frames = {f for f in ct_frames if f}
    if not ct_frames:
        return []
    shown = ", ".join(sorted(ct_frames))
    return [f"{modality} {uid} is on FrameOfReferenceUID {frame}, not the planning CT's "
            f"({shown}): its own CT was not received or it belongs to another course"
            for modality, uid, frame in rt if frame and frame not in ct_frames]


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
    if ct:
        missing.extend(frame_of_reference_problems(
            {m.frame_of_reference_uid for m in ct},
            [(m.modality, m.sop_instance_uid, _member_frame(m)) for m in course.members
             if m.modality in ("RTSTRUCT", "RTPLAN", "RTDOSE")]))
    hints: list[str] = []
    if ct:
        announced = {a: [m.attrs[a] for m in ct if m.attrs.get(a) not in (None, "")]
                     for a in ("ImagesInAcquisition", "NumberOfSlices")}
        by_series: dict[str, int] = {}
        for m in ct:
            by_series[m.series_uid] = by_series.get(m.series_uid, 0) + 1
        hints = announced_count_hints(max(by_series.values()), announced)
    return Verdict(complete=not missing, missing=missing, slice_spacing_mm=spacing,
                   possibly_incomplete=hints)


def _member_frame(m) -> str:
    """An RTSTRUCT's frame is the one its ReferencedFrameOfReferenceSequence names."""
    if m.modality == "RTSTRUCT":
        return (m.refs_of("frame_of_reference") or [m.frame_of_reference_uid])[0]
    return m.frame_of_reference_uid
