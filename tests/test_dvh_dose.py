"""RTDOSE handling: scaling, frame offsets in both DICOM forms, units, summing, plan-sum
preference and frame-of-reference checks."""

from __future__ import annotations

import copy

import pytest
from dvh_phantoms import course, metrics_by_name, slice_positions
from pydicom.uid import generate_uid

from rtnode.dvh import DVHConfig, DVHInputError, compute_dvhs
from rtnode.dvh.dose import load_dose, select_dose
from rtnode.phantom import linear_dose
from rtnode.phantom.dvh_truth import LinearField, stack_dvh
from rtnode.phantom.rt import DoseGrid, make_rtdose, make_rtplan
from rtnode.phantom.shapes import Sphere

PTV = Sphere("PTV", interpreted_type="PTV", center=(10.0, -5.0, 3.0), radius=20.0)
SHAPES = (PTV,)
GRAD = (0.05, -0.1, 0.15)


@pytest.fixture(scope="module")
def base():
    return course(GRAD, "default", SHAPES)


def truth(d0: float = 60.0, grad=GRAD) -> dict:
    return stack_dvh(PTV, slice_positions(), LinearField(d0, grad)).metrics()


def dmean(res) -> float:
    return metrics_by_name(res)["PTV"]["dmean_gy"]


def test_dose_grid_scaling_is_applied(base):
    ds = copy.deepcopy(base.rtdose)
    ds.DoseGridScaling = f"{float(ds.DoseGridScaling) * 2:.9e}"
    assert dmean(compute_dvhs(base.rtstruct, ds)) == pytest.approx(2 * truth()["dmean_gy"],
                                                                    abs=5e-3)


def test_absolute_and_relative_frame_offsets_give_the_same_dvh(base):
    absolute = make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                           linear_dose(60.0, GRAD), absolute_offsets=True)
    assert float(absolute.GridFrameOffsetVector[0]) != 0.0
    a = metrics_by_name(compute_dvhs(base.rtstruct, absolute))["PTV"]
    r = metrics_by_name(compute_dvhs(base.rtstruct, base.rtdose))["PTV"]
    for key in ("d98_gy", "d50_gy", "d2_gy", "dmean_gy"):
        assert a[key] == pytest.approx(r[key], abs=1e-6)
        assert a[key] == pytest.approx(truth()[key], abs=0.02)


def test_inconsistent_frame_offsets_are_an_error(base):
    ds = copy.deepcopy(base.rtdose)
    ds.GridFrameOffsetVector = [f"{float(v) + 7.0:g}" for v in ds.GridFrameOffsetVector]
    with pytest.raises(DVHInputError, match="GridFrameOffsetVector"):
        load_dose(ds)


def test_cgy_dose_is_converted_to_gy(base):
    cgy = make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                      linear_dose(60.0, GRAD), units="CGY")
    assert dmean(compute_dvhs(base.rtstruct, cgy)) == pytest.approx(truth()["dmean_gy"],
                                                                     abs=5e-3)


def test_relative_dose_needs_a_prescription(base):
    rel = make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                      linear_dose(1.0, tuple(g / 60.0 for g in GRAD)), units="RELATIVE")
    with pytest.raises(DVHInputError, match="RELATIVE"):
        compute_dvhs(base.rtstruct, rel)  # no RTPLAN, no configured prescription
    with_plan = compute_dvhs(base.rtstruct, rel, base.rtplan)  # TargetPrescriptionDose 60 Gy
    assert dmean(with_plan) == pytest.approx(truth()["dmean_gy"], abs=5e-3)
    configured = compute_dvhs(base.rtstruct, rel, None, DVHConfig(prescription_gy=30.0))
    assert dmean(configured) == pytest.approx(truth()["dmean_gy"] / 2, abs=5e-3)


def _boost(base, summation="PLAN", plan=None):
    """10 Gy uniform boost on its own, smaller 2 mm grid around the target."""
    grid = DoseGrid(origin=(-20.3, -35.1, -27.7), spacing=(2.0, 2.0, 2.0), shape=(31, 31, 31))
    return make_rtdose(base.patient, plan if plan is not None else base.rtplan, grid,
                       linear_dose(10.0), summation=summation)


def _boost_plan(base, relationship="PRIOR", label="BOOST"):
    return make_rtplan(base.patient, base.rtstruct, 10.0, label=label,
                       related=[(base.rtplan, relationship)] if relationship else [])


def test_primary_and_boost_related_by_the_plan_are_summed_on_a_common_grid(base):
    primary = make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                          linear_dose(50.0, GRAD))
    boost_plan = _boost_plan(base)
    res = compute_dvhs(base.rtstruct, [primary, _boost(base, plan=boost_plan)],
                       [base.rtplan, boost_plan])
    row = metrics_by_name(res)["PTV"]
    expected = truth(60.0)
    for key in ("d98_gy", "d50_gy", "d2_gy", "dmean_gy"):
        assert row[key] == pytest.approx(expected[key], abs=0.02), key
    assert row["dose_source"] == "sum of PLAN1+BOOST"
    assert any("sum of 2 RTDOSEs" in n for n in res.notes)
    # each plan is reported in its own dose too
    assert metrics_by_name(res, "BOOST")["PTV"]["dmean_gy"] == pytest.approx(10.0, abs=5e-3)
    assert metrics_by_name(res, "PLAN1")["PTV"]["dmean_gy"] == pytest.approx(
        truth(50.0)["dmean_gy"], abs=5e-3)


