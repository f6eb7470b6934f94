"""The clinical payoff end to end: a CT arrives, BODY is contoured, the RTSTRUCT reaches the PACS.

Real peers only: storescu sends the CT, rtnode segments (builtin:body), writes the RTSTRUCT and
C-STOREs it to Orthanc, and the test reads it back from Orthanc's REST API.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from orthanc import OrthancProcess
from peers import free_port, store_responses, storescu
from rtnode.phantom import CTGeometry, EllipticBody, Patient, PhantomCourse
from rtnode.rtstruct.reader import read_rtstruct_masks
from test_courses import settled, stage

pytestmark = pytest.mark.network

GEOMETRY = CTGeometry(rows=96, columns=96, pixel_spacing=(3.5, 3.5), slices=40,
                      slice_spacing=3.0)
BODY = EllipticBody(semi_x=120.0, semi_y=90.0)


def ct_only(folder, patient_id: str) -> tuple[list, list]:
    course = PhantomCourse(patient=Patient(patient_id=patient_id, study_uid=generate_uid()),
                           geometry=GEOMETRY, shapes=[BODY]).build(with_rt=False)
    return course.write(folder), course.ct


def test_ct_in_rtstruct_out_at_the_pacs(node_factory, tmp_path):
    orthanc = OrthancProcess(tmp_path / "orthanc").start()
    try:
        # no destination named in the rules: results go back to the sender's destination
        node = node_factory(destinations={"PACS": {"ae_title": "TPS1", "host": "127.0.0.1",
                                                   "port": orthanc.dicom_port}})
        files, ct = ct_only(tmp_path / "ct", "AUTO1")
        r = storescu(node.port, files, calling="TPS1")
        assert store_responses(r.stdout) == ["Success"] * len(files)
        c = node.wait_courses(settled, timeout=180)[0]
        for name in ("segment", "rtstruct", "send"):
            assert stage(c, name)["state"] == "done", (name, c["stages"])
        assert stage(c, "dvh")["reason"] == "course has no RTSTRUCT, RTDOSE"
        ids = orthanc.instances()
        assert len(ids) == 1
        rs = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{ids[0]}/file")))
        assert rs.Modality == "RTSTRUCT"
        series = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
            .RTReferencedSeriesSequence[0]
        assert series.SeriesInstanceUID == ct[0].SeriesInstanceUID
        assert rs.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
        assert rs.StructureSetROISequence[0].ROIGenerationAlgorithm == "AUTOMATIC"
        masks = read_rtstruct_masks(rs, ct)
        body = next(m for name, m in masks.items() if name.upper() in ("BODY", "EXTERNAL"))
        voxel = GEOMETRY.pixel_spacing[0] * GEOMETRY.pixel_spacing[1] * GEOMETRY.slice_spacing
        truth = math.pi * BODY.semi_x * BODY.semi_y * GEOMETRY.slices * GEOMETRY.slice_spacing
        assert body.sum() * voxel == pytest.approx(truth, rel=0.02)
    finally:
        orthanc.stop()


def test_destination_down_fails_with_retries_then_rtnode_send_delivers(node_factory, tmp_path):
    port = free_port()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - {name: pacs, stages: [segment, rtstruct, send],"
                                  " destinations: [PACS]}\n")
    node = node_factory(destinations={"PACS": {"ae_title": "ORTHANC", "host": "127.0.0.1",
                                               "port": port}},
                        send={"retries": 2, "backoff_seconds": 0.2},
                        courses={"rules_dir": str(rules)})
    files, _ = ct_only(tmp_path / "ct", "DOWN1")
    assert store_responses(storescu(node.port, files).stdout) == ["Success"] * len(files)
    c = node.wait_courses(settled, timeout=180)[0]
    s = stage(c, "send")
    assert c["state"] == "failed" and s["state"] == "failed"
    assert "PACS" in s["reason"]
    report = json.loads((Path(c["output_dir"]) / "send.json").read_text())
    assert len(report[0]["attempts"]) == 3  # the first try and two retries, each recorded
    assert all(a["status"] is None or a["status"] != 0 for a in report[0]["attempts"])

    orthanc = OrthancProcess(tmp_path / "orthanc")
    orthanc.dicom_port = port
    orthanc.start()
    try:
        r = node.cli("send", str(c["id"]))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "sent rtstruct_auto.dcm to PACS" in r.stdout
        assert len(orthanc.instances()) == 1
        c = node.wait_courses(lambda cs: cs[0]["state"] == "done", timeout=30)[0]
        assert stage(c, "send")["reason"] == "sent by rtnode send"
    finally:
        orthanc.stop()
