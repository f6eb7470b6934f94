"""Course grouping, completeness and rules, on members made from phantom datasets."""

from __future__ import annotations

import io

import pytest
from pydicom.uid import generate_uid

from rtnode.courses.completeness import judge, slice_gaps
from rtnode.courses.grouping import Member, group_courses
from rtnode.courses.rules import CourseFacts, RulesError, load_rules
from rtnode.phantom import CTGeometry, Patient, PhantomCourse
from rtnode.store.attributes import instance_record, parse_dataset
from rtnode.store.part10 import split_part10

GEOMETRY = CTGeometry(rows=16, columns=16, pixel_spacing=(20.0, 20.0), slices=12,
                      slice_spacing=5.0)


def members_of(*datasets, t: str = "2026-01-01T00:00:00+00:00") -> list[Member]:
    """Members exactly as the index would record them (same parsing path as the archive)."""
    out = []
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        meta, data = split_part10(buf.getvalue())
        header, _ = parse_dataset(data, False, True)
        rec = instance_record(header)
        out.append(Member(rec.sop_instance_uid, rec.sop_class_uid, rec.modality, rec.series_uid,
                          rec.study_uid, rec.frame_of_reference_uid, "x", t,
                          attrs=rec.attrs, refs=tuple(rec.refs)))
    return out


def course(patient: Patient, **kw) -> PhantomCourse:
    return PhantomCourse(patient=patient, geometry=GEOMETRY, **kw).build()


def test_one_course_with_every_rt_object():
    c = course(Patient(patient_id="P"))
    drafts = group_courses("P", members_of(*c.datasets))
    assert len(drafts) == 1
    d = drafts[0]
    assert d.key == f"series:{c.ct[0].SeriesInstanceUID}"
    assert sorted({m.modality for m in d.members}) == ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]
    assert judge(d).complete and judge(d).slice_spacing_mm == pytest.approx(5.0)
    plan = d.dose_plan()
    assert plan["mode"] == "single" and plan["rtdose"] == [c.rtdose.SOPInstanceUID]
    assert plan["course_source"] == "PLAN1"
    assert [s["rtplan"] for s in plan["sources"]] == [[c.rtplan.SOPInstanceUID]]
    assert plan["words"].startswith("Course dose: 'PLAN1'")


def test_4d_phases_on_one_frame_of_reference_stay_separate_and_rt_follows_references():
    p = Patient(patient_id="P")
    planning, phase = course(p), PhantomCourse(patient=p, geometry=GEOMETRY).build(False)
    drafts = group_courses("P", members_of(*phase.ct, *planning.datasets))
    assert len(drafts) == 2
    rt_home = next(d for d in drafts if d.of("RTSTRUCT"))
    assert rt_home.anchor_series_uid == planning.ct[0].SeriesInstanceUID
    assert len(rt_home.of("CT")) == 12 and len(rt_home.members) == 15


def test_plan_on_another_frame_of_reference_is_another_course():
    first = course(Patient(patient_id="P"))
    replan = course(Patient(patient_id="P", study_uid=first.patient.study_uid,
                            frame_of_reference_uid=generate_uid()))
    drafts = group_courses("P", members_of(*first.datasets, *replan.datasets))
    assert len(drafts) == 2
    assert {d.frame_of_reference_uid for d in drafts} == {
        first.patient.frame_of_reference_uid, replan.patient.frame_of_reference_uid}
    assert all(len(d.of("RTPLAN")) == 1 and len(d.of("RTDOSE")) == 1 for d in drafts)


def test_rtstruct_before_its_ct_anchors_on_the_referenced_series_and_waits():
    c = course(Patient(patient_id="P"))
    early = group_courses("P", members_of(c.rtstruct, c.rtplan))
    assert len(early) == 1 and early[0].key == f"series:{c.ct[0].SeriesInstanceUID}"
    verdict = judge(early[0])
    assert not verdict.complete
    assert verdict.missing[0].startswith("no planning CT received")
    later = group_courses("P", members_of(*c.datasets))
    assert [d.key for d in later] == [early[0].key]


def test_missing_and_irregular_slices_are_described():
    positions = [[0, 0, z] for z in (0, 2.5, 5, 7.5, 15, 17.5, 20)]
    spacing, problems = slice_gaps(positions, [1, 0, 0, 0, 1, 0])
    assert spacing == 2.5
    assert problems == ["2 missing CT slice(s) between 7.50 and 15.00 mm (spacing 2.50 mm)"]
    _, problems = slice_gaps([[0, 0, 0], [0, 0, 0]], [1, 0, 0, 0, 1, 0])
    assert problems == ["CT has two slices at the same position"]
    # feet-first / reversed stacks and oblique normals are measured along the normal
    spacing, problems = slice_gaps([[0, 0, -z] for z in (0, 3, 6, 9)], [1, 0, 0, 0, -1, 0])
    assert spacing == 3.0 and problems == []


