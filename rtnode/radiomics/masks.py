"""RTSTRUCT ROIs as boolean masks on the image grid.

Through the node's one reader (``rtnode.rtstruct.reader.read_rtstruct_masks``), so that
radiomics, QC and every other stage see the same voxels. Engines downstream take (image, masks)
and do not care how they were made.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)


def roi_names(rtstruct: Dataset) -> list[str]:
    """ROI names of the structure set, in StructureSetROISequence order."""
    return [str(getattr(item, "ROIName", "") or f"ROI{item.ROINumber}")
            for item in getattr(rtstruct, "StructureSetROISequence", None) or []]


def contour_counts(rtstruct: Dataset) -> dict[str, int]:
    """Number of contours each ROI has (0 = an empty ROI)."""
    names = {int(i.ROINumber): str(getattr(i, "ROIName", "") or f"ROI{i.ROINumber}")
             for i in getattr(rtstruct, "StructureSetROISequence", None) or []}
    counts = {name: 0 for name in names.values()}
    for item in getattr(rtstruct, "ROIContourSequence", None) or []:
        name = names.get(int(getattr(item, "ReferencedROINumber", -1)))
        if name is not None:
            counts[name] = len(getattr(item, "ContourSequence", None) or [])
    return counts


def rtstruct_masks(rtstruct: Dataset, image: sitk.Image, image_datasets: Sequence[Dataset],
                   names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Masks of the wanted ROIs (all when ``names`` is None), on ``image``'s grid."""
    from rtnode.rtstruct.reader import read_rtstruct_masks

    masks = read_rtstruct_masks(rtstruct, list(image_datasets),
                                None if names is None else list(names))
    return {k: np.asarray(v, dtype=bool) for k, v in masks.items()}


def mask_image(mask: np.ndarray, image: sitk.Image) -> sitk.Image:
    """A uint8 label image (1 inside) carrying ``image``'s geometry."""
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out
