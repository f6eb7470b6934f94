"""ROI contours from an RTSTRUCT: clean closed planar polygons grouped by axial plane, with slabs.

End-capping convention (see docs/DVH.md): every contour plane owns a slab that reaches half-way
to the neighbouring contour planes of the structure set, and half the local plane spacing beyond
the first and last plane of an ROI. An ROI's volume is therefore sum(area x slab thickness) —
the same volume a TPS reports for a stack of contours drawn on the CT slices, with no extra
interpolated caps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from rtnode.colours import display_colour
from rtnode.dvh.errors import DVHInputError

log = logging.getLogger(__name__)

#: contour planes closer than this (mm) are the same plane
PLANE_TOLERANCE_MM = 0.01
#: consecutive vertices closer than this (mm) are one vertex
POINT_TOLERANCE_MM = 1e-4
#: (3006,0050) Contour Data
CONTOUR_DATA = 0x30060050
#: RT ROI Interpreted Types that carry a prescription
TARGET_TYPES = frozenset({"PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME"})


@dataclass
class ContourPlane:
    """All polygons of one ROI on one axial plane and the slab [z_lo, z_hi] they stand for."""

    z: float
    polygons: list[np.ndarray]  # each (N, 2): x, y in mm, not closed (last != first)
    z_lo: float = float("nan")
    z_hi: float = float("nan")

    @property
    def thickness(self) -> float:
        return self.z_hi - self.z_lo


@dataclass
class StructureROI:
    """One ROI of the structure set: identity, usable contours and what had to be thrown away."""

    number: int
    name: str
    interpreted_type: str = ""
    generation_algorithm: str = ""
    frame_of_reference_uid: str = ""
    planes: list[ContourPlane] = field(default_factory=list)
    skipped_contours: int = 0
    warnings: list[str] = field(default_factory=list)
    display_color: tuple[int, int, int] | None = None  # ROIDisplayColor, 0..255

    @property
    def is_empty(self) -> bool:
        return not self.planes

    @property
    def is_target(self) -> bool:
        return self.interpreted_type.upper() in TARGET_TYPES

    def stack_volume_mm3(self) -> float:
        """Sum over planes of the even-odd polygon area times slab thickness (for properly nested
        contours, where the even-odd area is the alternating sum of nested areas)."""
        total = 0.0
        for plane in self.planes:
            total += even_odd_area(plane.polygons) * plane.thickness
        return total


def polygon_area(poly: np.ndarray) -> float:
    """Unsigned shoelace area in mm²."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:])
                           + x[-1] * y[0] - y[-1] * x[0]))


def even_odd_area(polygons: list[np.ndarray]) -> float:
    """Area of nested polygons under the even-odd rule: a polygon inside an odd number of others
    is a hole. Nesting is decided by the first vertex, enough for non-crossing contours."""
    if len(polygons) == 1:
        return polygon_area(polygons[0])
    from matplotlib.path import Path  # only for this bookkeeping, never per sample

    total = 0.0
    for i, poly in enumerate(polygons):
        depth = sum(1 for j, other in enumerate(polygons)
                    if j != i and Path(other).contains_point(poly[0]))
        total += polygon_area(poly) * (-1 if depth % 2 else 1)
    return total


