"""TPS DVHs read with unit checks, and QC dvh_vs_tps with size- and dose-aware tolerances.

The TPS DVHs are the exact DVHs of the contour stack (what a careful TPS would export); an
Eclipse-style export writes DVHMeanDose/DVHMaximumDose in % of the prescription next to a
DVHData curve in Gy."""

from __future__ import annotations

import numpy as np
import pytest
from dvh_phantoms import slice_positions

from rtnode.dvh import compute_dvhs
from rtnode.phantom import PhantomCourse, linear_dose
from rtnode.phantom.dvh_truth import LinearField, stack_dvh
from rtnode.phantom.dvhseq import make_dvh_item
from rtnode.phantom.rt import make_rtdose
from rtnode.phantom.shapes import EllipticBody, Sphere
from rtnode.qc import dose_checks
from rtnode.qc.config import QCConfig
from rtnode.qc.course import folder_course

RX = 14.0
GRAD = (0.02, -0.03, 0.04)
PTV = Sphere("PTV", interpreted_type="PTV", center=(0.0, 0.0, 0.0), radius=20.0)
SMALL = Sphere("Small", interpreted_type="ORGAN", center=(40.0, 30.0, 0.0), radius=5.0)  # 0.52 cc
SHAPES = [PTV, SMALL, EllipticBody(semi_x=120.0, semi_y=90.0)]


def tps_items(eclipse: bool, shift_gy: float = 0.0, shift_roi: str = "Small"):
    """DVHSequence items of PTV (ROI 1) and Small (ROI 2) from the contour-stack truth; the
    ``shift_roi``'s curve moved by ``shift_gy``; Eclipse style: statistics in % of RX."""
    items = []
    field = LinearField(RX, GRAD)
    for number, shape in ((1, PTV), (2, SMALL)):
        truth = stack_dvh(shape, slice_positions(), field)
        doses = np.arange(0.0, 20.0, 0.01)
        moved = shift_gy if shape.name == shift_roi else 0.0
        item = make_dvh_item(number, doses, truth.volume_above(doses - moved) / 1000.0,
                             mean_gy=truth.dmean_gy + moved)
        if eclipse:
            item.DVHMeanDose = f"{100.0 * (truth.dmean_gy + moved) / RX:.4f}"
            item.DVHMaximumDose = f"{100.0 * (truth.dmax_gy + moved) / RX:.4f}"
        items.append(item)
    return items


def course_with(items) -> PhantomCourse:
    c = PhantomCourse(shapes=SHAPES, dose=linear_dose(RX, GRAD), prescription_gy=RX).build()
    c.rtdose = make_rtdose(c.patient, c.rtplan, c.default_dose_grid(), c.dose, dvhs=items)
    return c


def qc_check(c: PhantomCourse, folder):
    c.write(folder)
    return dose_checks.dvh_vs_tps(folder_course(folder), QCConfig())


@pytest.fixture(scope="module")
def eclipse_course():
    return course_with(tps_items(eclipse=True))


def test_tps_mean_dose_comes_from_the_curve_when_the_header_is_in_percent(eclipse_course):
    c = eclipse_course
    res = compute_dvhs(c.rtstruct, c.rtdose, c.rtplan)
    rows = {r["roi_name"]: r for r in res.tps_comparison}
    truth = stack_dvh(PTV, slice_positions(), LinearField(RX, GRAD))
    ptv = rows["PTV"]
    assert ptv["tps_dmean_gy"] == pytest.approx(truth.dmean_gy, abs=0.01)  # not 100 %
    assert abs(ptv["dmean_diff_gy"]) < 0.02
    assert ptv["tps_header_check"] == "% of prescription"
    assert ptv["tps_dmean_header"] == pytest.approx(100.0 * truth.dmean_gy / RX, abs=1e-3)
    assert any("% of the prescription" in n for n in res.notes)
    # the JSON output never carries the per-point lists
    assert all(not k.startswith("_") for r in res.to_json_dict()["tps_comparison"] for k in r)


def test_qc_passes_matching_dvhs_and_says_the_header_was_in_percent(eclipse_course, tmp_path):
    check = qc_check(eclipse_course, tmp_path)
    assert check.status == "warn", check.reason  # a warning about the header, not the DVHs
    assert "DVHMeanDose in % of the prescription" in check.reason
    assert {d["roi_name"]: d["status"] for d in check.details} == {"PTV": "pass",
                                                                   "Small": "pass"}


def test_a_small_roi_slightly_off_in_dose_passes_a_real_dose_error_fails(tmp_path):
    """0.1 Gy on a 0.5 cc ROI moves much of its volume (its DVH is steep) but is far inside a
    2 % of prescription dose tolerance; 1.5 Gy (11 % of RX) is a different dose."""
    small_shift = qc_check(course_with(tps_items(False, 0.1)), tmp_path / "a")
    detail = {d["roi_name"]: d for d in small_shift.details}
    assert detail["Small"]["max_volume_diff_pct"] > 5.0  # what a volume-only check failed on
    assert small_shift.status == "pass", small_shift.reason
    wrong = qc_check(course_with(tps_items(False, 1.5, "PTV")), tmp_path / "b")
    assert wrong.status == "fail"
    assert wrong.reason.startswith("PTV: ΔV up to")  # the ROI that drove the verdict
    assert "Small" not in wrong.reason
