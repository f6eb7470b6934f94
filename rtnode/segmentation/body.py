"""builtin:body — the External contour by thresholding, needing no model weights at all.

Threshold the CT at ``threshold_hu`` (voxels >= it are tissue), open by one voxel in-plane with a
3×3 square (breaks the thin bridges of foam pads and couch mattresses; the image edge counts as
tissue, as in ITK's binary opening), keep the largest face-connected 3-D component (the patient;
the couch and table, separated by air, are other components), take back the voxels the opening
shaved off the skin surface (tissue 8-adjacent in-plane to the body), then fill holes slice by
slice (lungs, bowel gas, the airway: open in 3-D, closed in each axial slice; background is
8-connected in-plane, so a hole must be sealed even diagonally).

Speed: every step works on the bounding box of the tissue (one voxel of margin), since nothing
outside it can become BODY; erosion and dilation are shifts of boolean arrays; the per-slice hole
filling is one 2-D connected-component pass over all slices stacked into one tall image with a
background row between slices. The result is voxel for voxel the one of the straightforward
formulation (SimpleITK opening, 3-D labelling, scipy fill_holes on the whole grid), which the
tests keep as the reference; docs/SEGMENTATION.md has the figures.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rtnode.segmentation.base import SegmentationError, SegmentationResult

BODY_COLOR = (0, 255, 0)


def tissue_box(tissue: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of the tissue voxels widened by one voxel (within the grid): nothing
    outside it is tissue, so every step of the body mask can run inside it."""
    box = []
    for axis in range(tissue.ndim):
        others = tuple(a for a in range(tissue.ndim) if a != axis)
        hits = np.flatnonzero(tissue.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, tissue.shape[axis])))
    return tuple(box)


def erode_square(mask: np.ndarray) -> np.ndarray:
    """In-plane erosion by a 3×3 square, the image edge counting as foreground (ITK's
    BinaryErode default, which BinaryMorphologicalOpening uses)."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=True)
    rows = p[:, :, :-2] & p[:, :, 1:-1] & p[:, :, 2:]
    return rows[:, :-2] & rows[:, 1:-1] & rows[:, 2:]


def dilate_square(mask: np.ndarray) -> np.ndarray:
    """In-plane dilation by a 3×3 square (nothing beyond the image edge)."""
    p = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    rows = p[:, :, :-2] | p[:, :, 1:-1] | p[:, :, 2:]
    return rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected 3-D component (on a tie, the first in array order)."""
    try:  # 16-bit labels halve the memory traffic of counting; a noisy CT may need 32
        labels = np.empty(mask.shape, dtype=np.uint16)
        count = ndimage.label(mask, output=labels)
    except RuntimeError:
        labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == np.argmax(sizes)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Every slice with its holes filled: background pixels not 8-connected in-plane to the
    slice's edge become foreground.

    The slices are stacked into one 2-D image, each with a background row above it and a
    background column on either side; all that border background is one region (the
    outside), so one connected-component pass finds the holes of every slice at once."""
    s, h, w = mask.shape
    background = np.pad(~mask, ((0, 0), (1, 0), (1, 1)), constant_values=True)
    tall = background.reshape(s * (h + 1), w + 2)
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(tall.view(np.uint8)), True)
    labels = sitk.GetArrayViewFromImage(components)
    holes = (labels != labels[0, 0]) & tall
    del labels, components
    return mask | holes.reshape(s, h + 1, w + 2)[:, 1:, 1:-1]


def body_mask(hu: np.ndarray, threshold_hu: float = -400.0,
              timer: Callable[[str], None] | None = None) -> np.ndarray:
    """The BODY mask (bool, shaped like hu) of a CT volume in HU, (slices, rows, columns).

    ``timer(step)`` is called after each step (for the benchmark's split)."""
    mark = timer or (lambda step: None)
    tissue_full = hu >= threshold_hu
    box = tissue_box(tissue_full)
    if box is None:
        raise SegmentationError(f"no voxel above {threshold_hu} HU: is this a CT in HU?")
    tissue = tissue_full[box]
    del tissue_full
    mark("threshold")
    opened = dilate_square(erode_square(tissue))
    mark("opening")
    body = largest_component(opened)
    del opened
    if not body.any():
        raise SegmentationError(f"nothing above {threshold_hu} HU survives a one-voxel opening: "
                                f"is this a CT in HU?")
    mark("largest component")
    # undo the opening at the skin, but only into tissue next to the body
    body |= dilate_square(body) & tissue
    del tissue
    mark("skin")
    body = fill_holes_per_slice(body)
    mark("fill holes")
    out = np.zeros(hu.shape, dtype=bool)
    out[box] = body
    return out


class BodySegmenter:
    """The embedded default model: one label, BODY (RTROIInterpretedType EXTERNAL)."""

    def __init__(self, threshold_hu: float = -400.0, roi_name: str = "BODY"):
        self.threshold_hu = threshold_hu
        self.roi_name = roi_name
        self.spec = "builtin:body"

    def load(self) -> None:
        """Nothing to load."""

    def predict(self, image: sitk.Image, small_footprint: bool = False) -> SegmentationResult:
        if image.GetDimension() != 3:
            raise SegmentationError("builtin:body needs a 3-D CT image")
        hu = sitk.GetArrayViewFromImage(image)
        labels = body_mask(hu, self.threshold_hu).view(np.uint8)
        return SegmentationResult(labels=labels, names={1: self.roi_name}, model=self.spec,
                                  colors={1: BODY_COLOR}, interpreted_types={1: "EXTERNAL"})
