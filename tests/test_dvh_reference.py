"""rtnode against dicompyler-core 0.5.6 (the reference engine, ``dvh.engine: dicompyler``).

Where dicompyler-core is known to be right — uniform dose, large ROIs — the engines must agree;
in a gradient, where it samples dose only at dose-voxel centres and contour planes, rtnode must
be closer to the analytic truth.
"""

from __future__ import annotations

import pytest

from dvh_phantoms import AXES, DOSE_KEYS, SHAPES, course, metrics_by_name, results, truths

from rtnode.dvh import DVHConfig, compute_dvhs

UNIFORM = (0.0, 0.0, 0.0)
LARGE = ("Sphere_r25", "Sphere_r40", "Shell_20_10")


def test_engines_agree_in_uniform_dose():
    """Uniform 60 Gy: every dose metric of every ROI is 60 Gy in both engines (dicompyler-core
    bins at 0.01 Gy, so its values sit within one bin)."""
    ours = metrics_by_name(results(UNIFORM, "rtnode"))
    ref = metrics_by_name(results(UNIFORM, "dicompyler"))
    for shape in SHAPES:
        for key in DOSE_KEYS:
            assert ours[shape.name][key] == pytest.approx(60.0, abs=0.011), (shape.name, key)
            assert ref[shape.name][key] == pytest.approx(60.0, abs=0.011), (shape.name, key)


def test_engines_agree_on_large_roi_volumes():
    """Large ROIs: dicompyler-core's whole-dose-pixel volumes are within 1.5 % of rtnode's."""
    ours = metrics_by_name(results(UNIFORM, "rtnode"))
    ref = metrics_by_name(results(UNIFORM, "dicompyler"))
    for name in LARGE:
        assert ref[name]["volume_cc"] == pytest.approx(ours[name]["volume_cc"], rel=0.015), name


def test_engines_agree_on_large_rois_in_a_gradient_within_a_dose_voxel_step():
    """In a gradient the engines still agree on large ROIs to within half the dose step between
    neighbouring dose voxels (gradient x 2.5 mm / 2), dicompyler-core's resolution."""
    grad = AXES["z"]
    ours = metrics_by_name(results(grad, "rtnode"))
    ref = metrics_by_name(results(grad, "dicompyler"))
    step = 0.15 * 2.5 / 2 + 0.01
    for name in LARGE:
        for key in DOSE_KEYS:
            assert ref[name][key] == pytest.approx(ours[name][key], abs=step), (name, key)


@pytest.mark.parametrize("axis", ["x", "z"])
def test_rtnode_closer_to_analytic_truth_than_dicompyler(axis):
    """Per ROI, rtnode's worst dose-metric error against the contour stack's exact DVH is below
    dicompyler-core's, and over all ROIs at least 5 times smaller; the same for volumes."""
    grad = AXES[axis]
    ours = metrics_by_name(results(grad, "rtnode"))
    ref = metrics_by_name(results(grad, "dicompyler"))
    worst_ours = worst_ref = vol_ours = vol_ref = 0.0
    for shape in SHAPES:
        _, stack = truths(shape, grad)
        truth = stack.metrics()
        e_ours = max(abs(ours[shape.name][k] - truth[k]) for k in DOSE_KEYS)
        e_ref = max(abs(ref[shape.name][k] - truth[k]) for k in DOSE_KEYS)
        assert e_ours < e_ref, shape.name
        worst_ours, worst_ref = max(worst_ours, e_ours), max(worst_ref, e_ref)
        v = truth["volume_cc"]
        vol_ours = max(vol_ours, abs(ours[shape.name]["volume_cc"] / v - 1))
        vol_ref = max(vol_ref, abs(ref[shape.name]["volume_cc"] / v - 1))
    assert worst_ours * 5 < worst_ref
    assert vol_ours * 5 < vol_ref


def test_reference_engine_reads_cgy_dose_correctly():
    """dicompyler-core assumes Gy; the reference engine re-encodes a cGy RTDOSE so that both
    engines see the same dose."""
    from rtnode.phantom import linear_dose
    from rtnode.phantom.rt import make_rtdose

    c = course(AXES["z"])
    dose_cgy = make_rtdose(c.patient, c.rtplan, c.default_dose_grid(),
                           linear_dose(60.0, AXES["z"]), units="CGY")
    pixels_before = bytes(dose_cgy.PixelData)
    ref = compute_dvhs(c.rtstruct, dose_cgy, c.rtplan, DVHConfig(engine="dicompyler"))
    assert dose_cgy.DoseUnits == "CGY" and bytes(dose_cgy.PixelData) == pixels_before
    row = metrics_by_name(ref)["Sphere_r40"]
    assert row["dmean_gy"] == pytest.approx(60.0, abs=0.02)
    assert ref.engine == "dicompyler"
    assert {r.engine for r in ref.rois} == {"dicompyler"}


def test_reference_engine_gets_the_summed_dose():
    """Primary + boost on different grids: dicompyler-core is given the summed dose, so both
    engines report the same mean dose for a large ROI."""
    from rtnode.phantom import linear_dose
    from rtnode.phantom.rt import DoseGrid, make_rtdose

    from rtnode.phantom.rt import make_rtplan

    c = course(AXES["z"])
    primary = make_rtdose(c.patient, c.rtplan, c.default_dose_grid(),
                          linear_dose(50.0, AXES["z"]))
    boost_plan = make_rtplan(c.patient, c.rtstruct, 10.0, label="BOOST",
                             related=[(c.rtplan, "PRIOR")])
    boost = make_rtdose(c.patient, boost_plan,
                        DoseGrid(origin=(-50.2, -50.6, -50.4), spacing=(2.0, 2.0, 2.0),
                                 shape=(51, 51, 51)), linear_dose(10.0))
    ours = metrics_by_name(compute_dvhs(c.rtstruct, [primary, boost], [c.rtplan, boost_plan]))
    ref = metrics_by_name(compute_dvhs(c.rtstruct, [primary, boost], [c.rtplan, boost_plan],
                                       DVHConfig(engine="dicompyler")))
    assert ours["Sphere_r40"]["dmean_gy"] == pytest.approx(60.0, abs=0.01)
    assert ref["Sphere_r40"]["dmean_gy"] == pytest.approx(60.0, abs=0.02)
