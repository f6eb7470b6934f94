"""The builtin:body algorithm in its straightforward formulation, as it was before the fast one
in rtnode/segmentation/body.py: SimpleITK opening, labelling and relabelling on the whole grid,
scipy's hole filling. The tests hold the fast version to it voxel for voxel, and
scripts/bench/body.py times it as the 'before'."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def reference_body_mask(image: sitk.Image, threshold_hu: float = -400.0,
                        timer=None) -> np.ndarray:
    mark = timer or (lambda step: None)
    tissue = sitk.BinaryThreshold(image, lowerThreshold=threshold_hu, upperThreshold=1e9,
                                  insideValue=1, outsideValue=0)
    mark("threshold")
    opened = sitk.BinaryMorphologicalOpening(tissue, [1, 1, 0])
    mark("opening")
    components = sitk.RelabelComponent(sitk.ConnectedComponent(opened), sortByObjectSize=True)
    body = sitk.GetArrayFromImage(components) == 1
    mark("largest component")
    tissue_arr = sitk.GetArrayFromImage(tissue).astype(bool)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 2)
    body = ndimage.binary_dilation(body, in_plane, iterations=1) & tissue_arr | body
    mark("skin")
    padded = np.pad(body, ((1, 1), (0, 0), (0, 0)))
    body = ndimage.binary_fill_holes(padded, structure=in_plane)[1:-1]
    mark("fill holes")
    return body

