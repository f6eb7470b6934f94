"""A CT series (folder, file list or datasets) as one SimpleITK image with its true geometry.

The image is built from the same CTGrid the RTSTRUCT writer uses — slices sorted along the
normal, direction columns = row cosine, column cosine, normal — so a label array predicted on it
(``GetArrayFromImage``) is directly the mask array ``write_rtstruct`` expects, with no
reorientation step in between that could silently flip a side.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from rtnode.dicom.pixels import modality_values
from rtnode.rtstruct.geometry import CTGrid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

log = logging.getLogger(__name__)


class CTSeriesError(ValueError):
    """No usable CT series where one was expected."""


def read_ct_folder(folder: Path | str, series_uid: str | None = None) -> list[Dataset]:
    """Every CT Image Storage instance under folder (recursively), of one series: the one
    named, or the only one there (several series: the error lists them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CTSeriesError(f"{folder} is not a folder")
    series: dict[str, list[Dataset]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if str(ds.get("SOPClassUID", "")) == ENHANCED_CT_STORAGE:
            raise CTSeriesError(f"{path}: Enhanced CT (multi-frame) is not supported; "
                                f"send the CT as single-frame CT Image Storage")
        if str(ds.get("SOPClassUID", "")) == CT_IMAGE_STORAGE:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if not series:
        raise CTSeriesError(f"no CT Image Storage files under {folder}")
    if series_uid is not None:
        if series_uid not in series:
            raise CTSeriesError(f"series {series_uid} not under {folder}; found {sorted(series)}")
        return series[series_uid]
    if len(series) > 1:
        listing = ", ".join(f"{uid} ({len(v)} slices)" for uid, v in series.items())
        raise CTSeriesError(f"{len(series)} CT series under {folder}: {listing}; name one")
    return next(iter(series.values()))


def load_ct(source: Path | str | Iterable[Path | str] | Sequence[Dataset]
            ) -> tuple[sitk.Image, list[Dataset]]:
    """(HU image as float32, the slice datasets sorted like the image's slices)."""
    if isinstance(source, (str, Path)):
        datasets, read_here = read_ct_folder(source), True
    else:
        items = list(source)
        read_here = not any(isinstance(d, Dataset) for d in items)
        datasets = [d if isinstance(d, Dataset) else pydicom.dcmread(d) for d in items]
    if not datasets:
        raise CTSeriesError("no CT slices given")
    grid = CTGrid.from_datasets(datasets)
    order = {uid: i for i, uid in enumerate(grid.sop_instance_uids)}
    datasets = sorted(datasets, key=lambda d: order[str(d.SOPInstanceUID)])
    image = ct_image(datasets, grid)
    if read_here:  # the image holds the pixels now; callers need the headers only
        for ds in datasets:
            del ds.PixelData
    return image, datasets


def ct_image(datasets: Sequence[Dataset], grid: CTGrid | None = None) -> sitk.Image:
    """HU volume (slope/intercept applied) on the grid of the sorted datasets."""
    grid = grid or CTGrid.from_datasets(datasets)
    if not grid.is_evenly_spaced:
        gaps = np.diff(grid.slice_offsets)
        log.warning("CT slice spacing varies (%.3g to %.3g mm); models see the median %.3g mm, "
                    "contours keep each slice's true position", gaps.min(), gaps.max(),
                    grid.slice_spacing)
    volume = np.empty(grid.shape, dtype=np.float32)
    for k, ds in enumerate(datasets):  # compressed slices are decoded here (rtnode.dicom.pixels)
        volume[k] = modality_values(ds)
    image = sitk.GetImageFromArray(volume)
    image.SetOrigin(tuple(float(v) for v in grid.origin))
    image.SetSpacing((grid.pixel_spacing[1], grid.pixel_spacing[0], grid.slice_spacing))
    direction = np.column_stack([grid.row_cosine, grid.column_cosine, grid.normal])
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image
