"""pyradiomics on one ROI: (SimpleITK image, boolean mask) → feature name → value.

The engine does not know where the mask came from (manual RTSTRUCT, auto-segmentation, a
perturbed copy), which keeps it testable on analytic phantoms and reusable by the robustness
analysis. Feature names are pyradiomics' own (``original_shape_MeshVolume``) so tables can be
compared with any other pyradiomics study.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from rtnode.radiomics.masks import mask_image

#: pyradiomics' own provenance keys; kept out of feature tables
DIAGNOSTICS_PREFIX = "diagnostics_"


def _quiet_pyradiomics() -> None:
    import radiomics

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)


def extractor(params: dict):
    """A configured RadiomicsFeatureExtractor (pyradiomics accepts the mapping directly)."""
    _quiet_pyradiomics()
    from radiomics import featureextractor

    return featureextractor.RadiomicsFeatureExtractor(params)


def _number(value: Any) -> float:
    try:
        return float(np.asarray(value).item())
    except (TypeError, ValueError):
        return math.nan


def extract_roi(image: sitk.Image, mask: np.ndarray, params: dict,
                extractor_obj: Any = None) -> dict[str, float]:
    """Every enabled feature of the ROI as floats, in pyradiomics' order."""
    if mask.shape != sitk.GetArrayViewFromImage(image).shape:
        raise ValueError(f"mask shape {mask.shape} is not the image grid "
                         f"{sitk.GetArrayViewFromImage(image).shape}")
    ex = extractor_obj if extractor_obj is not None else extractor(params)
    result = ex.execute(image, mask_image(mask, image), label=1)
    return {k: _number(v) for k, v in result.items() if not k.startswith(DIAGNOSTICS_PREFIX)}


@dataclass
class RoiResult:
    """One ROI's outcome: its features, or why it has none."""

    roi_name: str
    source: str
    state: str  # done | skipped | failed
    reason: str = ""
    voxels: int = 0
    seconds: float = 0.0
    features: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"roi_name": self.roi_name, "source": self.source, "voxels": self.voxels,
                **self.features}

    def status(self) -> dict[str, Any]:
        return {"roi_name": self.roi_name, "source": self.source, "state": self.state,
                "reason": self.reason, "voxels": self.voxels,
                "seconds": round(self.seconds, 3)}