def clean_contour(data: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Return (polygon (N, 2), z) checks passed, else (None, reason).

    Drops repeated consecutive vertices and a closing vertex equal to the first; a contour left
    with fewer than 3 distinct vertices, no area, or vertices off one axial plane is unusable.
    """
    if data.size == 0 or data.size % 3:
        return None, "ContourData length is not a multiple of 3"
    pts = data.reshape(-1, 3)
    if np.ptp(pts[:, 2]) > PLANE_TOLERANCE_MM:
        return None, "contour is not on one axial plane"
    xy = pts[:, :2]
    prev = np.concatenate([xy[-1:], xy[:-1]])
    keep = np.abs(xy - prev).max(axis=1) > POINT_TOLERANCE_MM
    if len(xy) and not keep.any():
        keep[0] = True
    xy = xy[keep]
    if len(xy) < 3:
        return None, "fewer than 3 distinct points"
    if polygon_area(xy) < 1e-6:
        return None, "contour encloses no area"
    return xy, ""


def contour_data(contour: Dataset) -> np.ndarray:
    """ContourData as float64, parsed straight from the encoded DS text when the element has
    not been decoded yet (a body contour has tens of thousands of values)."""
    if CONTOUR_DATA not in contour:
        return np.empty(0)
    elem = contour.get_item(CONTOUR_DATA)
    if isinstance(elem, RawDataElement):
        raw = elem.value or b""
        text = raw.decode("ascii", "replace").strip(" \x00") if isinstance(raw, bytes) else raw
        if not text:
            return np.empty(0)
        try:
            return np.array(text.split("\\"), dtype=float)
        except ValueError:
            pass  # fall through to pydicom's own decoding
    value = contour.ContourData
    return np.asarray(value if value is not None else [], dtype=float)


def read_rois(rtstruct: Dataset) -> list[StructureROI]:
    """Every ROI of the RTSTRUCT with its clean contours grouped by plane (slabs not yet set)."""
    if getattr(rtstruct, "Modality", "RTSTRUCT") != "RTSTRUCT":
        raise DVHInputError(f"expected an RTSTRUCT, got Modality {rtstruct.Modality}")
    default_for = str(getattr(rtstruct, "FrameOfReferenceUID", "") or "")
    if not default_for:
        refs = getattr(rtstruct, "ReferencedFrameOfReferenceSequence", None) or []
        if refs:
            default_for = str(getattr(refs[0], "FrameOfReferenceUID", "") or "")
    types = {int(o.ReferencedROINumber): str(getattr(o, "RTROIInterpretedType", "") or "")
             for o in getattr(rtstruct, "RTROIObservationsSequence", None) or []
             if "ReferencedROINumber" in o}
    contours = {int(c.ReferencedROINumber): c
                for c in getattr(rtstruct, "ROIContourSequence", None) or []
                if "ReferencedROINumber" in c}
    rois = []
    for item in getattr(rtstruct, "StructureSetROISequence", None) or []:
        number = int(item.ROINumber)
        roi = StructureROI(
            number=number, name=str(getattr(item, "ROIName", "") or f"ROI{number}"),
            interpreted_type=types.get(number, ""),
            generation_algorithm=str(getattr(item, "ROIGenerationAlgorithm", "") or ""),
            frame_of_reference_uid=str(getattr(item, "ReferencedFrameOfReferenceUID", "")
                                       or default_for),
            display_color=display_colour(getattr(contours.get(number), "ROIDisplayColor", None)))
        by_plane: dict[float, list[np.ndarray]] = {}
        reasons: dict[str, int] = {}
        roi_contour = contours.get(number)
        for contour in getattr(roi_contour, "ContourSequence", None) or []:
            kind = str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR"))
            if kind != "CLOSED_PLANAR":
                poly, reason = None, f"{kind} contour"
            else:
                data = contour_data(contour)
                poly, reason = clean_contour(data)
            if poly is None:
                roi.skipped_contours += 1
                reasons[reason] = reasons.get(reason, 0) + 1
                continue
            z = float(data[2::3].mean())
            key = round(z / PLANE_TOLERANCE_MM) * PLANE_TOLERANCE_MM
            by_plane.setdefault(key, []).append(poly)
        roi.planes = [ContourPlane(z=z, polygons=p) for z, p in sorted(by_plane.items())]
        for reason, n in reasons.items():
            msg = f"ROI {roi.name!r}: skipped {n} contour(s): {reason}"
            roi.warnings.append(msg)
            log.warning(msg)
        rois.append(roi)
    return rois


def snap_to_slices(rois: list[StructureROI], slice_positions: np.ndarray,
                   fallback_thickness_mm: float) -> None:
    """Put every contour plane on its nearest CT slice, as the RTSTRUCT reader (and so QC and
    radiomics) does; a plane beyond the stack's ends by more than half a slice spacing
    is skipped, counted and reported, never given a slab of its own.

    Contours that land on one slice are filled together (even-odd), like the reader's mask.
    """
    slices = np.unique(np.round(np.asarray(slice_positions, dtype=float) / PLANE_TOLERANCE_MM)
                       * PLANE_TOLERANCE_MM)
    if slices.size == 0:
        return
    if slices.size == 1:
        below = above = np.array([fallback_thickness_mm / 2.0])
    else:
        gaps = np.diff(slices) / 2.0
        below, above = np.concatenate([[gaps[0]], gaps]), np.concatenate([gaps, [gaps[-1]]])
    for roi in rois:
        merged: dict[int, list[np.ndarray]] = {}
        off = 0
        for plane in roi.planes:
            i = int(np.argmin(np.abs(slices - plane.z)))
            d = plane.z - slices[i]
            if d < -below[i] - PLANE_TOLERANCE_MM or d > above[i] + PLANE_TOLERANCE_MM:
                off += len(plane.polygons)
                continue
            merged.setdefault(i, []).extend(plane.polygons)
        if off:
            roi.skipped_contours += off
            msg = (f"ROI {roi.name!r}: skipped {off} contour(s): off the CT slice stack "
                   f"({slices[0]:g} to {slices[-1]:g} mm)")
            roi.warnings.append(msg)
            log.warning(msg)
        roi.planes = [ContourPlane(z=float(slices[i]), polygons=p)
                      for i, p in sorted(merged.items())]


def assign_slabs(rois: list[StructureROI], fallback_thickness_mm: float,
                 slice_positions: np.ndarray | None = None) -> None:
    """Give every contour plane its slab [z_lo, z_hi] (the end-capping convention).

    Slab boundaries lie half-way between neighbouring slice planes; the planes are the CT slice
    positions when given (contours are first moved onto their nearest slice, and those beyond
    the stack dropped: ``snap_to_slices``), else every plane on which any ROI of the structure set has a contour
    (the CT slices a TPS draws on). Outermost planes extend by half the adjacent spacing, so an
    ROI's first and last contour each stand for half a slice beyond their plane. A structure set
    with a single plane uses ``fallback_thickness_mm`` (the dose grid's frame spacing).
    """
    if slice_positions is not None and len(slice_positions):
        snap_to_slices(rois, slice_positions, fallback_thickness_mm)
    contour_z = np.concatenate([[p.z for p in r.planes] for r in rois if r.planes]
                               or [np.empty(0)])
    if contour_z.size == 0:
        return
    planes = contour_z if slice_positions is None else np.concatenate(
        [np.asarray(slice_positions, dtype=float), contour_z])
    all_z = np.unique(np.round(planes / PLANE_TOLERANCE_MM) * PLANE_TOLERANCE_MM)
    if all_z.size == 1:
        below = above = np.array([fallback_thickness_mm / 2.0])
    else:
        gaps = np.diff(all_z) / 2.0
        below = np.concatenate([[gaps[0]], gaps])
        above = np.concatenate([gaps, [gaps[-1]]])
    for roi in rois:
        for plane in roi.planes:
            i = int(np.argmin(np.abs(all_z - plane.z)))
            plane.z_lo = plane.z - below[i]
            plane.z_hi = plane.z + above[i]
