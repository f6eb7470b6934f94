"""builtin:body — the External contour by thresholding, needing no model weights at all.

Threshold the CT above ``threshold_hu``, open by one voxel in-plane (breaks the thin bridges of
foam pads and couch mattresses), keep the largest 3-D connected component (the patient; the
couch and table, separated by air, are other components), fill holes slice by slice (lungs,
bowel gas, the airway: open in 3-D, closed in each axial slice), then take back the voxels the
opening shaved off the skin surface.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from rtnode.segmentation.base import SegmentationError, SegmentationResult

BODY_COLOR = (0, 255, 0)


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
        tissue = sitk.BinaryThreshold(image, lowerThreshold=self.threshold_hu,
                                      upperThreshold=1e9, insideValue=1, outsideValue=0)
        opened = sitk.BinaryMorphologicalOpening(tissue, [1, 1, 0])
        components = sitk.RelabelComponent(sitk.ConnectedComponent(opened), sortByObjectSize=True)
        body = sitk.GetArrayFromImage(components) == 1
        if not body.any():
            raise SegmentationError(f"no voxel above {self.threshold_hu} HU: is this a CT in HU?")
        # undo the opening at the skin, but only into tissue next to the body
        tissue_arr = sitk.GetArrayFromImage(tissue).astype(bool)
        in_plane = np.zeros((3, 3, 3), dtype=bool)
        in_plane[1] = ndimage.generate_binary_structure(2, 2)
        body = ndimage.binary_dilation(body, in_plane, iterations=1) & tissue_arr | body
        # padded in z so the end slices are not all 'border' and get their holes filled too
        padded = np.pad(body, ((1, 1), (0, 0), (0, 0)))
        body = ndimage.binary_fill_holes(padded, structure=in_plane)[1:-1]
        labels = body.astype(np.uint8)
        return SegmentationResult(labels=labels, names={1: self.roi_name}, model=self.spec,
                                  colors={1: BODY_COLOR}, interpreted_types={1: "EXTERNAL"})
