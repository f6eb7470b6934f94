"""rtnode DVH engine against analytic truth on phantoms: spheres (r 5-40 mm, 0.5-268 cc),
cylinders and a hollow shell in linear dose gradients along x, y, z and obliquely, on the
default dose grid (2.5 mm, offset 0.3 voxel from the CT) and on a 3 mm grid offset by
(0.37, 0.61, 0.23) voxel.

Two truths: the analytic solid and the exact DVH of the contour stack the RTSTRUCT carries.
The stack truth isolates the engine; the solid truth also contains the contours' stair-step,
which no engine can undo.
"""

from __future__ import annotations

import pytest

from dvh_phantoms import (AXES, DOSE_KEYS, GRADIENT, SHAPES, course, metrics_by_name, results,
                          truths)

from rtnode.dvh import DVHConfig, compute_dvhs

CASES = [(axis, AXES[axis], "default") for axis in "xyz"] + [
    ("oblique-offset3mm", (0.1, -0.08, 0.12), "offset3mm")]
#: slice spacing of the phantom CT (mm)
SLICE_MM = 2.5


@pytest.mark.parametrize("label,gradient,grid", CASES, ids=[c[0] for c in CASES])
def test_large_rois_within_0_1_gy_of_analytic_solid(label, gradient, grid):
    """ROIs >= 10 cc: D98/D95/D50/D2/Dmean within 0.1 Gy of the analytic solid."""
    got = metrics_by_name(results(gradient, "rtnode", grid))
    checked = 0
    for shape in SHAPES:
        solid, _ = truths(shape, gradient)
        if solid.volume_mm3 < 10_000:
            continue
        truth = solid.metrics()
        for key in DOSE_KEYS:
            assert got[shape.name][key] == pytest.approx(truth[key], abs=0.1), (shape.name, key)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("label,gradient,grid", CASES, ids=[c[0] for c in CASES])
def test_volume_within_1_pct_of_contour_stack(label, gradient, grid):
    """Every ROI, including the 0.5 cc sphere: volume within 1 % of sum(area x slab)."""
    got = metrics_by_name(results(gradient, "rtnode", grid))
    for shape in SHAPES:
        _, stack = truths(shape, gradient)
        assert got[shape.name]["volume_cc"] == pytest.approx(stack.volume_mm3 / 1000.0,
                                                             rel=0.01), shape.name


@pytest.mark.parametrize("label,gradient,grid", CASES, ids=[c[0] for c in CASES])
def test_every_roi_within_0_02_gy_of_contour_stack(label, gradient, grid):
    """Against the contour stack's exact DVH the engine's only error is in-plane sampling;
    0.02 Gy is below the 0.01 Gy bins plus the midpoint-rule error of the smallest circles."""
    got = metrics_by_name(results(gradient, "rtnode", grid))
    for shape in SHAPES:
        _, stack = truths(shape, gradient)
        truth = stack.metrics()
        for key in DOSE_KEYS:
            assert got[shape.name][key] == pytest.approx(truth[key], abs=0.02), (shape.name, key)


@pytest.mark.parametrize("label,gradient,grid", CASES, ids=[c[0] for c in CASES])
def test_small_rois_within_half_slice_of_analytic_solid(label, gradient, grid):
    """ROIs < 10 cc against the solid: contours on 2.5 mm slices place a sphere's poles up to
    half a slice off, so a quantile can move by gradient_z x slice/2 (+0.02 Gy engine margin).
    In-plane gradients add nothing: polygons carry the circle's exact area."""
    got = metrics_by_name(results(gradient, "rtnode", grid))
    tol = abs(gradient[2]) * SLICE_MM / 2 + 0.02
    small = 0
    for shape in SHAPES:
        solid, _ = truths(shape, gradient)
        if solid.volume_mm3 >= 10_000:
            continue
        truth = solid.metrics()
        for key in DOSE_KEYS:
            assert got[shape.name][key] == pytest.approx(truth[key], abs=tol), (shape.name, key)
        small += 1
    assert small == 3  # spheres r 5 and 8 mm, cylinder r 4 mm (0.5, 2.1, 1.0 cc)


def test_min_max_and_small_volume_doses_follow_the_gradient():
    """Dmax/Dmin sit at the extreme of the ROI along the gradient, D0.03cc just inside Dmax."""
    grad = AXES["x"]
    got = metrics_by_name(results(grad, "rtnode"))
    for shape in SHAPES:
        solid, stack = truths(shape, grad)
        row = got[shape.name]
        assert row["dmax_gy"] == pytest.approx(stack.dmax_gy, abs=0.02)
        assert row["dmin_gy"] == pytest.approx(stack.dmin_gy, abs=0.02)
        assert row["dmin_gy"] <= row["d98_gy"] <= row["d50_gy"] <= row["d2_gy"] <= row["dmax_gy"]
        assert row["d_0.03cc_gy"] <= row["dmax_gy"]
        expected = stack.dose_at_fraction(30.0 / stack.volume_mm3)
        assert row["d_0.03cc_gy"] == pytest.approx(expected, abs=0.02)
        if row["volume_cc"] >= 1.0:
            assert row["d_1cc_gy"] == pytest.approx(stack.dose_at_fraction(1000.0 / stack.volume_mm3),
                                                 abs=0.02)


def test_volume_at_dose_levels_matches_truth():
    """Configured VxGy (cc and %) and Dx% against the analytic volume above a dose level."""
    grad = AXES["z"]
    c = course(grad)
    config = DVHConfig(volume_levels_gy=[57.5, 60.0, 62.0], dose_levels_pct=[80.0, 10.0])
    res = compute_dvhs(c.rtstruct, c.rtdose, c.rtplan, config)
    row = metrics_by_name(res)["Sphere_r40"]
    _, stack = truths(SHAPES[4], grad)
    for level in (57.5, 60.0, 62.0):
        expected = float(stack.volume_above([level])[0]) / 1000.0
        assert row[f"v{level:g}gy_cc"] == pytest.approx(expected, rel=2e-3)
        assert row[f"v{level:g}gy_pct"] == pytest.approx(100 * expected / row["covered_cc"],
                                                          rel=2e-3)
    for pct in (80.0, 10.0):
        assert row[f"d{pct:g}_gy"] == pytest.approx(stack.dose_at_fraction(pct / 100), abs=0.01)


def test_gradient_is_steep_enough_to_matter():
    """Guard for the tests above: the gradient spreads a large sphere over several Gy."""
    solid, _ = truths(SHAPES[4], AXES["x"])
    assert solid.metrics()["d2_gy"] - solid.metrics()["d98_gy"] > 8 * GRADIENT * 4
