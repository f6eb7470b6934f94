"""RTSTRUCT: references resolve to present image slices, no empty or degenerate ROI, every
contour inside the image volume."""

from __future__ import annotations

import numpy as np

from rtnode.dvh.structures import polygon_area
from rtnode.qc.checks import Check, from_problems, skipped
from rtnode.qc.course import QCCourse
from rtnode.radiomics.images import slice_offsets

#: contours with less area than this (mm²) are degenerate
MIN_AREA_MM2 = 0.01


def _sets(course: QCCourse):
    for source, sets in course.structure_sets.items():
        for ds in sets:
            yield source, ds


def _roi_names(ds) -> dict[int, str]:
    return {int(i.ROINumber): str(getattr(i, "ROIName", "") or f"ROI{i.ROINumber}")
            for i in getattr(ds, "StructureSetROISequence", None) or []}


def references(course: QCCourse) -> Check:
    """Judges the received (manual) structure sets only: the auto-segmentation was made on the
    course's own CT, so its references prove nothing about what was sent."""
    title = "RTSTRUCT references present image slices"
    if not course.structure_sets.get("manual"):
        return skipped("rtstruct_references", title,
                       "no received RTSTRUCT" + (" (the auto-segmentation references the CT it "
                                                 "was made on)"
                                                 if course.structure_sets.get("auto") else ""))
    present = {str(d.SOPInstanceUID) for d in course.images}
    problems, details = [], []
    n_referenced = 0
    for source, ds in _sets(course):
        if source != "manual":
            continue
        referenced: set[str] = set()
        for roi in getattr(ds, "ROIContourSequence", None) or []:
            for contour in getattr(roi, "ContourSequence", None) or []:
                for img in getattr(contour, "ContourImageSequence", None) or []:
                    referenced.add(str(img.ReferencedSOPInstanceUID))
        for ref in getattr(ds, "ReferencedFrameOfReferenceSequence", None) or []:
            for study in getattr(ref, "RTReferencedStudySequence", None) or []:
                for series in getattr(study, "RTReferencedSeriesSequence", None) or []:
                    for img in getattr(series, "ContourImageSequence", None) or []:
                        referenced.add(str(img.ReferencedSOPInstanceUID))
        n_referenced += len(referenced)
        missing = sorted(referenced - present)
        if missing:
            problems.append(("fail", f"{source} RTSTRUCT references {len(missing)} image "
                                     f"slice(s) not in the course"))
            details.append({"source": source, "missing_sop_instance_uids": missing})
        image_for = {str(getattr(d, "FrameOfReferenceUID", "")) for d in course.images}
        struct_for = str(getattr(ds, "FrameOfReferenceUID", "") or "")
        if struct_for and image_for and struct_for not in image_for:
            problems.append(("fail", f"{source} RTSTRUCT is on another FrameOfReferenceUID "
                                     f"than the image series"))
    if not problems and not n_referenced:
        return skipped("rtstruct_references", title,
                       "the RTSTRUCT lists no referenced image slices to check")
    return from_problems("rtstruct_references", title, problems,
                         f"all {n_referenced} referenced slice(s) are present", details)


def contours(course: QCCourse) -> Check:
    title = "ROIs: no empty or degenerate contours"
    if not course.structure_sets:
        return skipped("roi_contours", title, "no RTSTRUCT")
    empty, degenerate = [], []
    for source, ds in _sets(course):
        names = _roi_names(ds)
        with_contours = set()
        for roi in getattr(ds, "ROIContourSequence", None) or []:
            name = names.get(int(getattr(roi, "ReferencedROINumber", -1)), "?")
            seq = getattr(roi, "ContourSequence", None) or []
            if seq:
                with_contours.add(name)
            bad = 0
            for c in seq:
                kind = str(getattr(c, "ContourGeometricType", "CLOSED_PLANAR"))
                pts = np.asarray([float(v) for v in getattr(c, "ContourData", [])]).reshape(-1, 3)
                if kind == "POINT":
                    continue
                if len(pts) < 3 or (kind == "CLOSED_PLANAR" and
                                    polygon_area(np.vstack([pts[:, :2], pts[:1, :2]]))
                                    < MIN_AREA_MM2):
                    bad += 1
            if bad:
                degenerate.append(f"{name} ({source}, {bad} contour(s))")
        empty += [f"{n} ({source})" for n in names.values() if n not in with_contours]
    if not any(_roi_names(ds) for _, ds in _sets(course)):
        return skipped("roi_contours", title, "the RTSTRUCT(s) define no ROI")
    problems = []
    if empty:
        problems.append(("warn", f"empty ROI(s): {', '.join(empty)}"))
    if degenerate:
        problems.append(("warn", f"degenerate contours (<3 points or no area): "
                                 f"{', '.join(degenerate)}"))
    return from_problems("roi_contours", title, problems, "every ROI has proper contours",
                         [{"empty": empty, "degenerate": degenerate}] if problems else [])


def inside_image(course: QCCourse) -> Check:
    """Every contour point inside the image volume (half a voxel beyond the edge centres)."""
    title = "ROIs inside the image volume"
    if not course.structure_sets or not course.images:
        return skipped("roi_inside_image", title, "no RTSTRUCT or no image series")
    # in-plane from the image grid, along the normal from the real slice positions (a series
    # with a missing slice is not a uniform grid; its extent is still first..last slice)
    img = course.image
    origin = np.asarray(img.GetOrigin())
    spacing = np.asarray(img.GetSpacing())
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    size = np.asarray(img.GetSize()).astype(float)
    offsets = slice_offsets(course.images)
    half = spacing[2] / 2
    size[2] = (offsets[-1] + half) / spacing[2] + 0.5  # so that hi[2] is the last slice + half
    lo, hi = -0.5 - 1e-3, size - 0.5 + 1e-3
    outside = []
    n_points = 0
    for source, ds in _sets(course):
        names = _roi_names(ds)
        for roi in getattr(ds, "ROIContourSequence", None) or []:
            name = names.get(int(getattr(roi, "ReferencedROINumber", -1)), "?")
            n_out = 0
            for c in getattr(roi, "ContourSequence", None) or []:
                pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
                n_points += len(pts)
                idx = ((pts - origin) @ direction) / spacing
                n_out += int(np.any((idx < lo) | (idx > hi), axis=1).sum())
            if n_out:
                outside.append(f"{name} ({source}, {n_out} point(s))")
    problems = [("fail", f"contour points outside the image: {', '.join(outside)}")] \
        if outside else []
    if not n_points:
        return skipped("roi_inside_image", title, "no contour points to check")
    return from_problems("roi_inside_image", title, problems,
                         f"all {n_points} contour point(s) are inside")
