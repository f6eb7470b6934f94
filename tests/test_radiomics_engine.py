"""The radiomics engine on analytic phantoms: shape features of a voxelised sphere against
geometry, first-order features of a uniform ROI exactly, and ROI selection rules.

Tolerances for the sphere (1 mm voxels, radius 15-25 mm, shipped CT parameters):
- MeshVolume within 1.5 %: the marching-cubes mesh of a voxel-centre mask follows the sphere to
  within half a voxel, and inward/outward deviations largely cancel; the residual is of order
  (voxel / radius)^2, ≈ 0.4-1.1 % at these radii.
- SurfaceArea 5-12 % above 4πr²: marching cubes on a binary (0/1) mask cuts the voxel
  staircase with facets at 45° wherever the surface is oblique to the grid, so the mesh is
  larger than the smooth sphere by a factor that depends on surface orientation, not on the
  radius (measured here: +9.8 % at 15 mm, +9.3 % at 25 mm).
- Sphericity therefore (36πV²)^(1/3)/A ≈ 1/1.09 ≈ 0.92: accepted in 0.89-0.95, and never above 1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from radiomics_phantoms import sphere_image
from rtnode.radiomics.config import RadiomicsConfig, RobustnessConfig
from rtnode.radiomics.extract import extract_roi
from rtnode.radiomics.params import ParamsError, load_params, params_path
from rtnode.radiomics.selection import matches_any, voxel_limit_reason

CT = load_params(params_path("CT"))


@pytest.mark.parametrize("radius", [15.0, 25.0])
def test_sphere_shape_features_match_geometry(radius):
    image, mask = sphere_image(radius)
    f = extract_roi(image, mask, CT)
    volume, area = 4 / 3 * math.pi * radius**3, 4 * math.pi * radius**2
    assert f["original_shape_MeshVolume"] == pytest.approx(volume, rel=0.015)
    assert 1.05 * area < f["original_shape_SurfaceArea"] < 1.12 * area
    assert 0.89 < f["original_shape_Sphericity"] < 0.95
    # voxel volume is the voxel count exactly
    assert f["original_shape_VoxelVolume"] == pytest.approx(float(mask.sum()))
    # principal axes of a sphere are equal
    assert f["original_shape_Elongation"] == pytest.approx(1.0, abs=0.01)
    assert f["original_shape_Flatness"] == pytest.approx(1.0, abs=0.01)


def test_uniform_roi_first_order_features_are_exact():
    hu = 40.0
    image, mask = sphere_image(12.0, hu=hu)
    f = extract_roi(image, mask, CT)
    n = float(mask.sum())
    assert f["original_firstorder_Mean"] == hu
    assert f["original_firstorder_Median"] == hu
    assert f["original_firstorder_Minimum"] == hu
    assert f["original_firstorder_Maximum"] == hu
    assert f["original_firstorder_10Percentile"] == hu
    assert f["original_firstorder_90Percentile"] == hu
    assert f["original_firstorder_Range"] == 0.0
    assert f["original_firstorder_Variance"] == 0.0
    assert f["original_firstorder_MeanAbsoluteDeviation"] == 0.0
    assert f["original_firstorder_RootMeanSquared"] == hu
    assert f["original_firstorder_Energy"] == n * hu * hu
    assert f["original_firstorder_TotalEnergy"] == n * hu * hu * 1.0  # 1 mm³ voxels
    assert f["original_firstorder_Uniformity"] == 1.0
    assert abs(f["original_firstorder_Entropy"]) < 1e-12
    assert f["original_firstorder_Skewness"] == 0.0


def test_features_follow_the_intensity_and_mask_only():
    image, mask = sphere_image(10.0, hu=40.0)
    bright = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) + 100.0)
    bright.CopyInformation(image)
    a, b = extract_roi(image, mask, CT), extract_roi(bright, mask, CT)
    assert b["original_firstorder_Mean"] - a["original_firstorder_Mean"] == 100.0
    assert b["original_shape_MeshVolume"] == a["original_shape_MeshVolume"]


def test_mask_on_another_grid_is_refused():
    image, mask = sphere_image(10.0)
    with pytest.raises(ValueError, match="not the image grid"):
        extract_roi(image, mask[:-1], CT)


def test_roi_selection_rules():
    config = RadiomicsConfig()
    assert matches_any("body", config.skip_rois) and matches_any("External_1", config.skip_rois)
    assert not matches_any("GTV", config.skip_rois)
    assert voxel_limit_reason(10, 27, 100) == "10 voxels, fewer than min_voxels 27"
    assert voxel_limit_reason(101, 27, 100) == "101 voxels, more than max_voxels 100"
    assert voxel_limit_reason(0, 27, 100).startswith("empty")
    assert voxel_limit_reason(50, 27, 100) is None


def test_config_and_params_errors_are_readable(tmp_path):
    with pytest.raises(ValueError, match="min_voxels is larger"):
        RadiomicsConfig(min_voxels=10, max_voxels=5)
    with pytest.raises(ValueError, match="unknown source"):
        RadiomicsConfig(sources=["manual", "atlas"])
    with pytest.raises(ValueError, match="at least two perturbations"):
        RobustnessConfig(perturbations=[{"name": "only"}])
    assert params_path("MR").name == "mr.yaml" and params_path("CT").name == "ct.yaml"
    with pytest.raises(ParamsError, match="not found"):
        params_path("CT", params_ct=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("settings: {binWidth: 25}\n")
    with pytest.raises(ParamsError, match="unknown top-level key"):
        load_params(bad)


def test_small_footprint_gives_the_same_features():
    """The memory back-off (crop before resampling, original image only) must not change
    what is reported for a ROI."""
    from rtnode.radiomics.params import small_footprint

    image, mask = sphere_image(10.0, hu=40.0)
    arr = sitk.GetArrayFromImage(image)
    arr += np.random.default_rng(0).normal(0, 20, arr.shape).astype(np.float32)
    noisy = sitk.GetImageFromArray(arr)
    normal, small = extract_roi(noisy, mask, CT), extract_roi(noisy, mask, small_footprint(CT))
    assert set(normal) == set(small)
    for f in ("original_firstorder_Mean", "original_shape_MeshVolume", "original_glcm_Contrast"):
        assert small[f] == pytest.approx(normal[f], rel=1e-6), f


def test_a_rule_can_override_the_parameter_file(tmp_path):
    from rtnode.stages.base import StageContext
    from rtnode.stages.radiomics import radiomics_config

    ctx = StageContext(course_id=1, patient_id="P", revision=1, members=[], verdict={},
                       rule={"radiomics": {"params_ct": str(tmp_path / "site.yaml"),
                                           "min_voxels": 100}},
                       storage_root=tmp_path, out_dir=tmp_path)
    config = radiomics_config(ctx)
    assert config.params_ct == tmp_path / "site.yaml" and config.min_voxels == 100
    assert config.roi_timeout_seconds == 600
