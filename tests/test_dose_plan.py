"""The dose plan of a course: replans, boosts and TPS plan sums, each sent in two arrival orders,
through grouping, the dose plan and the dvh stage — the DVH of each is what a physicist
expects (asserted on the PTV mean dose, which names the dose it was computed in)."""

from __future__ import annotations

import datetime as dt
import random

import pandas as pd
import pytest
from dose_courses import A_GY, B_GY, BOOST_GY, SCENARIOS, member

from rtnode.config import Config
from rtnode.courses.doseplan import DoseFacts, PlanFacts, classify
from rtnode.courses.grouping import group_courses
from rtnode.stages.base import StageContext
from rtnode.stages.dvh import compute_course_dvh

ORDERS = ("forward", "reverse")


def run_course(scenario, order: str, tmp_path, rule: dict | None = None):
    """Write the course to a storage folder, index it with RT objects arriving in ``order``,
    group it, and run the dvh stage with the revision's dose plan; returns (draft plan,
    dvh_metrics frame, dose_plan.json words)."""
    storage = tmp_path / f"storage-{order}"
    storage.mkdir(parents=True)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    arrivals = [*scenario.base.ct, scenario.base.rtstruct, *scenario.rt_objects(order)]
    members = []
    for n, ds in enumerate(arrivals):
        rel = f"{ds.Modality}_{n:04d}.dcm"
        ds.save_as(storage / rel, enforce_file_format=True)
        members.append(member(ds, rel, (start + dt.timedelta(seconds=n)).isoformat()))
    if order == "reverse":
        members = members[::-1]  # the index hands them over in another order too
    drafts = group_courses("P", members)
    assert len(drafts) == 1
    config = Config()
    roles = (rule or {}).get("sum", config.dvh.sum)
    dose = drafts[0].dose_plan(roles, storage)
    out = tmp_path / f"out-{order}"
    ctx = StageContext(course_id=1, patient_id="P", revision=1, members=drafts[0].members,
                       verdict={}, rule={"dose": dose}, storage_root=storage, out_dir=out,
                       config=config)
    compute_course_dvh(ctx)
    frame = pd.read_csv(out / "dvh_metrics.csv")
    return dose, frame, (out / "dose_plan.json").read_text()


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_dose_is_what_a_physicist_expects_in_either_arrival_order(name, order, tmp_path):
    scenario = SCENARIOS[name]()
    dose, frame, plan_json = run_course(scenario, order, tmp_path)
    ptv = frame[frame.roi_name == "PTV"].set_index("dose_source")
    # the course dose is the expected source, in the revision's plan and in the stage's output
    assert dose["course_source"] == scenario.course_source, dose["words"]
    course_rows = ptv[ptv.course_dose]
    assert list(course_rows.index) == [scenario.course_source]
    # every source's PTV mean dose is its own dose: nothing doubled, nothing lost
    assert set(ptv.index) == set(scenario.expected_dmean)
    for source, expected in scenario.expected_dmean.items():
        assert ptv.loc[source, "dmean_gy"] == pytest.approx(expected, abs=0.05), source
    assert scenario.course_source in plan_json


def test_replan_course_mean_dose_is_plan_b_not_a_plus_b(tmp_path):
    dose, frame, _ = run_course(SCENARIOS["replan_predecessor"](), "forward", tmp_path)
    course = frame[(frame.roi_name == "PTV") & frame.course_dose]
    assert course.dmean_gy.item() == pytest.approx(B_GY, abs=0.05)
    assert course.dmean_gy.item() < A_GY + B_GY - 1
    assert "PREDECESSOR" in dose["words"] and "superseded" in dose["words"]


def test_the_rule_sums_a_boost_known_only_by_its_label(tmp_path):
    scenario = SCENARIOS["plan_sum_multi_plan"]()
    scenario.doses = scenario.doses[:2]  # no TPS plan sum: A and a 'Boost' the data do not relate
    scenario.course_source = None
    _, frame, words = run_course(scenario, "forward", tmp_path / "apart")
    assert not frame.course_dose.any() and "none summed" in words
    assert set(frame.dose_source) == {"A", "Boost"}
    dose, frame, _ = run_course(scenario, "reverse", tmp_path / "summed", {"sum": ["boost"]})
    row = frame[(frame.roi_name == "PTV") & frame.course_dose]
    assert dose["course_source"] == "sum of A+Boost"
    assert row.dmean_gy.item() == pytest.approx(A_GY + BOOST_GY, abs=0.05)


# -- the classification itself, on facts ------------------------------------------------------

def _plan(uid, label="", date="20260101", approval="", rel=(), ss=("S",)):
    return PlanFacts(uid=uid, label=label, date=date, approval=approval, structure_sets=ss,
                     relations=tuple(rel))


def _dose(uid, plans, summation="PLAN"):
    return DoseFacts(uid=uid, summation=summation, plans=tuple(plans))


def test_classification_does_not_depend_on_the_order_of_its_inputs():
    plans = [_plan("1", "A"), _plan("2", "B", rel=[("1", "PREDECESSOR")]),
             _plan("3", "Boost", rel=[("2", "PRIOR")])]
    doses = [_dose("d1", ["1"]), _dose("d2", ["2"]), _dose("d3", ["3"])]
    first = classify(plans, doses).as_json()
    rng = random.Random(3)
    for _ in range(10):
        rng.shuffle(plans)
        rng.shuffle(doses)
        assert classify(plans, doses).as_json() == first
    assert first["course_source"] == "sum of B+Boost"


def test_an_unapproved_replan_does_not_replace_an_approved_plan():
    plans = [_plan("1", "A", approval="APPROVED"),
             _plan("2", "B", approval="UNAPPROVED", rel=[("1", "PREDECESSOR")])]
    plan = classify(plans, [_dose("d1", ["1"]), _dose("d2", ["2"])])
    assert plan.course.label == "A"
    assert "stays in use" in plan.describe()


def test_a_rejected_plan_is_never_the_course_dose():
    plans = [_plan("1", "A", date="20260101"),
             _plan("2", "B", date="20260201", approval="REJECTED")]
    plan = classify(plans, [_dose("d1", ["1"]), _dose("d2", ["2"])])
    assert plan.course.label == "A"


def test_alternatives_and_unrelated_same_day_plans_are_reported_separately():
    alt = classify([_plan("1", "A"), _plan("2", "B", rel=[("1", "ALTERNATIVE")])],
                   [_dose("d1", ["1"]), _dose("d2", ["2"])])
    assert alt.course is None and {s.role for s in alt.sources} == {"alternative"}
    unrelated = classify([_plan("1", "A"), _plan("2", "B")],
                         [_dose("d1", ["1"]), _dose("d2", ["2"])])
    assert unrelated.course is None and "none summed" in unrelated.describe()
    other_ss = classify([_plan("1", "A", ss=("S1",)), _plan("2", "B", date="20260301",
                                                         ss=("S2",))],
                        [_dose("d1", ["1"]), _dose("d2", ["2"])])
    assert other_ss.course is None  # a later date on another structure set is not a replan


def test_beam_doses_of_one_plan_add_up_to_its_dose():
    plan = classify([_plan("1", "A")], [_dose("b1", ["1"], "BEAM"), _dose("b2", ["1"], "BEAM")])
    assert plan.course.rtdose == ["b1", "b2"] and plan.mode == "single"
