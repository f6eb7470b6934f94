"""The CT grid in patient coordinates, taken from the CT's own header.

Every mask in rtnode lives on this grid: an array shaped (slices, rows, columns) whose slices are
sorted along the slice normal (row cosine x column cosine), the same order and axes as
``SimpleITK.GetArrayFromImage`` of the series. Nothing is flipped to a canonical orientation: the
affine built from ImagePositionPatient, ImageOrientationPatient and PixelSpacing carries every
index to patient millimetres, so head-first, feet-first and oblique CTs need no special cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset

#: largest disagreement (mm, or cosine) tolerated between slices of one series
GEOMETRY_TOLERANCE = 1e-3


class CTGeometryError(ValueError):
    """The CT slices do not form one regular image grid."""


@dataclass(frozen=True)
class CTGrid:
    """Voxel ↔ patient mapping of one CT series, plus what an RTSTRUCT must reference.

    ``slice_offsets`` are the positions of the sorted slices along ``normal`` relative to the
    first one (mm); they need not be evenly spaced.
    """

    origin: np.ndarray          # IPP of the first sorted slice
    row_cosine: np.ndarray      # direction of increasing column index
    column_cosine: np.ndarray   # direction of increasing row index
    normal: np.ndarray          # direction of increasing slice index
    pixel_spacing: tuple[float, float]  # (between rows, between columns), DICOM order
    slice_offsets: np.ndarray
    rows: int
    columns: int
    sop_class_uids: tuple[str, ...]
    sop_instance_uids: tuple[str, ...]
    frame_of_reference_uid: str
    series_instance_uid: str
    study_instance_uid: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.slice_offsets), self.rows, self.columns)

    @property
    def slice_spacing(self) -> float:
        """Median distance between neighbouring slices (1 mm for a single slice)."""
        if len(self.slice_offsets) < 2:
            return 1.0
        return float(np.median(np.diff(self.slice_offsets)))

    @property
    def is_evenly_spaced(self) -> bool:
        """Slice gaps all within 1 % of the median (what an image volume assumes)."""
        if len(self.slice_offsets) < 3:
            return True
        gaps = np.diff(self.slice_offsets)
        return bool(np.abs(gaps - self.slice_spacing).max() <= 0.01 * self.slice_spacing)

    @property
    def voxel_volume_mm3(self) -> float:
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset]) -> "CTGrid":
        """Sort the slices along their normal and check they share one plane orientation,
        pixel spacing, matrix and frame of reference; the error names what differs."""
        if not datasets:
            raise CTGeometryError("no CT slices given")
        first = datasets[0]
        for attr in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                     "Rows", "Columns"):
            missing = [i for i, d in enumerate(datasets) if attr not in d]
            if missing:
                raise CTGeometryError(f"{len(missing)} CT slice(s) lack {attr} "
                                      f"(first: SOPInstanceUID {_uid(datasets[missing[0]])})")
        iop = np.asarray(first.ImageOrientationPatient, dtype=float)
        row, col = iop[:3], iop[3:]
        if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 \
                or abs(float(row @ col)) > 1e-2:
            raise CTGeometryError(f"ImageOrientationPatient {list(iop)} is not two orthogonal "
                                  f"unit vectors")
        row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
        normal = np.cross(row, col)
        spacing = tuple(float(v) for v in first.PixelSpacing)
        for d in datasets[1:]:
            if np.abs(np.asarray(d.ImageOrientationPatient, dtype=float) - iop).max() \
                    > GEOMETRY_TOLERANCE:
                raise CTGeometryError(f"slice {_uid(d)} has another ImageOrientationPatient: "
                                      f"the series is not one image stack")
            if np.abs(np.asarray(d.PixelSpacing, dtype=float) - spacing).max() \
                    > GEOMETRY_TOLERANCE or (d.Rows, d.Columns) != (first.Rows, first.Columns):
                raise CTGeometryError(f"slice {_uid(d)} has another PixelSpacing or matrix size")
        ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
        along = ipp @ normal
        order = np.argsort(along, kind="stable")
        along = along[order]
        if len(along) > 1 and np.min(np.diff(along)) < GEOMETRY_TOLERANCE:
            raise CTGeometryError("two CT slices share one position along the slice normal "
                                  "(duplicate slices, or two series mixed)")
        origin = ipp[order[0]]
        # in-plane drift of IPP between slices would mean a sheared (gantry-tilted) stack
        drift = (ipp[order] - origin) - np.outer(along - along[0], normal)
        if np.abs(drift).max(initial=0.0) > max(0.05, 0.05 * max(spacing)):
            raise CTGeometryError("ImagePositionPatient moves within the image plane from slice "
                                  "to slice (gantry tilt?); resample the CT before use")
        sorted_ds = [datasets[i] for i in order]
        fors = {str(d.get("FrameOfReferenceUID", "")) for d in sorted_ds}
        if len(fors) > 1:
            raise CTGeometryError(f"CT slices carry {len(fors)} FrameOfReferenceUIDs")
        return cls(origin=origin, row_cosine=row, column_cosine=col, normal=normal,
                   pixel_spacing=(spacing[0], spacing[1]), slice_offsets=along - along[0],
                   rows=int(first.Rows), columns=int(first.Columns),
                   sop_class_uids=tuple(str(d.SOPClassUID) for d in sorted_ds),
                   sop_instance_uids=tuple(str(d.SOPInstanceUID) for d in sorted_ds),
                   frame_of_reference_uid=fors.pop(),
                   series_instance_uid=str(first.get("SeriesInstanceUID", "")),
                   study_instance_uid=str(first.get("StudyInstanceUID", "")))

    def index_to_patient(self, k: np.ndarray | float, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Patient x, y, z (mm) of continuous indices (slice k, row r, column c) → (..., 3).

        k may be fractional; it interpolates between slice offsets."""
        k = np.asarray(k, dtype=float)
        offset = np.interp(k, np.arange(len(self.slice_offsets)), self.slice_offsets,
                           left=None, right=None) if len(self.slice_offsets) > 1 \
            else np.zeros_like(k)
        r = np.asarray(r, dtype=float)
        c = np.asarray(c, dtype=float)
        return (self.origin
                + np.multiply.outer(c * self.pixel_spacing[1], self.row_cosine)
                + np.multiply.outer(r * self.pixel_spacing[0], self.column_cosine)
                + np.multiply.outer(np.broadcast_to(offset, r.shape), self.normal))

    def patient_to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous (k, r, c) of patient points (N, 3); k is the fractional slice index."""
        d = np.asarray(points, dtype=float) - self.origin
        c = d @ self.row_cosine / self.pixel_spacing[1]
        r = d @ self.column_cosine / self.pixel_spacing[0]
        along = d @ self.normal
        if len(self.slice_offsets) > 1:
            k = np.interp(along, self.slice_offsets, np.arange(len(self.slice_offsets)))
            # np.interp clamps; extrapolate linearly so out-of-stack points stay out
            lo, hi = self.slice_offsets[0], self.slice_offsets[-1]
            k = np.where(along < lo, (along - lo) / self.slice_spacing, k)
            k = np.where(along > hi, len(self.slice_offsets) - 1 + (along - hi)
                         / self.slice_spacing, k)
        else:
            k = along / self.slice_spacing
        return np.column_stack([k, r, c])

    def slice_index_of(self, sop_instance_uid: str) -> int | None:
        try:
            return self.sop_instance_uids.index(sop_instance_uid)
        except ValueError:
            return None


def _uid(ds: Dataset) -> str:
    return str(ds.get("SOPInstanceUID", "?"))
