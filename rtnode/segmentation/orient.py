"""Present every CT to a model in one orientation, and bring its labels back exactly.

Models (nnU-Net, TotalSegmentator) learn from images in the orientation their training data had,
nearly always head-first supine axial read as LPS. A feet-first or prone CT handed over as is
would look mirrored to them. Reorienting is a permutation and flip of the voxel array (no
resampling), so the labels go back onto the original grid voxel for voxel.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import SimpleITK as sitk

#: the orientation models see: axes increasing towards patient Left, Posterior, Superior
MODEL_ORIENTATION = "LPS"


def to_model_orientation(image: sitk.Image) -> tuple[sitk.Image, Callable[[np.ndarray], np.ndarray]]:
    """(image as LPS, function taking a label array on that image back to the original grid)."""
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    if code == MODEL_ORIENTATION:
        return image, lambda labels: labels
    oriented = sitk.DICOMOrient(image, MODEL_ORIENTATION)

    def back(labels: np.ndarray) -> np.ndarray:
        lab = sitk.GetImageFromArray(labels)
        lab.CopyInformation(oriented)
        out = sitk.GetArrayFromImage(sitk.DICOMOrient(lab, code))
        if out.shape != sitk.GetArrayViewFromImage(image).shape:
            raise RuntimeError(f"labels shaped {out.shape} after reorientation, the CT is "
                               f"{sitk.GetArrayViewFromImage(image).shape}")
        return out

    return oriented, back
