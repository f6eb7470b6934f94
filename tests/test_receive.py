"""Receiving with real peers: DCMTK storescu/echoscu against a running ``rtnode serve``."""

from __future__ import annotations

import signal
from pathlib import Path

import pydicom
import pynetdicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid
from pynetdicom import AE

from peers import echoscu, storescu, store_responses
from rtnode.store.part10 import split_part10

pytestmark = pytest.mark.network


def stored_path(node, ds) -> Path:
    return (node.storage / "dicom" / ds.StudyInstanceUID / ds.SeriesInstanceUID
            / f"{ds.SOPInstanceUID}.dcm")


def test_course_arrives_byte_identical_and_indexed(node, course_100):
    files = course_100["CT"] + course_100["RTSTRUCT"] + course_100["RTPLAN"] + \
        course_100["RTDOSE"]
    assert len(course_100["CT"]) == 100
    r = storescu(node.port, files)
    assert r.returncode == 0, r.stdout
    assert store_responses(r.stdout) == ["Success"] * len(files)

    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        on_disk = stored_path(node, ds)
        sent_meta, sent = split_part10(f.read_bytes())
        kept_meta, kept = split_part10(on_disk.read_bytes())
        assert kept == sent, f"{f.name} was not stored as received"
        assert kept_meta.TransferSyntaxUID == sent_meta.TransferSyntaxUID
        assert kept_meta.SourceApplicationEntityTitle == "STORESCU"

    # the course may already have run: rtnode's own auto RTSTRUCT (origin derived) is not
    # part of what was sent
    listed = [i for i in node.cli_json("instances") if i["origin"] != "derived"]
    assert len(listed) == len(files)
    assert {row["modality"] for row in listed} == {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"}
    assert all(row["calling_ae"] == "STORESCU" and row["origin"] == "received" for row in listed)
    assert {"patient_id", "study_uid", "series_uid", "sop_instance_uid", "sop_class_uid",
            "path", "size", "digest", "received_at"} <= set(listed[0])
    series = node.cli_json("series", "--patient-id", "RX100")
    derived = {i["series_uid"] for i in node.cli_json("instances") if i["origin"] == "derived"}
    series = [s for s in series if s["series_uid"] not in derived]
    assert sorted(s["instance_count"] for s in series) == [1, 1, 1, 100]
    studies = node.cli_json("studies")
    assert [s["instance_count"] for s in studies] in ([103], [104])  # 104: + auto RTSTRUCT

    status = node.cli_json("status")
    assert status["node"]["up"] is True
    assert status["counts"] == {"patients": 1, "studies": 1, "series": 4, "instances": 103,
                                "derived": status["counts"]["derived"]}
    assert status["events"]["received"] == 103

    # the references course building will need were indexed with the RT objects
    from rtnode.store.index import Index
    index = Index(node.storage / "index.sqlite")
    rtstruct = pydicom.dcmread(course_100["RTSTRUCT"][0], stop_before_pixels=True)
    refs = index.references_of(rtstruct.SOPInstanceUID)
    ct_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
               for f in course_100["CT"]}
    assert {uid for kind, uid in refs if kind == "image"} == ct_uids
    assert ("series", pydicom.dcmread(course_100["CT"][0]).SeriesInstanceUID) in refs
    rtdose = pydicom.dcmread(course_100["RTDOSE"][0], stop_before_pixels=True)
    rtplan = pydicom.dcmread(course_100["RTPLAN"][0], stop_before_pixels=True)
    assert index.references_of(rtdose.SOPInstanceUID) == [("rtplan", rtplan.SOPInstanceUID)]
    assert index.references_of(rtplan.SOPInstanceUID) == [("rtstruct", rtstruct.SOPInstanceUID)]
    index.close()


def test_echo_from_echoscu_and_from_rtnode(node):
    r = echoscu(node.port)
    assert r.returncode == 0, r.stderr
    assert "Received Echo Response (Success)" in r.stdout
    r = node.cli("echo", f"RTNODE@127.0.0.1:{node.port}")
    assert r.returncode == 0 and "answered C-ECHO" in r.stdout
    r = node.cli("echo", f"WRONGAE@127.0.0.1:{node.port}")
    assert r.returncode == 1 and "rejected" in r.stderr


def test_caller_not_on_allow_list_is_refused(node_factory, course_100):
    node = node_factory(dicom={"allowed_callers": ["TPS1"]})
    refused = storescu(node.port, course_100["RTPLAN"], calling="INTRUDER")
    assert refused.returncode != 0
    text = refused.stdout
    assert "Association Rejected" in text
    assert "Calling AE Title Not Recognized" in text
    assert "rejected association from INTRUDER" in node.log
    accepted = storescu(node.port, course_100["RTPLAN"], calling="TPS1")
    assert store_responses(accepted.stdout) == ["Success"]
    status = node.cli_json("status")
    assert status["events"]["association_rejected"] == 1
    assert status["counts"]["instances"] == 1


