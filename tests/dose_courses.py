"""Generated courses with several plans — replans, boosts, TPS plan sums — and the dose a
physicist expects for each, for the dose-plan tests.

Every plan's dose is uniform inside the phantom (D0 plus a gentle gradient), so a target's mean
dose names the dose it was computed in: plan A 14 Gy, the replan B 12 Gy, the boost 4 Gy, and
a sum is their sum.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from rtnode.courses.grouping import Member
from rtnode.phantom import CTGeometry, Patient, PhantomCourse, linear_dose
from rtnode.phantom.rt import make_rtdose, make_rtplan
from rtnode.phantom.shapes import Sphere
from rtnode.store.attributes import instance_record, parse_dataset
from rtnode.store.part10 import split_part10

GEOMETRY = CTGeometry(rows=40, columns=40, pixel_spacing=(6.0, 6.0), slices=24,
                      slice_spacing=3.0)
PTV = Sphere("PTV", interpreted_type="PTV", center=(0.0, 0.0, 0.0), radius=20.0)
GRAD = (0.01, -0.02, 0.015)  # Gy/mm: gentle, so the mean of a centred sphere is D0 exactly
A_GY, B_GY, BOOST_GY = 14.0, 12.0, 4.0


@dataclass
class Scenario:
    """A course and, per dose source label, the PTV mean dose expected in it."""

    name: str
    base: PhantomCourse
    plans: list[Dataset]
    doses: list[Dataset]
    course_source: str | None  # label of the course dose, None: no course dose
    expected_dmean: dict[str, float] = field(default_factory=dict)

    @property
    def datasets(self) -> list[Dataset]:
        return [*self.base.ct, self.base.rtstruct, *self.plans, *self.doses]

    def rt_objects(self, order: str) -> list[Dataset]:
        """Plans and doses in one of two arrival orders: 'forward' or 'reverse'."""
        rt = [*self.plans, *self.doses]
        return rt if order == "forward" else rt[::-1]


def _base(patient_id: str) -> PhantomCourse:
    c = PhantomCourse(patient=Patient(patient_id=patient_id), geometry=GEOMETRY,
                      shapes=[PTV], dose=linear_dose(A_GY, GRAD), prescription_gy=A_GY)
    c.build()
    c.rtplan.RTPlanLabel = "A"
    c.rtplan.RTPlanDate = "20260105"
    return c


def _dose(c: PhantomCourse, plans, d0: float, summation: str = "PLAN") -> Dataset:
    return make_rtdose(c.patient, plans, c.default_dose_grid(), linear_dose(d0, GRAD),
                       summation=summation)


def _fresh_dose(c: PhantomCourse) -> Dataset:
    """Plan A's dose, made again so its UID is new (the course's own RTDOSE is reused)."""
    return _dose(c, c.rtplan, A_GY)


def replan_predecessor(pid: str = "REPLAN1") -> Scenario:
    """B references A as PREDECESSOR (same day): B supersedes A."""
    c = _base(pid)
    b = make_rtplan(c.patient, c.rtstruct, B_GY, label="B", related=[(c.rtplan, "PREDECESSOR")],
                    plan_date="20260105")
    return Scenario("replan_predecessor", c, [c.rtplan, b], [c.rtdose, _dose(c, b, B_GY)], "B",
                    {"B": B_GY, "A": A_GY})


def replan_by_date(pid: str = "REPLAN2") -> Scenario:
    """B has no relationship, a later RTPlanDate and the same structure set: a replan."""
    c = _base(pid)
    b = make_rtplan(c.patient, c.rtstruct, B_GY, label="B", plan_date="20260120")
    return Scenario("replan_by_date", c, [c.rtplan, b], [c.rtdose, _dose(c, b, B_GY)], "B",
                    {"B": B_GY, "A": A_GY})


def primary_boost(pid: str = "BOOST1") -> Scenario:
    """The boost references A as PRIOR (delivered after it): doses add."""
    c = _base(pid)
    boost = make_rtplan(c.patient, c.rtstruct, BOOST_GY, label="Boost",
                        related=[(c.rtplan, "PRIOR")], plan_date="20260105")
    return Scenario("primary_boost", c, [c.rtplan, boost],
                    [c.rtdose, _dose(c, boost, BOOST_GY)], "sum of A+Boost",
                    {"sum of A+Boost": A_GY + BOOST_GY, "A": A_GY, "Boost": BOOST_GY})


def plan_sum(pid: str = "PSUM1", summation: str = "MULTI_PLAN") -> Scenario:
    """A, a boost the data do not relate, and the TPS plan sum of both (MULTI_PLAN, or PLAN
    referencing both plans): the plan sum is the course dose, nothing is added twice."""
    c = _base(pid)
    boost = make_rtplan(c.patient, c.rtstruct, BOOST_GY, label="Boost", plan_date="20260105")
    total = _dose(c, [c.rtplan, boost], A_GY + BOOST_GY, summation=summation)
    return Scenario(f"plan_sum_{summation.lower()}", c, [c.rtplan, boost],
                    [c.rtdose, _dose(c, boost, BOOST_GY), total], "plan sum",
                    {"plan sum": A_GY + BOOST_GY, "A": A_GY, "Boost": BOOST_GY})


SCENARIOS = {"replan_predecessor": replan_predecessor, "replan_by_date": replan_by_date,
             "primary_boost": primary_boost,
             "plan_sum_multi_plan": lambda: plan_sum("PSUM1", "MULTI_PLAN"),
             "plan_sum_plan": lambda: plan_sum("PSUM2", "PLAN")}


def member(ds: Dataset, path: str, received_at: str) -> Member:
    """A member exactly as the index records it (the archive's parsing path)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    _, data = split_part10(buf.getvalue())
    header, _ = parse_dataset(data, False, True)
    rec = instance_record(header)
    return Member(rec.sop_instance_uid, rec.sop_class_uid, rec.modality, rec.series_uid,
                  rec.study_uid, rec.frame_of_reference_uid, path, received_at,
                  attrs=rec.attrs, refs=tuple(rec.refs))


def new_uid() -> str:
    return generate_uid()
