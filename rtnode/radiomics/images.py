"""Image series of a course as a SimpleITK image, on the grid every mask of rtnode uses.

Slices are sorted along the slice normal (row cosine × column cosine) and the array is
(slices, rows, columns), the order of ``SimpleITK.GetArrayFromImage``; origin, spacing and
direction come from the DICOM header, so nothing is flipped and masks drawn in patient
coordinates land on the right voxels for head-first, feet-first and oblique series alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from rtnode.dicom.pixels import modality_values

IMAGE_MODALITIES = ("CT", "MR", "PT")


class ImageSeriesError(ValueError):
    """The slices cannot form one image volume; the message says why."""


def slice_normal(ds: Dataset) -> np.ndarray:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    return np.cross(iop[:3], iop[3:])


def sort_slices(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Slices of one series in increasing position along their normal."""
    if not datasets:
        raise ImageSeriesError("no image slices given")
    for ds in datasets:
        for attr in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if attr not in ds:
                raise ImageSeriesError(f"image slice {getattr(ds, 'SOPInstanceUID', '?')} lacks "
                                       f"{attr}")
    normal = slice_normal(datasets[0])
    return sorted(datasets, key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient,
                                                                    dtype=float), normal)))


def slice_offsets(datasets: Sequence[Dataset]) -> np.ndarray:
    """Positions (mm) of sorted slices along the normal, relative to the first."""
    normal = slice_normal(datasets[0])
    pos = np.array([np.dot(np.asarray(d.ImagePositionPatient, dtype=float), normal)
                    for d in datasets])
    return pos - pos[0]


def series_image(datasets: Sequence[Dataset]) -> sitk.Image:
    """A float32 image in modality units (HU for CT: RescaleSlope/Intercept applied).

    The slice spacing is the median gap between slices; a series with a missing slice still
    loads (QC reports the gap), its voxels beyond the gap being displaced by that much.
    """
    slices = sort_slices(datasets)
    first = slices[0]
    rows, cols = int(first.Rows), int(first.Columns)
    for d in slices:
        if (int(d.Rows), int(d.Columns)) != (rows, cols):
            raise ImageSeriesError(f"slice {d.SOPInstanceUID} is {d.Rows}x{d.Columns}, the "
                                   f"series is {rows}x{cols}")
    volume = np.empty((len(slices), rows, cols), dtype=np.float32)
    for k, d in enumerate(slices):  # compressed slices are decoded here (rtnode.dicom.pixels)
        volume[k] = modality_values(d)
    offsets = slice_offsets(slices)
    dz = float(np.median(np.diff(offsets))) if len(slices) > 1 else float(
        getattr(first, "SliceThickness", 1.0) or 1.0)
    if dz <= 0:
        raise ImageSeriesError("two slices share one position; the series holds duplicates")
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    spacing_rc = [float(v) for v in first.PixelSpacing]  # (between rows, between columns)
    image = sitk.GetImageFromArray(volume)
    image.SetOrigin(tuple(float(v) for v in first.ImagePositionPatient))
    image.SetSpacing((spacing_rc[1], spacing_rc[0], dz))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    return image


def read_series(paths: Sequence[Path]) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def find_course_files(folder: Path) -> dict[str, list[Path]]:
    """DICOM files under folder grouped by Modality (headers only are read)."""
    found: dict[str, list[Path]] = {}
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # not DICOM: ignored, a course folder may hold notes or outputs
            continue
        modality = str(getattr(ds, "Modality", "") or "")
        if modality:
            found.setdefault(modality, []).append(path)
    return found


def image_series_of(files: dict[str, list[Path]]) -> tuple[str, list[Dataset]]:
    """The planning image series of a course folder: (modality, datasets), CT first."""
    for modality in IMAGE_MODALITIES:
        if files.get(modality):
            datasets = read_series(files[modality])
            by_series: dict[str, list[Dataset]] = {}
            for d in datasets:
                by_series.setdefault(str(d.SeriesInstanceUID), []).append(d)
            largest = max(by_series.values(), key=len)
            return modality, largest
    raise ImageSeriesError("no CT, MR or PT image series found")
