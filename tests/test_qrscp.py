"""Query/Retrieve SCP: DCMTK findscu, getscu and movescu query and retrieve a processed study —
including the auto RTSTRUCT rtnode filed for its course — from a running node; C-MOVE goes only
to a configured destination; a caller not on the allow-list is refused."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from held import rules_dir, send_and_wait, small_course
from peers import dcmtk_env, free_port, require

pytestmark = pytest.mark.network


def dcmtk(tool: str, node, *args: str, calling: str = "QRSCU",
          timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [require(tool), "-v", "-S", "-aet", calling, "-aec", node.ae_title, *args,
           "127.0.0.1", str(node.port)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=dcmtk_env())


def keys(**k: str) -> list[str]:
    out = []
    for name, value in k.items():
        out += ["-k", f"{name}={value}" if value is not None else name]
    return out


def find(node, out: Path, **k: str) -> list[pydicom.Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    r = dcmtk("findscu", node, "-X", "-od", str(out), *keys(**k))
    assert r.returncode == 0, r.stdout[-3000:]
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    """DCMTK storescp as the viewer/TPS a C-MOVE sends to."""
    folder = tmp_path_factory.mktemp("viewer")
    port = free_port()
    proc = subprocess.Popen([require("storescp"), "-aet", "VIEWER", "-od", str(folder),
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env=dcmtk_env())
    time.sleep(0.5)
    yield {"port": port, "folder": folder}
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


@pytest.fixture
def processed(node_factory, tmp_path, viewer):
    rules = rules_dir(tmp_path, ["segment", "rtstruct"])
    node = node_factory(
        dicom={"allowed_callers": ["TPS", "QRSCU"]},
        courses={"rules_dir": str(rules), "quiet_seconds": 1.0},
        destinations={"viewer": {"ae_title": "VIEWER", "host": "127.0.0.1",
                                 "port": viewer["port"]}})
    files = small_course(tmp_path, "QR1")
    [course] = send_and_wait(node, files, 1)
    assert course["state"] == "done", course
    auto = pydicom.dcmread(Path(course["output_dir"]) / "rtstruct_auto.dcm")
    study = pydicom.dcmread(files[0]).StudyInstanceUID
    return node, study, auto


def test_find_then_get_the_study_and_the_auto_rtstruct(processed, tmp_path):
    node, study, auto = processed
    [s] = find(node, tmp_path / "f1", QueryRetrieveLevel="STUDY", PatientID="QR1",
               StudyInstanceUID=None, ModalitiesInStudy=None,
               NumberOfStudyRelatedInstances=None, PatientName=None)
    assert s.StudyInstanceUID == study and s.PatientName == "Test^QR1"
    assert {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"} <= set(s.ModalitiesInStudy)
    assert int(s.NumberOfStudyRelatedInstances) == 28  # 27 received + the auto RTSTRUCT
    status = node.cli_json("status")  # status keeps what was received apart from outputs
    assert status["counts"]["instances"] == 27 and status["counts"]["derived"] == 1
    assert status["events"]["received"] == 27
    [derived] = [i for i in node.cli_json("instances") if i["origin"] == "derived"]
    assert derived["sop_instance_uid"] == auto.SOPInstanceUID
    # wildcard and date range match; another patient does not
    assert len(find(node, tmp_path / "f2", QueryRetrieveLevel="STUDY", PatientID="QR*",
                    StudyDate="20250101-20261231", StudyInstanceUID=None)) == 1
    assert find(node, tmp_path / "f3", QueryRetrieveLevel="STUDY", PatientID="NOBODY",
                StudyInstanceUID=None) == []

    series = find(node, tmp_path / "f4", QueryRetrieveLevel="SERIES", StudyInstanceUID=study,
                  Modality="RTSTRUCT", SeriesInstanceUID=None, SeriesDescription=None,
                  NumberOfSeriesRelatedInstances=None)
    assert len(series) == 2
    assert auto.SeriesInstanceUID in {x.SeriesInstanceUID for x in series}

    got = tmp_path / "got_auto"
    got.mkdir()
    r = dcmtk("getscu", node, "-od", str(got), *keys(
        QueryRetrieveLevel="SERIES", StudyInstanceUID=study,
        SeriesInstanceUID=auto.SeriesInstanceUID))
    assert r.returncode == 0, r.stdout[-3000:]
    [one] = [pydicom.dcmread(p) for p in got.iterdir()]
    assert one.SOPInstanceUID == auto.SOPInstanceUID and one.Modality == "RTSTRUCT"
    assert len(one.StructureSetROISequence) == len(auto.StructureSetROISequence)

    whole = tmp_path / "got_study"
    whole.mkdir()
    r = dcmtk("getscu", node, "-od", str(whole),
              *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=study))
    assert r.returncode == 0, r.stdout[-3000:]
    mods = sorted(pydicom.dcmread(p, stop_before_pixels=True).Modality for p in whole.iterdir())
    assert mods.count("CT") == 24 and mods.count("RTSTRUCT") == 2 and len(mods) == 28


def test_move_sends_to_the_configured_destination_only(processed, viewer, tmp_path):
    node, study, auto = processed
    before = set(viewer["folder"].iterdir())
    r = dcmtk("movescu", node, "-aem", "VIEWER",
              *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=study))
    assert r.returncode == 0, r.stdout[-3000:]
    new = set(viewer["folder"].iterdir()) - before
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in new}
    assert len(uids) == 28 and auto.SOPInstanceUID in uids

    r = dcmtk("movescu", node, "-aem", "ELSEWHERE",
              *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=study))
    assert "MoveDestinationUnknown" in r.stdout, r.stdout
    assert set(viewer["folder"].iterdir()) - before == new


def test_a_caller_not_allowed_is_refused(processed, tmp_path):
    node, study, _ = processed
    out = tmp_path / "intruder"
    out.mkdir()
    for tool, extra in (("findscu", ["-X", "-od", str(out)]), ("getscu", ["-od", str(out)])):
        r = dcmtk(tool, node, *extra, *keys(QueryRetrieveLevel="STUDY", StudyInstanceUID=study),
                  calling="INTRUDER")
        assert r.returncode != 0
        assert "Association Rejected" in r.stdout or "rejected" in r.stdout.lower(), r.stdout
    assert list(out.iterdir()) == []


def test_deleting_the_course_removes_its_auto_rtstruct_from_what_is_offered(processed,
                                                                           tmp_path):
    node, study, auto = processed
    [course] = node.courses()
    plan = node.cli_json("delete", "course", str(course["id"]))
    assert plan["instances"] == 28 and plan["modalities"]["RTSTRUCT"] == 2
    r = node.cli("delete", "course", str(course["id"]), "--yes")
    assert r.returncode == 0, r.stderr
    assert find(node, tmp_path / "after", QueryRetrieveLevel="STUDY",
                StudyInstanceUID=study) == []
    assert node.cli_json("status")["counts"] == {"patients": 0, "studies": 0, "series": 0,
                                                 "instances": 0, "derived": 0}
