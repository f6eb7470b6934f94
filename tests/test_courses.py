"""From arrivals to courses to stage runs, end to end with storescu and a running node."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
from pathlib import Path

import pytest

from peers import dcmtk_env, require, store_responses, storescu
from rtnode.phantom import CTGeometry, Patient, PhantomCourse

pytestmark = pytest.mark.network

SMALL = CTGeometry(rows=48, columns=48, pixel_spacing=(6.0, 6.0), slices=30, slice_spacing=3.0)


def write_course(folder: Path, patient: Patient | None = None, with_rt: bool = True,
                 geometry: CTGeometry = SMALL) -> dict[str, list[Path]]:
    course = PhantomCourse(patient=patient or Patient(), geometry=geometry).build(with_rt)
    by: dict[str, list[Path]] = {}
    for p in course.write(folder):
        by.setdefault(p.name.split("_")[0], []).append(p)
    return by


def ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def stage(course: dict, name: str) -> dict:
    return next(s for s in course["stages"] if s["stage"] == name)


def settled(courses: list[dict], n: int = 1) -> bool:
    return len(courses) == n and all(c["state"] in ("done", "failed") for c in courses)


def test_course_in_random_order_over_two_associations_is_one_course(node, tmp_path):
    files = write_course(tmp_path / "c", Patient(patient_id="ORDER1"))
    everything = [f for group in files.values() for f in group]
    random.Random(7).shuffle(everything)
    half = len(everything) // 2
    procs = [subprocess.Popen([require("storescu"), "-aec", "RTNODE", "-aet", f"TPS{i}",
                               "127.0.0.1", str(node.port), *map(str, part)],
                              env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i, part in enumerate((everything[:half], everything[half:]))]
    for p in procs:
        assert p.wait(120) == 0, p.stdout.read()

    courses = node.wait_courses(settled, what="one settled course")
    c = courses[0]
    assert c["state"] == "done" and c["patient_id"] == "ORDER1" and c["revision"] == 1
    assert c["complete"] and c["missing"] == []
    assert c["instance_count"] == len(everything)
    assert stage(c, "manifest")["state"] == "done"
    assert stage(c, "dvh")["state"] == "done"
    # ready only after the quiet period
    first_queued = min(ts(s["queued_at"]) for s in c["stages"] if s["queued_at"])
    assert (first_queued - ts(c["last_received_at"])).total_seconds() >= 2.0
    manifest = json.loads((Path(c["output_dir"]) / "course.json").read_text())
    assert manifest["complete"] is True
    assert manifest["counts"] == {"CT": 30, "RTSTRUCT": 1, "RTPLAN": 1, "RTDOSE": 1}
    assert manifest["dose"]["mode"] == "single"
    assert (Path(c["output_dir"]) / "dvh_metrics.csv").exists()


def test_ct_only_study_is_a_course_and_two_ct_series_are_two(node, tmp_path):
    patient = Patient(patient_id="TWOCT")
    first = write_course(tmp_path / "a", patient, with_rt=False)
    second = write_course(tmp_path / "b", patient, with_rt=False)  # same study, same FoR (4D)
    r = storescu(node.port, first["CT"] + second["CT"])
    assert store_responses(r.stdout) == ["Success"] * 60
    courses = node.wait_courses(lambda cs: settled(cs, 2), what="two settled courses")
    assert [c["instance_count"] for c in courses] == [30, 30]
    for c in courses:
        assert c["state"] == "done"
        assert stage(c, "manifest")["state"] == "done"
        dvh = stage(c, "dvh")
        assert dvh["state"] == "skipped" and dvh["reason"] == "course has no RTSTRUCT, RTDOSE"


def test_missing_slices_wait_then_run_at_max_wait_with_the_gap_recorded(node, tmp_path):
    files = write_course(tmp_path / "c", Patient(patient_id="GAPPY"))
    ct = files["CT"]
    sent = ct[:10] + ct[13:] + files["RTSTRUCT"] + files["RTPLAN"] + files["RTDOSE"]
    assert store_responses(storescu(node.port, sent).stdout) == ["Success"] * len(sent)
    waiting = node.wait_courses(lambda cs: cs and cs[0]["state"] == "waiting",
                                what="a waiting course")
    assert waiting[0]["revision"] == 0 and waiting[0]["stages"] == []
    c = node.wait_courses(settled, what="the course to run at max-wait")[0]
    assert not c["complete"]
    assert any("3 missing CT slice(s)" in m for m in c["missing"])
    assert any(m.startswith("3 CT slice(s) referenced by RTSTRUCT") for m in c["missing"])
    ran = min(ts(s["queued_at"]) for s in c["stages"] if s["queued_at"])
    assert (ran - ts(c["last_received_at"])).total_seconds() >= 8.0
    manifest = json.loads((Path(c["output_dir"]) / "course.json").read_text())
    assert manifest["complete"] is False and manifest["missing"] == c["missing"]


def test_late_rtdose_makes_revision_2_and_only_changed_stages_rerun(node, tmp_path):
    files = write_course(tmp_path / "c", Patient(patient_id="LATE"))
    first = files["CT"] + files["RTSTRUCT"] + files["RTPLAN"]
    assert store_responses(storescu(node.port, first).stdout) == ["Success"] * len(first)
    c1 = node.wait_courses(settled, what="revision 1")[0]
    assert c1["revision"] == 1 and stage(c1, "dvh")["state"] == "skipped"
    assert c1["complete"]  # a plan without its dose yet is complete: doses are optional
    assert store_responses(storescu(node.port, files["RTDOSE"]).stdout) == ["Success"]
    c2 = node.wait_courses(lambda cs: settled(cs) and cs[0]["revision"] == 2,
                           what="revision 2")[0]
    assert stage(c2, "manifest")["state"] == "done"
    assert stage(c2, "dvh")["state"] == "done"
    assert c2["output_dir"].endswith("/r2")
    assert (Path(c2["output_dir"]) / "dvh_metrics.csv").exists()


def test_unchanged_inputs_reuse_the_previous_revision(node_factory, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - name: ct-only\n    stages: [manifest, slow_gpu]\n")
    node = node_factory(stages={"plugins": ["stage_plugins"]}, courses={"rules_dir": str(rules)},
                        env={"RTNODE_TEST_STAGE_SECONDS": "0.1"})
    files = write_course(tmp_path / "c", Patient(patient_id="REUSE"))
    assert store_responses(storescu(node.port, files["CT"]).stdout) == ["Success"] * 30
    node.wait_courses(settled, what="revision 1")
    assert store_responses(storescu(node.port, files["RTSTRUCT"]).stdout) == ["Success"]
    c = node.wait_courses(lambda cs: settled(cs) and cs[0]["revision"] == 2)[0]
    assert stage(c, "manifest")["state"] == "done"  # reads every object: reruns
    gpu = stage(c, "slow_gpu")  # reads the CT only: unchanged, reused
    assert gpu["state"] == "skipped" and gpu["reason"] == "inputs unchanged since r1"
    assert gpu["reused_revision"] == 1


def test_demo_sends_a_course_and_follows_it_to_done(node):
    r = node.cli("demo", "--timeout", "120")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sent 67 of 67 objects" in r.stdout
    assert "course 1 done; outputs in" in r.stdout
    assert "dvh_metrics.csv" in r.stdout and "course.json" in r.stdout
    c = node.courses()[0]
    assert c["patient_id"].startswith("DEMO") and c["state"] == "done"
