"""``rtnode delete``: a dry run changes nothing; --yes removes files, index rows and course
outputs together, with an audit event; a course with a stage running is refused; the node goes
on receiving (even the very series just deleted)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from held import rules_dir, send_and_wait, small_course
from peers import storescu, store_responses

pytestmark = pytest.mark.network


def rows(node, sql, args=()):
    con = sqlite3.connect(node.storage / "index.sqlite")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def files_of(node, patient_id):
    return [node.storage / r[0] for r in rows(
        node, "SELECT i.path FROM instances i JOIN series se ON i.series_fk=se.id JOIN studies st"
              " ON se.study_fk=st.id JOIN patients p ON st.patient_fk=p.id WHERE p.patient_id=?",
        (patient_id,))]


@pytest.fixture
def two_courses(node_factory, tmp_path):
    rules = rules_dir(tmp_path, ["manifest"])
    node = node_factory(courses={"rules_dir": str(rules), "quiet_seconds": 1.0})
    files = small_course(tmp_path, "DELA") + small_course(tmp_path, "DELB")
    courses = send_and_wait(node, files, 2)
    by_patient = {c["patient_id"]: c for c in courses}
    return node, by_patient, tmp_path


def test_dry_run_deletes_nothing_and_yes_deletes_files_rows_and_outputs(two_courses):
    node, courses, tmp_path = two_courses
    a, b = courses["DELA"], courses["DELB"]
    a_files = files_of(node, "DELA")
    assert len(a_files) == 27 and all(f.exists() for f in a_files)
    out_a = node.storage / "courses" / str(a["id"])
    assert out_a.is_dir()

    dry = node.cli("delete", "course", str(a["id"]))
    assert dry.returncode == 0, dry.stderr
    assert "would delete course" in dry.stdout and "27 instance(s)" in dry.stdout
    assert "dry run" in dry.stdout
    assert all(f.exists() for f in a_files) and out_a.is_dir()
    assert len(node.courses()) == 2
    plan = node.cli_json("delete", "course", str(a["id"]))
    assert plan["dry_run"] and plan["instances"] == 27 and plan["courses"] == [a["id"]]

    done = node.cli("delete", "course", str(a["id"]), "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted course" in done.stdout
    assert not any(f.exists() for f in a_files)
    assert not out_a.exists()
    assert files_of(node, "DELA") == []
    assert rows(node, "SELECT COUNT(*) FROM patients WHERE patient_id='DELA'")[0][0] == 0
    assert rows(node, "SELECT COUNT(*) FROM stage_runs WHERE course_fk=?", (a["id"],))[0][0] == 0
    assert [c["patient_id"] for c in node.courses()] == ["DELB"]
    # the other course is untouched
    assert len(files_of(node, "DELB")) == 27
    assert all(f.exists() for f in files_of(node, "DELB"))
    assert (node.storage / "courses" / str(b["id"])).is_dir()
    # audit event
    ev = rows(node, "SELECT calling_ae, detail FROM events WHERE kind='deleted'")
    assert len(ev) == 1 and ev[0][0] == "cli"
    detail = json.loads(ev[0][1])
    assert detail["what"] == f"course {a['id']}" and detail["instances"] == 27

    # the running node accepts the very same course again, at once (the hierarchy rows it
    # remembered are gone), and processes it anew
    again = storescu(node.port, sorted((tmp_path / "DELA").glob("*.dcm")), calling="TPS")
    assert store_responses(again.stdout).count("Success") == 27, again.stdout[-2000:]
    node.wait_courses(lambda cs: any(c["patient_id"] == "DELA" and c["state"] == "done"
                                     for c in cs), timeout=120, what="DELA again")


def test_deleting_a_series_removes_its_course_and_regroups_what_is_left(two_courses):
    node, courses, _ = two_courses
    a = courses["DELA"]
    dose_series = rows(node, "SELECT se.series_uid FROM series se JOIN studies st ON"
                             " se.study_fk=st.id JOIN patients p ON st.patient_fk=p.id"
                             " WHERE p.patient_id='DELA' AND se.modality='RTDOSE'")[0][0]
    # a file only the old outputs hold: the regrouped course may recreate its folder at once
    marker = node.storage / "courses" / str(a["id"]) / "old-output.txt"
    marker.write_text("written before the delete")
    r = node.cli("delete", "series", dose_series, "--yes")
    assert r.returncode == 0, r.stderr
    assert "1 instance(s)" in r.stdout
    assert rows(node, "SELECT COUNT(*) FROM instances WHERE modality='RTDOSE' AND series_fk IN"
                      " (SELECT id FROM series WHERE series_uid=?)", (dose_series,))[0][0] == 0
    assert not marker.exists()
    # CT, RTSTRUCT and RTPLAN stay and become a course again, without the dose
    cs = node.wait_courses(lambda cs: any(c["patient_id"] == "DELA" and c["state"] == "done"
                                          for c in cs), timeout=120, what="regrouped DELA")
    again = next(c for c in cs if c["patient_id"] == "DELA")
    assert again["instance_count"] == 26 and again["revision"] == 1
    assert not any(o["modality"] == "RTDOSE" for o in node.cli_json(
        "course", "show", str(again["id"]))["objects"])


def test_unknown_selection_and_busy_course_are_refused(node_factory, tmp_path):
    rules = rules_dir(tmp_path, ["slow_gpu"])
    node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "60"},
                        courses={"rules_dir": str(rules), "quiet_seconds": 1.0},
                        stages={"plugins": ["stage_plugins"]})
    r = storescu(node.port, small_course(tmp_path, "BUSY"), calling="TPS")
    assert r.returncode == 0
    cs = node.wait_courses(lambda cs: cs and any(s["state"] == "running"
                                                 for s in cs[0]["stages"]),
                           timeout=120, what="a running stage")
    course_id = cs[0]["id"]
    refused = node.cli("delete", "course", str(course_id), "--yes")
    assert refused.returncode == 1
    assert "running" in refused.stderr
    assert len(files_of(node, "BUSY")) == 27
    assert all(f.exists() for f in files_of(node, "BUSY"))
    assert rows(node, "SELECT COUNT(*) FROM events WHERE kind='deleted'")[0][0] == 0

    for args in (("course", "999"), ("study", "1.2.3"), ("series", "1.2.3"),
                 ("patient", "NOBODY")):
        r = node.cli("delete", *args)
        assert r.returncode == 1 and "no " in r.stderr, r.stderr


def test_deleting_a_patient_removes_every_row_of_it(two_courses):
    node, courses, _ = two_courses
    r = node.cli("delete", "patient", "DELB", "--yes")
    assert r.returncode == 0, r.stderr
    assert rows(node, "SELECT COUNT(*) FROM courses WHERE patient_id='DELB'")[0][0] == 0
    assert files_of(node, "DELB") == []
    assert not (node.storage / "courses" / str(courses["DELB"]["id"])).exists()
    assert [c["patient_id"] for c in node.courses()] == ["DELA"]
