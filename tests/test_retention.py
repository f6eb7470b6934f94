"""Retention deletes exactly what the policy says: received instances of done clinical courses
after N days (course and outputs kept), whole finished cohort courses after M days, and under
disk pressure the oldest eligible data first — never a course that has not been processed."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import pytest

from held import rules_dir, small_course
from peers import storescu

from rtnode.config import RetentionConfig
from rtnode.store.index import Index
from rtnode.store.retention import Retention

pytestmark = pytest.mark.network


def q(storage, sql, args=()):
    con = sqlite3.connect(storage / "index.sqlite")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def held(storage, patient_id):
    return q(storage, "SELECT i.path, i.origin FROM instances i JOIN series se ON"
                      " i.series_fk=se.id JOIN studies st ON se.study_fk=st.id JOIN patients p"
                      " ON st.patient_fk=p.id WHERE p.patient_id=?", (patient_id,))


def age(storage, course_id, days):
    """Pretend the course's stages finished `days` ago."""
    when = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)).isoformat()
    con = sqlite3.connect(storage / "index.sqlite")
    con.execute("UPDATE stage_runs SET finished_at=? WHERE course_fk=?", (when, course_id))
    con.commit()
    con.close()


@pytest.fixture
def holdings(node_factory, tmp_path):
    """Two done clinical courses, a done cohort course, and one not yet processed (RT objects
    whose CT never came: waiting for max-wait). The node is stopped afterwards."""
    rules = rules_dir(tmp_path, ["manifest"])
    node = node_factory(courses={"rules_dir": str(rules), "quiet_seconds": 1.0,
                                 "max_wait_seconds": 3600.0})
    files = small_course(tmp_path, "OLD") + small_course(tmp_path, "NEW")
    assert storescu(node.port, files, calling="TPS").returncode == 0
    waiting = [f for f in small_course(tmp_path, "WAIT") if not f.name.startswith("CT_")]
    assert storescu(node.port, waiting, calling="TPS").returncode == 0
    r = node.cli("import", str(small_course(tmp_path, "COH")[0].parent), "--cohort")
    assert r.returncode == 0, r.stderr
    cs = node.wait_courses(
        lambda cs: len(cs) == 4 and sum(c["state"] == "done" for c in cs) == 3
        and any(c["patient_id"] == "WAIT" and c["state"] == "waiting" for c in cs),
        timeout=180, what="3 done + 1 waiting")
    node.stop()
    return node.storage, {c["patient_id"]: c for c in cs}


def run(storage, **policy):
    index = Index(storage / "index.sqlite")
    try:
        return Retention(RetentionConfig(**policy), index, storage).run()
    finally:
        index.close()


def test_age_rules_delete_exactly_what_the_policy_says(holdings):
    storage, cs = holdings
    age(storage, cs["OLD"]["id"], 30)
    age(storage, cs["COH"]["id"], 30)
    age(storage, cs["NEW"]["id"], 1)
    before = {p: held(storage, p) for p in cs}
    assert all(len(before[p]) == 27 for p in ("OLD", "NEW", "COH")) and len(before["WAIT"]) == 3

    report = run(storage, received_after_days=7, cohort_after_days=14)
    removed = {r["course"]: r for r in report["removed"]}
    assert set(removed) == {cs["OLD"]["id"], cs["COH"]["id"]}
    # clinical: the received instances go (files and rows); course row and outputs stay
    assert held(storage, "OLD") == []
    assert not any((storage / p).exists() for p, _ in before["OLD"])
    assert removed[cs["OLD"]["id"]]["outputs_kept"] is True
    assert (storage / "courses" / str(cs["OLD"]["id"]) / "r1" / "course.json").exists()
    assert q(storage, "SELECT state FROM courses WHERE id=?", (cs["OLD"]["id"],)) == [("done",)]
    # cohort: everything goes
    assert held(storage, "COH") == []
    assert not (storage / "courses" / str(cs["COH"]["id"])).exists()
    assert q(storage, "SELECT COUNT(*) FROM courses WHERE id=?", (cs["COH"]["id"],)) == [(0,)]
    # younger than N days, and not processed: untouched
    assert held(storage, "NEW") == before["NEW"]
    assert held(storage, "WAIT") == before["WAIT"]
    assert all((storage / p).exists() for p, _ in before["NEW"] + before["WAIT"])
    assert report["instances"] == 54
    events = q(storage, "SELECT calling_ae FROM events WHERE kind='deleted'")
    assert events == [("retention",), ("retention",)]
    # a second pass finds nothing more to do
    assert run(storage, received_after_days=7, cohort_after_days=14)["removed"] == []


def test_disk_pressure_frees_the_oldest_first_and_never_an_unprocessed_course(holdings):
    storage, cs = holdings
    age(storage, cs["OLD"]["id"], 3)
    age(storage, cs["COH"]["id"], 2)
    age(storage, cs["NEW"]["id"], 1)
    sizes = {p: sum(r[0] for r in q(
        storage, "SELECT i.size FROM instances i JOIN series se ON i.series_fk=se.id JOIN studies"
                 " st ON se.study_fk=st.id JOIN patients p ON st.patient_fk=p.id"
                 " WHERE p.patient_id=?", (p,))) for p in cs}
    total = sum(sizes.values())
    # just over the cap by less than the oldest course: removing that one is enough
    cap = (total - sizes["OLD"] // 2) / 1024**3
    report = run(storage, max_stored_gb=cap)
    assert "max_stored_gb" in report["pressure"]
    assert [r["course"] for r in report["removed"]] == [cs["OLD"]["id"]]
    assert held(storage, "OLD") == [] and len(held(storage, "COH")) == 27

    # a free-space target no deletion can reach: every eligible course goes, oldest first,
    # and the course not yet processed stays
    report = run(storage, free_below_gb=1e9)
    assert [r["course"] for r in report["removed"]] == [cs["COH"]["id"], cs["NEW"]["id"]]
    assert held(storage, "COH") == [] and held(storage, "NEW") == []
    assert len(held(storage, "WAIT")) == 3
    assert all((storage / p).exists() for p, _ in held(storage, "WAIT"))


def test_the_node_runs_retention_on_its_schedule_and_status_shows_it(node_factory, tmp_path):
    rules = rules_dir(tmp_path, ["manifest"])
    node = node_factory(courses={"rules_dir": str(rules), "quiet_seconds": 1.0},
                        retention={"received_after_days": 0, "interval_seconds": 1})
    assert storescu(node.port, small_course(tmp_path, "SOON"), calling="TPS").returncode == 0
    node.wait_courses(lambda cs: cs and cs[0]["state"] == "done", timeout=120, what="done")
    deadline = dt.datetime.now() + dt.timedelta(seconds=60)
    while held(node.storage, "SOON") and dt.datetime.now() < deadline:
        time.sleep(0.5)
    assert held(node.storage, "SOON") == []
    status = node.cli_json("status")
    assert status["retention"]["active"] is True
    removal = status["retention"]["last_removal"]
    assert removal["instances"] == 27 and removal["removed"][0]["outputs_kept"] is True
    text = node.cli("status").stdout
    assert "retention:" in text and "received_after_days=0" in text
    assert "last removal" in text and "27 instance(s)" in text
    assert "retention removed course" in node.log
