"""Any RTSTRUCT back to boolean masks on a given CT grid (for DVH, radiomics and QC).

Each CLOSED_PLANAR contour is placed on the CT slice nearest to its plane (within half a slice
spacing; contours between or beyond the slices are reported, not guessed), its points are
mapped to continuous (row, column) indices through the CT's own affine, and the pixels whose
centres lie inside are toggled, so all contours of one ROI on one slice combine by the even-odd
rule (outer contours, holes, islands in holes, keyhole contours alike).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from rtnode.rtstruct.contours import polygons_to_mask
from rtnode.rtstruct.geometry import CTGrid

log = logging.getLogger(__name__)

#: a contour's points may stray this far (fraction of the slice spacing) from its plane
PLANE_TOLERANCE = 0.5


CONTOUR_DATA = Tag(0x30060050)


def contour_points(contour: Dataset) -> np.ndarray:
    """(N, 3) ContourData in mm, parsed straight from the encoded bytes when the element has
    not been decoded yet (much faster than one pydicom DS object per coordinate)."""
    elem = contour.get_item(CONTOUR_DATA)
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        text = elem.value.strip(b" \0")
        values = np.array(text.split(b"\\"), dtype=float) if text else np.zeros(0)
    else:
        values = np.asarray(contour.ContourData, dtype=float)
    if values.size % 3:
        raise RTStructError(f"ContourData holds {values.size} numbers, not x/y/z triplets")
    return values.reshape(-1, 3)


class RTStructError(ValueError):
    """The RTSTRUCT cannot be laid on the CT (other frame of reference, unknown ROI...)."""


@dataclass
class ReadReport:
    """What did not make it onto the grid, per ROI name: contours off the slice stack and
    contour types other than CLOSED_PLANAR."""

    skipped: dict[str, int] = field(default_factory=dict)


def roi_names(rtstruct: Dataset) -> dict[int, str]:
    """ROINumber → ROIName of the StructureSetROISequence."""
    return {int(r.ROINumber): str(r.get("ROIName", f"ROI_{r.ROINumber}"))
            for r in rtstruct.get("StructureSetROISequence", [])}


def read_rtstruct_masks(rtstruct: Dataset | Path | str, ct_datasets: Sequence[Dataset],
                        names: Iterable[str] | None = None, *,
                        check_frame_of_reference: bool = True,
                        report: ReadReport | None = None) -> dict[str, np.ndarray]:
    """ROI name → bool array shaped ``CTGrid.from_datasets(ct_datasets).shape``.

    ``names`` limits the ROIs read (an unknown name is an error); ROIs without contours give
    empty masks. With ``check_frame_of_reference`` a structure set on another
    FrameOfReferenceUID than the CT is refused rather than laid on the wrong anatomy.
    """
    if not isinstance(rtstruct, Dataset):
        rtstruct = pydicom.dcmread(rtstruct)
    grid = CTGrid.from_datasets(ct_datasets)
    report = report if report is not None else ReadReport()
    numbers = roi_names(rtstruct)
    wanted = set(numbers.values()) if names is None else set(names)
    unknown = wanted - set(numbers.values())
    if unknown:
        raise RTStructError(f"ROI(s) {sorted(unknown)} not in the structure set; it has "
                            f"{sorted(numbers.values())}")
    if check_frame_of_reference:
        for r in rtstruct.get("StructureSetROISequence", []):
            ref = str(r.get("ReferencedFrameOfReferenceUID", ""))
            if numbers[int(r.ROINumber)] in wanted and ref and grid.frame_of_reference_uid \
                    and ref != grid.frame_of_reference_uid:
                raise RTStructError(
                    f"ROI {numbers[int(r.ROINumber)]!r} is on FrameOfReferenceUID {ref}, the CT "
                    f"on {grid.frame_of_reference_uid}: not the same patient coordinate system")
    masks = {name: np.zeros(grid.shape, dtype=bool)
             for num, name in numbers.items() if name in wanted}
    tol = PLANE_TOLERANCE
    for item in rtstruct.get("ROIContourSequence", []):
        name = numbers.get(int(item.ReferencedROINumber))
        if name not in masks:
            continue
        per_slice: dict[int, list[np.ndarray]] = {}
        for contour in item.get("ContourSequence", []):
            if contour.get("ContourGeometricType", "") != "CLOSED_PLANAR" \
                    or "ContourData" not in contour:
                report.skipped[name] = report.skipped.get(name, 0) + 1
                continue
            pts = contour_points(contour)
            idx = grid.patient_to_index(pts)
            k = int(np.rint(np.median(idx[:, 0])))
            if not 0 <= k < grid.shape[0] or np.abs(idx[:, 0] - k).max() > tol:
                report.skipped[name] = report.skipped.get(name, 0) + 1
                continue
            per_slice.setdefault(k, []).append(idx[:, 1:])
        for k, polys in per_slice.items():
            masks[name][k] = polygons_to_mask(polys, grid.shape[1:])
    for name, n in report.skipped.items():
        log.warning("ROI %r: %d contour(s) not on the CT slice stack or not CLOSED_PLANAR", name, n)
    return masks
