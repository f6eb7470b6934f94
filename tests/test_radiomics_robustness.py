"""Robustness on a phantom: three spheres (radius 8, 10, 12 mm), each inside a larger uniform
insert of its own HU, perturbed by ±15 % and ±30 % volume. Intensity features cannot move (the
perturbed ROI stays inside its uniform insert): ICC exactly 1. Volume-dependent features move
with the perturbation: ICC below 1, and below the invariant ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from rtnode.radiomics.config import RobustnessConfig
from rtnode.radiomics.icc import icc_2_1
from rtnode.radiomics.params import load_params, params_path
from rtnode.radiomics.perturb import resize_to_volume
from rtnode.radiomics.robustness import icc_table, roi_perturbation_features

SPHERES = [((20.0, 20.0, 20.0), 8.0, 40.0), ((60.0, 20.0, 20.0), 10.0, 100.0),
           ((100.0, 20.0, 20.0), 12.0, 160.0)]


def phantom() -> tuple[sitk.Image, dict[str, np.ndarray]]:
    z, y, x = np.indices((40, 40, 122)).astype(float)
    image = np.zeros(x.shape, np.float32)
    masks = {}
    for i, ((cx, cy, cz), r, hu) in enumerate(SPHERES):
        d2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
        image[d2 <= (r + 7) ** 2] = hu
        masks[f"GTV{i + 1}"] = d2 <= r * r
    return sitk.GetImageFromArray(image), masks


def test_volume_perturbation_hits_its_target():
    _, masks = phantom()
    m = masks["GTV3"]
    for change in (-30, -15, 15, 30):
        out = resize_to_volume(m, change, (1.0, 1.0, 1.0))
        assert out.sum() / m.sum() - 1 == pytest.approx(change / 100, abs=0.04)
        assert (out <= m).all() if change < 0 else (out >= m).all()


def test_icc_is_one_for_invariant_and_below_for_volume_features():
    image, masks = phantom()
    config = RobustnessConfig()  # -30, -15, 0, +15, +30 %
    params = load_params(params_path("CT"))
    params["featureClass"] = {"shape": None, "firstorder": None}
    per_roi = {name: roi_perturbation_features(image, mask, params, config)
               for name, mask in masks.items()}
    table = icc_table(per_roi, config).set_index("feature")
    for f in ("original_firstorder_Mean", "original_firstorder_Median",
              "original_firstorder_Maximum", "original_firstorder_RootMeanSquared"):
        assert table.loc[f, "icc"] == 1.0, f
        assert table.loc[f, "robust"]
    for f in ("original_shape_MeshVolume", "original_shape_SurfaceArea",
              "original_firstorder_Energy", "original_shape_Maximum3DDiameter"):
        assert table.loc[f, "icc"] < 1.0, f
    # ±30 % volume on spheres of 2.1-6.0 cc: volume no longer tells the ROIs apart reliably
    assert table.loc["original_shape_MeshVolume", "icc"] < config.icc_threshold
    assert not table.loc["original_shape_MeshVolume", "robust"]
    assert (table["n_rois"] == 3).all() and (table["n_perturbations"] == 5).all()


def test_icc_formula_on_textbook_cases():
    assert icc_2_1(np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])) == 1.0
    assert icc_2_1(np.array([[5.0, 5.0], [5.0, 5.0]])) == 1.0
    assert math.isnan(icc_2_1(np.array([[1.0, 2.0]])))
    # Shrout & Fleiss (1979) table: ICC(2,1) = 0.29
    sf = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                   [6, 2, 4, 7]], dtype=float)
    assert icc_2_1(sf) == pytest.approx(0.29, abs=0.005)
