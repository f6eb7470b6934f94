"""Cohorts with Orthanc as the PACS: dry-run, retrieval by patient list, resume after a kill,
the parallel-move bound, PACS down, import from disk, and cohort vs clinical priority."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sqlite3
import subprocess

import pydicom
import pytest
from pydicom.uid import generate_uid

from orthanc import OrthancProcess
from peers import RTNODE, free_port, store_responses, storescu
from rtnode.phantom import Patient
from test_courses import settled, stage, write_course
from test_pipeline import overlaps

pytestmark = pytest.mark.network


@pytest.fixture
def pacs_and_node(node_factory, tmp_path):
    """Orthanc holding three courses of two patients, and a node that knows it as PACS."""
    orthanc = OrthancProcess(tmp_path / "orthanc")
    made = {}
    p1 = Patient(patient_id="COH1", patient_name="Cohort^One")
    made["a"] = write_course(tmp_path / "a", p1)
    made["b"] = write_course(tmp_path / "b", Patient(patient_id="COH1", study_uid=generate_uid(),
                                                     frame_of_reference_uid=generate_uid(),
                                                     study_date="20250301"))
    made["c"] = write_course(tmp_path / "c", Patient(patient_id="COH2", study_date="20240101"))

    def make(max_parallel_moves: int = 2, **sections):
        node = node_factory(remotes={"PACS": {"ae_title": orthanc.aet, "host": "127.0.0.1",
                                              "port": orthanc.dicom_port,
                                              "max_parallel_moves": max_parallel_moves}},
                            **sections)
        orthanc.modalities = {"rtnode": {"AET": node.ae_title, "Host": "127.0.0.1",
                                         "Port": node.port, "AllowFind": True,
                                         "AllowMove": True, "AllowStore": True}}
        orthanc.start()
        orthanc.upload([f for course in made.values() for group in course.values()
                        for f in group])
        return orthanc, node, made

    yield make
    orthanc.stop()


def series_in_index(node) -> dict[str, int]:
    return {s["series_uid"]: s["instance_count"] for s in node.cli_json("series")}


def test_dry_run_lists_what_the_pacs_holds_and_moves_nothing(pacs_and_node):
    orthanc, node, made = pacs_and_node()
    r = node.cli("retrieve", "--from", "PACS", "--all", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    found = [json.loads(line) for line in r.stdout.splitlines()]
    assert {f["patient_id"] for f in found} == {"COH1", "COH2"}
    assert len({f["study_uid"] for f in found}) == 3
    assert sorted(f["modality"] for f in found) == sorted(["CT", "RTSTRUCT", "RTPLAN",
                                                           "RTDOSE"] * 3)
    assert sum(f["instances"] for f in found) == orthanc.instance_count() == 99
    assert all(f["action"] == "move" for f in found)
    human = node.cli("retrieve", "--from", "PACS", "--dry-run", "--patient-id", "COH2")
    assert "1 patient(s), 1 stud(ies), 4 series, 33 instances; 4 series to move" in \
        " ".join(human.stdout.split())
    assert node.cli_json("status")["counts"]["instances"] == 0
    assert node.cli_json("retrievals") == []


def test_retrieve_by_patient_list_moves_exactly_the_rt_series_at_cohort_priority(
        pacs_and_node, tmp_path):
    orthanc, node, made = pacs_and_node()
    listing = tmp_path / "patients.csv"
    listing.write_text("PatientID,Note\nCOH1,two courses\n")
    r = node.cli("retrieve", "--from", "PACS", "--patients", str(listing),
                 "--modalities", "RTSTRUCT,RTPLAN,RTDOSE")
    assert r.returncode == 0, r.stdout + r.stderr
    held = series_in_index(node)
    wanted = {}
    for key in ("a", "b"):
        for mod in ("RTSTRUCT", "RTPLAN", "RTDOSE"):
            ds = pydicom.dcmread(made[key][mod][0], stop_before_pixels=True)
            wanted[ds.SeriesInstanceUID] = 1
    assert held == wanted
    instances = node.cli_json("instances")
    assert all(i["origin"] == "retrieved" for i in instances)
    jobs = node.cli_json("retrievals")
    assert jobs[0]["state"] == "done" and jobs[0]["series"]["done"] == 6
    assert jobs[0]["completed"] == 6
    courses = node.wait_courses(lambda cs: settled(cs, 2), timeout=60,
                                what="two cohort courses (incomplete: no CT) at max-wait")
    assert all(c["tag"] == "cohort" and not c["complete"] for c in courses)
    # a second identical retrieval finds everything already here and moves nothing
    again = node.cli("retrieve", "--from", "PACS", "--patients", str(listing),
                     "--modalities", "RTSTRUCT,RTPLAN,RTDOSE", "--json")
    assert again.returncode == 0
    done = json.loads(again.stdout.splitlines()[-1])
    assert done["event"] == "job_done" and done["skipped"] == 6 and done["done"] == 0
    assert node.cli_json("status")["events"]["duplicate"] == 0


def test_killed_retrieval_resumes_without_moving_a_series_twice(pacs_and_node):
    orthanc, node, made = pacs_and_node(max_parallel_moves=1)
    proc = subprocess.Popen([*RTNODE, "retrieve", "--from", "PACS", "--all", "--json", "--config",
                             str(node.config)], stdout=subprocess.PIPE, text=True,
                            env=node.env)
    done_before = []
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "series_done":
            done_before.append(event["series_uid"])
            if len(done_before) == 3:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(30)
    jobs = node.cli_json("retrievals")
    assert len(jobs) == 1 and jobs[0]["state"] == "interrupted"
    job = jobs[0]["id"]
    r = node.cli("retrieve", "--resume", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = node.cli_json("retrievals")
    assert jobs[0]["state"] == "done" and jobs[0]["series"]["done"] == 12
    db = sqlite3.connect(node.storage / "index.sqlite")
    moves = dict(db.execute("SELECT series_uid, moves FROM retrieval_series"))
    db.close()
    assert all(moves[uid] == 1 for uid in done_before), "a finished series was moved again"
    assert sum(moves.values()) <= 12 + 1  # at most the series caught mid-move, and only its rest
    status = node.cli_json("status")
    assert status["counts"]["instances"] == orthanc.instance_count() == 99
    assert status["events"]["duplicate"] == 0


def test_parallel_moves_never_exceed_the_remote_limit(pacs_and_node):
    orthanc, node, made = pacs_and_node(max_parallel_moves=2)
    r = node.cli("retrieve", "--from", "PACS", "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    db = sqlite3.connect(node.storage / "index.sqlite")
    spans = [(dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b))
             for a, b in db.execute("SELECT started_at, finished_at FROM retrieval_series")]
    db.close()
    assert len(spans) == 12
    for start, _ in spans:
        at_once = sum(1 for s, e in spans if s <= start < e)
        assert at_once <= 2
    assert max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans) == 2


def test_pacs_down_unknown_remote_bad_files_and_no_matches_are_one_line_errors(
        node_factory, tmp_path):
    node = node_factory(remotes={"PACS": {"ae_title": "ORTHANC", "host": "127.0.0.1",
                                          "port": free_port()}})
    r = node.cli("retrieve", "--from", "PACS", "--patient-id", "X")
    assert r.returncode == 2
    assert "cannot reach PACS (ORTHANC@127.0.0.1:" in " ".join(r.stderr.split())
    assert node.cli_json("retrievals") == []
    r = node.cli("retrieve", "--from", "NOPE", "--all")
    assert r.returncode == 2 and "unknown remote 'NOPE'" in r.stderr
    bad = tmp_path / "ids.csv"
    bad.write_text("Name,Age\nSmith,40\n")
    r = node.cli("retrieve", "--from", "PACS", "--patients", str(bad))
    assert r.returncode == 2 and "a CSV needs a PatientID column (found: Name, Age)" in \
        " ".join(r.stderr.split())
    r = node.cli("retrieve", "--from", "PACS", "--study-date", "2024-01-01")
    assert r.returncode == 2 and "use YYYYMMDD-YYYYMMDD" in r.stderr
    r = node.cli("echo", "PACS")
    assert r.returncode == 1 and "no association" in r.stderr


def test_no_match_is_an_error_and_leaves_no_job(pacs_and_node):
    orthanc, node, made = pacs_and_node()
    r = node.cli("retrieve", "--from", "PACS", "--patient-id", "NOBODY")
    assert r.returncode == 1
    assert "found no CT,RTSTRUCT,RTPLAN,RTDOSE series for patients NOBODY" in \
        " ".join(r.stderr.split())
    assert node.cli_json("retrievals") == []
    assert node.cli("echo", "PACS").returncode == 0


def test_import_builds_courses_skips_junk_and_is_idempotent(node, tmp_path):
    folder = tmp_path / "disk"
    write_course(folder / "one", Patient(patient_id="IMP1"))
    write_course(folder / "two" / "deeper", Patient(patient_id="IMP2"))
    (folder / "README.txt").write_text("not DICOM")
    (folder / "two" / "scan.jpg").write_bytes(b"\xff\xd8\xff" + b"0" * 300)
    r = node.cli("import", str(folder), "--recursive", "--cohort")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "66 new, 0 already here, 0 replaced, 0 refused, 2 not DICOM (skipped)" in r.stdout
    courses = node.wait_courses(lambda cs: settled(cs, 2), timeout=60)
    assert sorted(c["patient_id"] for c in courses) == ["IMP1", "IMP2"]
    assert all(c["tag"] == "cohort" and c["state"] == "done" for c in courses)
    r = node.cli("import", str(folder), "--recursive", "--cohort")
    assert "0 new, 66 already here" in r.stdout
    shallow = node.cli("import", str(folder))
    assert "0 new, 0 already here, 0 replaced, 0 refused, 1 not DICOM" in shallow.stdout
    assert node.cli_json("status")["counts"]["instances"] == 66


def test_a_clinical_course_overtakes_a_running_cohort(node_factory, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - {name: seg, stages: [slow_gpu]}\n")
    # each cohort stage lasts long enough for the clinical course to be sent and go quiet
    # while the first one runs, however slowly the CLI polls on a loaded machine
    node = node_factory(env={"RTNODE_TEST_STAGE_SECONDS": "10"},
                        stages={"plugins": ["stage_plugins"]}, queue={"gpu_workers": 1},
                        courses={"rules_dir": str(rules)})
    folder = tmp_path / "cohort"
    for i in range(3):
        write_course(folder / str(i), Patient(patient_id=f"RESEARCH{i}"), with_rt=False)
    assert node.cli("import", str(folder), "--recursive", "--cohort").returncode == 0
    node.wait_courses(lambda cs: any(c["stages"] and stage(c, "slow_gpu")["state"] == "running"
                                     for c in cs), what="the first cohort course running")
    clinical = write_course(tmp_path / "clinic", Patient(patient_id="CLINIC"), with_rt=False)
    assert store_responses(storescu(node.port, clinical["CT"]).stdout) == ["Success"] * 30
    courses = node.wait_courses(lambda cs: settled(cs, 4), timeout=120)
    start = {c["patient_id"]: stage(c, "slow_gpu")["started_at"] for c in courses}
    first_cohort = min(v for k, v in start.items() if k.startswith("RESEARCH"))
    later = sorted(v for k, v in start.items() if k.startswith("RESEARCH") and v != first_cohort)
    assert first_cohort < start["CLINIC"] < later[0], start
    assert {c["tag"] for c in courses if c["patient_id"] == "CLINIC"} == {"clinical"}
    spans = [stage(c, "slow_gpu") for c in courses]
    assert not any(overlaps(a, b) for i, a in enumerate(spans) for b in spans[i + 1:])