def test_duplicates_are_counted_and_changed_bytes_replace(node, course_100, tmp_path):
    files = course_100["CT"][:10]
    assert store_responses(storescu(node.port, files).stdout) == ["Success"] * 10
    again = storescu(node.port, files)
    assert store_responses(again.stdout) == ["Success"] * 10
    status = node.cli_json("status")
    assert status["counts"]["instances"] == 10
    assert status["events"]["duplicate"] == 10

    changed = pydicom.dcmread(files[0])
    changed.SeriesDescription = "Planning CT (resent, edited)"
    edited = tmp_path / "edited.dcm"
    changed.save_as(edited)
    assert store_responses(storescu(node.port, [edited]).stdout) == ["Success"]
    status = node.cli_json("status")
    assert status["counts"]["instances"] == 10
    assert status["events"]["replaced"] == 1
    kept = pydicom.dcmread(stored_path(node, changed))
    assert kept.SeriesDescription == "Planning CT (resent, edited)"
    assert "kept the newest" in node.log


def _variant(src: Path, dst: Path, **changes) -> Path:
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dst)
    return dst


def test_malformed_input_gets_failure_status_and_node_keeps_serving(node, course_100, tmp_path,
                                                                   monkeypatch):
    src = course_100["CT"][0]
    missing = _variant(src, tmp_path / "no_study.dcm", StudyInstanceUID=None)
    bad_uid = _variant(src, tmp_path / "bad_uid.dcm", SeriesInstanceUID="1.2.3.abc/../../etc")
    r = storescu(node.port, [missing, bad_uid, course_100["RTPLAN"][0]])
    assert store_responses(r.stdout) == [
        "Error: DataSetDoesNotMatchSOPClass", "Error: CannotUnderstand", "Success"]
    assert "0xA900 missing StudyInstanceUID" in node.log
    assert "0xC001 SeriesInstanceUID '1.2.3.abc/../../etc' is not a valid UID" in node.log
    assert not list(node.storage.rglob("*etc*"))

    # storescu will not send a truncated file, so a pynetdicom SCU sends it: once as the raw
    # bytes of the file, once re-encoded by pydicom (a well-formed data set, short Pixel Data)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(_variant(src, tmp_path / "t.dcm").read_bytes()[:-700])
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="RTNODE")
    assert assoc.is_established
    try:
        monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
        raw = assoc.send_c_store(truncated)
        monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", False)
        reencoded = assoc.send_c_store(pydicom.dcmread(truncated))
    finally:
        assoc.release()
    assert raw.Status == 0xC000
    assert "truncated: element (7FE0,0010)" in str(raw.get("ErrorComment", ""))
    assert reencoded.Status == 0xC000
    assert "truncated: Pixel Data holds" in str(reencoded.get("ErrorComment", ""))

    status = node.cli_json("status")
    assert status["events"]["rejected"] == 4
    assert status["counts"]["instances"] == 1
    assert echoscu(node.port).returncode == 0
    assert not list((node.storage / "tmp").iterdir())


def test_low_disk_space_refuses_with_out_of_resources(node_factory, course_100):
    node = node_factory(storage={"min_free_gb": 10.0**9})
    r = storescu(node.port, course_100["RTPLAN"])
    assert store_responses(r.stdout) == ["Refused: OutOfResources"]
    assert "STORAGE NEARLY FULL" in node.log
    assert node.cli_json("status")["counts"]["instances"] == 0


def test_sigterm_stops_cleanly(node, course_100):
    assert store_responses(storescu(node.port, course_100["RTDOSE"]).stdout) == ["Success"]
    assert node.stop(signal.SIGTERM) == 0
    assert not (node.storage / "node.json").exists()
    assert "stopped after 1 stored instance" in node.log
    assert node.cli_json("status")["node"]["up"] is False


def test_compressed_transfer_syntax_is_stored_as_received(node, course_100, tmp_path):
    ds = pydicom.dcmread(course_100["CT"][5])
    ds.compress(RLELossless)
    rle = tmp_path / "rle.dcm"
    ds.save_as(rle)
    r = storescu(node.port, [rle], extra=["--propose-rle"])
    assert store_responses(r.stdout) == ["Success"], r.stdout
    kept_meta, kept = split_part10(stored_path(node, ds).read_bytes())
    assert kept_meta.TransferSyntaxUID == RLELossless
    assert kept == split_part10(rle.read_bytes())[1]
    assert node.cli_json("instances")[0]["transfer_syntax_uid"] == RLELossless


def test_association_limit_rejects_the_extra_caller(node_factory, course_100):
    node = node_factory(dicom={"max_associations": 1})
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    held = ae.associate("127.0.0.1", node.port, ae_title="RTNODE")
    assert held.is_established
    try:
        r = storescu(node.port, course_100["RTPLAN"], calling="SECOND")
        assert "Association Rejected" in r.stdout
        assert "Local Limit Exceeded" in r.stdout
        assert "association limit reached" in node.log
    finally:
        held.release()
    r = storescu(node.port, course_100["RTPLAN"], calling="SECOND")
    assert store_responses(r.stdout) == ["Success"]