def test_dose_classification_prefers_the_tps_plan_sum_and_never_sums_on_a_label_alone():
    p = Patient(patient_id="P")
    c = course(p)
    from rtnode.phantom import make_rtdose, make_rtplan
    boost_plan = make_rtplan(p, c.rtstruct, prescription_gy=10.0, label="BOOST")
    boost = make_rtdose(p, boost_plan, c.default_dose_grid(), lambda x, y, z: x * 0 + 10.0)
    members = members_of(*c.datasets, boost_plan, boost)
    plan = group_courses("P", members)[0].dose_plan()
    assert plan["mode"] == "separate" and plan["course_source"] is None
    assert sorted(plan["rtdose"]) == sorted([c.rtdose.SOPInstanceUID, boost.SOPInstanceUID])
    summed = group_courses("P", members)[0].dose_plan(["boost"])
    assert summed["mode"] == "sum" and summed["course_source"] == "sum of PLAN1+BOOST"
    total = make_rtdose(p, [c.rtplan, boost_plan], c.default_dose_grid(),
                        lambda x, y, z: x * 0 + 70.0, summation="MULTI_PLAN")
    plan = group_courses("P", members + members_of(total))[0].dose_plan()
    assert plan["mode"] == "tps_plan_sum" and plan["course_source"] == "plan sum"
    assert plan["sources"][0]["rtdose"] == [total.SOPInstanceUID]


def test_a_dose_rule_names_file_line_and_key_when_misspelt(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - name: boosted\n    stages: [dvh]\n    dose: {sum: [bost]}\n")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path, ["manifest", "dvh"])
    assert "r.yaml:4" in str(info.value) and "rules[0].dose.sum" in str(info.value)
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - name: boosted\n    stages: [dvh]\n    dose: {sum: [boost]}\n")
    assert load_rules(tmp_path, ["manifest", "dvh"]).rules[0].dose.sum == ["boost"]


def test_rules_select_by_calling_ae_modalities_and_description(tmp_path):
    (tmp_path / "10-tps.yaml").write_text(
        "rules:\n"
        "  - name: eclipse-with-dose\n"
        "    match: {calling_ae: [ECLIPSE*], has_rtdose: true, study_description: '^rt '}\n"
        "    stages: [manifest, dvh]\n"
        "    quiet_seconds: 5\n"
        "  - name: cohort\n"
        "    match: {tag: cohort}\n"
        "    stages: [manifest]\n"
        "    priority: cohort\n")
    rules = load_rules(tmp_path, ["manifest", "dvh"])
    facts = CourseFacts(calling_ae="ECLIPSE2", modalities=frozenset({"CT", "RTDOSE"}),
                        study_description="RT planning")
    assert rules.select(facts).name == "eclipse-with-dose"
    assert rules.select(CourseFacts(calling_ae="ECLIPSE2", tag="cohort")).name == "cohort"
    assert rules.select(CourseFacts(calling_ae="OTHER")).name == "default"


def test_rules_errors_name_file_line_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("rules:\n"
                 "  - name: one\n"
                 "    stages: [manifest, segmentt]\n"
                 "  - name: two\n"
                 "    match: {calling_ae: [X], modalitys: [CT]}\n"
                 "  - name: one\n"
                 "    stages: [dvh]\n"
                 "  - name: four\n"
                 "    match: {series_description: '(['}\n")
    with pytest.raises(RulesError) as exc:
        load_rules(tmp_path, ["manifest", "dvh"])
    problems = exc.value.problems
    assert problems[0].startswith(f"{f}:3: rules[0].stages: unknown stage 'segmentt'")
    assert problems[1] == (f"{f}:5: rules[1].match.modalitys: unknown key "
                           "(did you mean 'modalities'?)")
    assert problems[2] == f"{f}:6: rule name 'one' already used at {f}:2"
    assert problems[3].startswith(f"{f}:9: rules[3].match.series_description:")
    assert "not a valid regular expression" in problems[3]


def test_a_rule_may_override_radiomics_settings_and_they_are_checked(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - name: lung\n"
        "    stages: [manifest]\n"
        "    radiomics: {min_voxels: 64, skip_rois: [BODY, Lung*]}\n")
    rule = load_rules(tmp_path, ["manifest"]).rules[0]
    assert rule.radiomics == {"min_voxels": 64, "skip_rois": ["BODY", "Lung*"]}
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - name: lung\n"
        "    stages: [manifest]\n"
        "    radiomics: {min_voxel: 64}\n")
    with pytest.raises(RulesError) as exc:
        load_rules(tmp_path, ["manifest"])
    assert exc.value.problems[0].startswith(f"{tmp_path / 'r.yaml'}:4: rules[0].radiomics")
    assert "min_voxel" in exc.value.problems[0]
