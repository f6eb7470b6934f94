"""Robustness of features to segmentation: every matching ROI is perturbed as configured, its
features re-extracted, and each feature gets an ICC across perturbations and a verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk

from rtnode.radiomics.config import Perturbation, RobustnessConfig
from rtnode.radiomics.extract import extract_roi, extractor
from rtnode.radiomics.icc import icc_2_1
from rtnode.radiomics.perturb import resize_to_volume, shift

ROBUSTNESS_CSV = "radiomics_robustness.csv"


def perturbed(image: sitk.Image, mask: np.ndarray, p: Perturbation,
              seed: int) -> tuple[sitk.Image, np.ndarray]:
    sx, sy, sz = image.GetSpacing()
    out = resize_to_volume(mask, p.volume_change_pct, (sz, sy, sx))
    if any(p.shift_mm):
        out = shift(out, p.shift_mm, (sx, sy, sz))
    if p.noise_hu > 0:
        arr = sitk.GetArrayFromImage(image)
        noise = np.random.default_rng(seed).normal(0.0, p.noise_hu, arr.shape)
        noisy = sitk.GetImageFromArray((arr + noise).astype(np.float32))
        noisy.CopyInformation(image)
        image = noisy
    return image, out


def roi_perturbation_features(image: sitk.Image, mask: np.ndarray, params: dict,
                              config: RobustnessConfig) -> dict[str, dict[str, float]]:
    """perturbation name → features of one ROI."""
    ex = extractor(params)
    out = {}
    for i, p in enumerate(config.perturbations):
        img, m = perturbed(image, mask, p, config.seed + i)
        out[p.name] = extract_roi(img, m, params, ex)
    return out


def icc_table(per_roi: dict[str, dict[str, dict[str, float]]],
              config: RobustnessConfig) -> pd.DataFrame:
    """One row per feature: ICC(2,1) over ROIs × perturbations and robust yes/no."""
    rois = sorted(per_roi)
    names = [p.name for p in config.perturbations]
    features = sorted(set.intersection(*[set(per_roi[r][names[0]]) for r in rois])) if rois \
        else []
    rows = []
    for f in features:
        values = np.array([[per_roi[r][p].get(f, np.nan) for p in names] for r in rois])
        icc = icc_2_1(values)
        rows.append({"feature": f, "icc": icc, "robust": bool(icc >= config.icc_threshold),
                     "n_rois": len(rois), "n_perturbations": len(names),
                     "threshold": config.icc_threshold})
    return pd.DataFrame(rows, columns=["feature", "icc", "robust", "n_rois", "n_perturbations",
                                       "threshold"])
