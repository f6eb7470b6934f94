"""Course-level verdicts: is the course complete (as the detector saw it and as the files
themselves tell), and did the checks that matter for this kind of course actually run?

"Fit for analysis" must never mean "nothing was looked at": an empty folder, a course without
its image series, or a planned course whose dose checks could not run is not fit, and says which
checks were missing and why.
"""

from __future__ import annotations

import numpy as np

from rtnode.courses.completeness import (announced_count_hints, extent_hint,
                                         frame_of_reference_problems)
from rtnode.qc.checks import Check, from_problems

#: checks every course needs (its image series), and those each kind of object brings along
NEEDED_ALWAYS = ("ct_orientation", "ct_slice_spacing", "ct_missing_slices")
NEEDED_WITH = {
    "RTSTRUCT": ("roi_contours", "roi_inside_image"),
    "RTDOSE": ("dose_units", "prescription", "dose_coverage"),
}


def _structure_z(course) -> tuple[float, float] | None:
    zs = [float(v) for sets in course.structure_sets.values() for ds in sets
          for roi in getattr(ds, "ROIContourSequence", None) or []
          for c in getattr(roi, "ContourSequence", None) or []
          for v in list(getattr(c, "ContourData", []))[2::3]]
    return (min(zs), max(zs)) if zs else None


def dataset_findings(course) -> tuple[list[str], list[str]]:
    """(missing, possibly incomplete) as the course's own files tell: RT objects on another
    FrameOfReferenceUID than the image series, fewer slices than ImagesInAcquisition or
    NumberOfSlices announce, structures reaching beyond the CT."""
    missing: list[str] = []
    hints: list[str] = []
    if not course.images:
        if course.structure_sets or course.doses or course.plans:
            missing.append("no image series: the RT objects' CT was not received")
        return missing, hints
    rt = [(str(ds.Modality), str(ds.SOPInstanceUID), _frame(ds))
          for ds in [*course.structure_sets.get("manual", []), *course.plans, *course.doses]]
    missing += frame_of_reference_problems(
        {str(getattr(d, "FrameOfReferenceUID", "") or "") for d in course.images}, rt)
    announced = {a: [getattr(d, a) for d in course.images if getattr(d, a, None)
                     not in (None, "")] for a in ("ImagesInAcquisition", "NumberOfSlices")}
    hints += announced_count_hints(len(course.images), announced)
    extent = _structure_z(course)
    if extent is not None:
        z = np.asarray([float(d.ImagePositionPatient[2]) for d in course.images])
        spacing = float(np.median(np.abs(np.diff(np.sort(z))))) if len(z) > 1 else None
        hints += extent_hint((float(z.min()), float(z.max())), extent, spacing)
    return missing, hints


def _frame(ds) -> str:
    uid = str(getattr(ds, "FrameOfReferenceUID", "") or "")
    if not uid:
        refs = getattr(ds, "ReferencedFrameOfReferenceSequence", None) or []
        uid = str(getattr(refs[0], "FrameOfReferenceUID", "") or "") if refs else ""
    return uid


def completeness(course) -> Check:
    """The course detector's verdict (when the course ran on the node) joined with what the
    files tell; RT objects on another frame of reference fail (no DVH can be right)."""
    title = "Course completeness"
    missing, hints = dataset_findings(course)
    problems: list[tuple[str, str]] = []
    source = "files"
    if course.verdict is not None:
        source = "course detector and files"
        for line in course.verdict.get("missing") or []:
            if line not in missing:
                missing.append(line)
        for line in course.verdict.get("possibly_incomplete") or []:
            if line not in hints:
                hints.append(line)
        if not course.verdict.get("complete", True) and not missing:
            problems.append(("warn", "the course ran incomplete after max-wait"))
    for line in missing:
        problems.append(("fail" if "FrameOfReferenceUID" in line else "warn",
                         f"incomplete: {line}"))
    problems += [("warn", line) for line in hints]
    if not course.images and not (course.structure_sets or course.doses or course.plans):
        return Check("course_completeness", title, "skip", "no DICOM objects to judge")
    return from_problems("course_completeness", title, problems,
                         f"complete (judged from the {source})",
                         [{"missing": missing, "possibly_incomplete": hints}]
                         if problems else [])


def required(course, checks: list[Check], expected: set[str] = frozenset()) -> Check:
    """Fails when a check that matters for this course was skipped: the image series' checks
    always, the structure checks with an RTSTRUCT, the dose checks with an RTDOSE — or with
    what the course's rule expects (``expected`` modalities) even when it is absent."""
    title = "The checks that matter for this course ran"
    present = set(expected)
    if course.structure_sets:
        present.add("RTSTRUCT")
    if course.doses:
        present.add("RTDOSE")
    needed = list(NEEDED_ALWAYS)
    for modality in ("RTSTRUCT", "RTDOSE"):
        if modality in present:
            needed += NEEDED_WITH[modality]
    by_id = {c.id: c for c in checks}
    not_run = [f"{i} ({by_id[i].reason})" for i in needed
               if i in by_id and by_id[i].status == "skip"]
    kind = " + ".join(["image"] + sorted(present))
    problems = [("fail", f"not assessed: {'; '.join(not_run)}")] if not_run else []
    return from_problems("required_checks", title, problems,
                         f"all {len(needed)} checks needed for this course ({kind}) ran",
                         [{"needed": needed, "course_kind": kind}])
