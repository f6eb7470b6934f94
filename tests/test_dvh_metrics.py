"""Prescription metrics (V95/V100/V107, HI, CI), config validation, TPS DVH comparison."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from dvh_phantoms import course, metrics_by_name, slice_positions
from pydantic import ValidationError

from rtnode.dvh import DVHConfig, compute_dvhs
from rtnode.phantom import linear_dose
from rtnode.phantom.dvh_truth import LinearField, stack_dvh
from rtnode.phantom.dvhseq import make_dvh_item
from rtnode.phantom.rt import make_rtdose
from rtnode.phantom.shapes import Sphere

GRAD = (0.0, 0.0, 0.25)
PTV = Sphere("PTV", interpreted_type="PTV", center=(0.0, 0.0, 2.0), radius=20.0)
OAR = Sphere("OAR", interpreted_type="ORGAN", center=(50.0, 0.0, 0.0), radius=10.0)
SHAPES = (PTV, OAR)


@pytest.fixture(scope="module")
def base():
    return course(GRAD, "default", SHAPES)


@pytest.fixture(scope="module")
def truth():
    return stack_dvh(PTV, slice_positions(), LinearField(60.0, GRAD))


def test_prescription_metrics_for_targets_only(base, truth):
    res = compute_dvhs(base.rtstruct, base.rtdose, base.rtplan)
    assert res.prescription_gy == pytest.approx(60.0)  # RTPLAN TargetPrescriptionDose
    ptv, oar = metrics_by_name(res)["PTV"], metrics_by_name(res)["OAR"]
    vol = truth.volume_mm3
    for level in (95, 100, 107):
        expected = 100.0 * float(truth.volume_above([0.6 * level])[0]) / vol
        assert ptv[f"v{level}_rx_pct"] == pytest.approx(expected, abs=0.1), level
    t = truth.metrics()
    assert ptv["hi"] == pytest.approx((t["d2_gy"] - t["d98_gy"]) / t["d50_gy"], abs=1e-3)
    assert "v100_rx_pct" not in oar and "hi" not in oar


def test_paddick_ci_uses_the_prescription_isodose_volume(base):
    """No EXTERNAL ROI here, so PIV is the dose grid volume at or above the prescription."""
    res = compute_dvhs(base.rtstruct, base.rtdose, base.rtplan)
    ptv = next(r for r in res.rois if r.roi_name == "PTV")
    dose = base.rtdose.pixel_array * float(base.rtdose.DoseGridScaling)
    voxel_cc = 2.5 ** 3 / 1000
    piv = np.count_nonzero(dose >= 60.0) * voxel_cc
    tv_piv = ptv.dvh.volume_at(60.0)
    expected = tv_piv ** 2 / (ptv.covered_cc * piv)
    assert metrics_by_name(res)["PTV"]["ci"] == pytest.approx(expected, rel=1e-9)
    assert 0 < expected < 1


def test_configured_prescription_overrides_the_plan(base, truth):
    res = compute_dvhs(base.rtstruct, base.rtdose, base.rtplan, DVHConfig(prescription_gy=55.0))
    ptv = metrics_by_name(res)["PTV"]
    expected = 100.0 * float(truth.volume_above([55.0])[0]) / truth.volume_mm3
    assert ptv["v100_rx_pct"] == pytest.approx(expected, abs=0.1)


def test_config_rejects_unknown_keys_and_coarse_bins():
    with pytest.raises(ValidationError):
        DVHConfig(bins=0.01)
    with pytest.raises(ValidationError):
        DVHConfig(bin_width_gy=0.05)
    with pytest.raises(ValidationError):
        DVHConfig(engine="eclipse")
    assert DVHConfig.model_fields["engine"].description


def _with_tps_dvhs(base, items):
    return make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                       linear_dose(60.0, GRAD), dvhs=items)


def test_tps_dvh_that_matches_is_reported_as_close(base, truth):
    doses = np.arange(0.0, 70.0, 0.1)
    vols = truth.volume_above(doses) / 1000.0
    item = make_dvh_item(1, doses, vols, mean_gy=truth.dmean_gy)
    res = compute_dvhs(base.rtstruct, _with_tps_dvhs(base, [item]), base.rtplan)
    (check,) = res.tps_comparison
    assert check["roi_name"] == "PTV"
    assert check["max_volume_diff_pct"] < 0.5
    assert abs(check["dmean_diff_gy"]) < 0.01


def test_tps_dvh_that_differs_is_reported_with_its_difference(base, truth):
    """A TPS DVH shifted by 1 Gy (e.g. another dose) shows up in both figures; a cGy,
    %-volume, differential export is read as well."""
    doses = np.arange(0.0, 70.0, 0.1)
    shifted = truth.volume_above(doses - 1.0)
    item = make_dvh_item(1, doses, 100.0 * shifted / truth.volume_mm3,
                         mean_gy=truth.dmean_gy + 1.0, volume_units="PERCENT",
                         dose_units="CGY", dvh_type="DIFFERENTIAL")
    res = compute_dvhs(base.rtstruct, _with_tps_dvhs(base, [item]), base.rtplan)
    (check,) = res.tps_comparison
    assert check["max_volume_diff_pct"] > 10.0
    assert check["dmean_diff_gy"] == pytest.approx(-1.0, abs=0.01)


def test_tps_dvh_for_unknown_roi_is_ignored(base, truth):
    item = make_dvh_item(99, [0.0, 1.0, 2.0], [1.0, 0.5, 0.0])
    res = compute_dvhs(base.rtstruct, _with_tps_dvhs(base, [item]), base.rtplan)
    assert res.tps_comparison == []


def test_metrics_are_finite_and_ordered(base):
    res = compute_dvhs(base.rtstruct, base.rtdose, base.rtplan)
    for row in res.metrics:
        values = [row[k] for k in ("dmin_gy", "d98_gy", "d95_gy", "d50_gy", "d2_gy", "dmax_gy")]
        assert all(math.isfinite(v) for v in values)
        assert values == sorted(values)
        assert row["v5gy_pct"] == pytest.approx(100.0)


def test_auto_segmentation_rois_are_labelled_auto(base):
    from rtnode.phantom.rt import make_rtstruct

    auto = make_rtstruct(base.patient, base.ct, SHAPES, label="AUTO", algorithm="AUTOMATIC")
    res = compute_dvhs(auto, base.rtdose)
    assert {r["source"] for r in res.metrics} == {"auto"}
    manual = compute_dvhs(copy.deepcopy(base.rtstruct), base.rtdose)
    assert {r["source"] for r in manual.metrics} == {"manual"}


def test_plan_dose_reference_marks_targets_only_in_its_own_structure_set(base):
    """The RTPLAN's DoseReference points at ROI 1 of the structure set it was planned on; in an
    auto-segmentation ROI 1 is something else and must not get prescription metrics."""
    from rtnode.phantom.rt import make_rtstruct

    untyped = (Sphere("Boost", interpreted_type="", center=(0.0, 0.0, 2.0), radius=20.0), OAR)
    manual = make_rtstruct(base.patient, base.ct, untyped)
    plan = copy.deepcopy(base.rtplan)
    plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = manual.SOPInstanceUID
    rows = metrics_by_name(compute_dvhs(manual, base.rtdose, plan))
    assert "v100_rx_pct" in rows["Boost"]  # ROI 1, pointed at by the dose reference
    auto = make_rtstruct(base.patient, base.ct, (OAR, PTV), algorithm="AUTOMATIC")
    rows = metrics_by_name(compute_dvhs(auto, base.rtdose, plan))
    assert "v100_rx_pct" not in rows["OAR"]  # ROI 1 of another structure set
    assert "v100_rx_pct" in rows["PTV"]  # a target by its interpreted type