def test_a_boost_known_only_by_its_label_is_summed_only_by_rule(base):
    primary = make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                          linear_dose(50.0, GRAD))
    boost_plan = _boost_plan(base, relationship=None)
    doses = [primary, _boost(base, plan=boost_plan)]
    apart = compute_dvhs(base.rtstruct, doses, [base.rtplan, boost_plan])
    assert apart.dose_plan.course is None
    assert "none summed" in apart.dose_plan.describe()
    assert {r["dose_source"] for r in apart.metrics} == {"PLAN1", "BOOST"}
    assert not any(r["course_dose"] for r in apart.metrics)
    summed = compute_dvhs(base.rtstruct, doses, [base.rtplan, boost_plan],
                          DVHConfig(sum=["boost"]))
    assert metrics_by_name(summed)["PTV"]["dmean_gy"] == pytest.approx(
        truth(60.0)["dmean_gy"], abs=5e-3)


def test_plan_sum_is_preferred_over_summing(base):
    primary = make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                          linear_dose(50.0, GRAD))
    boost_plan = _boost_plan(base)
    plan_sum = make_rtdose(base.patient, [base.rtplan, boost_plan], base.default_dose_grid(),
                           linear_dose(70.0, GRAD), summation="MULTI_PLAN")
    res = compute_dvhs(base.rtstruct, [primary, _boost(base, plan=boost_plan), plan_sum],
                       [base.rtplan, boost_plan])
    assert dmean(res) == pytest.approx(truth(70.0)["dmean_gy"], abs=5e-3)
    assert metrics_by_name(res)["PTV"]["dose_source"] == "plan sum"


def test_select_dose_refuses_plans_it_cannot_combine(base):
    primary = make_rtdose(base.patient, base.rtplan, base.default_dose_grid(),
                          linear_dose(50.0, GRAD))
    boost_plan = _boost_plan(base, relationship=None, label="OTHER")
    boost_plan.RTPlanDate = base.rtplan.RTPlanDate
    with pytest.raises(DVHInputError, match="none summed"):
        select_dose([primary, _boost(base, plan=boost_plan)], plans=[base.rtplan, boost_plan])


def test_different_frames_of_reference_are_a_clear_error(base):
    other = copy.deepcopy(base.rtdose)
    other.FrameOfReferenceUID = generate_uid()
    with pytest.raises(DVHInputError) as info:
        compute_dvhs(base.rtstruct, other)
    message = str(info.value)
    assert base.rtstruct.FrameOfReferenceUID in message
    assert other.FrameOfReferenceUID in message
    assert "RTSTRUCT" in message and "RTDOSE" in message


def test_feet_first_orientation_is_read_in_patient_coordinates(base):
    """A grid stored right-to-left (IOP row cosine -1, so the slice normal is -z and the
    relative frame offsets run towards the feet) gives the same DVH."""
    grid = base.default_dose_grid()
    ds = copy.deepcopy(base.rtdose)
    arr = ds.pixel_array[::-1, :, ::-1].copy()
    xs, _, zs = grid.axes()
    ds.ImagePositionPatient = [float(xs[-1]), float(grid.origin[1]), float(zs[-1])]
    ds.ImageOrientationPatient = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelData = arr.tobytes()
    row = metrics_by_name(compute_dvhs(base.rtstruct, ds))["PTV"]
    for key in ("d98_gy", "d2_gy", "dmean_gy"):
        assert row[key] == pytest.approx(truth()[key], abs=0.02)


def test_prescriptions_of_summed_plans_add_up(base):
    from rtnode.phantom.rt import make_rtplan

    plan_a = make_rtplan(base.patient, base.rtstruct, 50.0, label="PRIMARY")
    plan_b = make_rtplan(base.patient, base.rtstruct, 10.0, label="BOOST",
                         related=[(plan_a, "CONCURRENT")])
    dose_a = make_rtdose(base.patient, plan_a, base.default_dose_grid(), linear_dose(50.0, GRAD))
    boost_grid = DoseGrid(origin=(-20.3, -35.1, -27.7), spacing=(2.0, 2.0, 2.0),
                          shape=(31, 31, 31))
    dose_b = make_rtdose(base.patient, plan_b, boost_grid, linear_dose(10.0))
    summed = compute_dvhs(base.rtstruct, [dose_a, dose_b], [plan_a, plan_b])
    assert summed.prescription_gy == pytest.approx(60.0)
    assert metrics_by_name(summed)["PTV"]["v100_rx_pct"] == pytest.approx(
        100 * float(stack_dvh(PTV, slice_positions(), LinearField(60.0, GRAD))
                    .volume_above([60.0])[0]) / truth()["volume_cc"] / 1000, abs=0.1)
    primary_only = compute_dvhs(base.rtstruct, dose_a, [plan_a, plan_b])
    assert primary_only.prescription_gy == pytest.approx(50.0)
