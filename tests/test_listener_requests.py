"""Every C-STORE request gets a status; wrong requests and wrong data sets are refused and leave
nothing behind (no file, no index row), each with a `rejected` event."""

from __future__ import annotations

import uuid

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage, RTDoseStorage, Verification

from peers import context_id, encode_dataset, raw_association, raw_c_store

pytestmark = pytest.mark.network

CT = str(CTImageStorage)
RTDOSE = str(RTDoseStorage)
VERIFICATION = str(Verification)


def fresh(path, **changes):
    """The instance at path under a new SOP Instance UID, with attributes changed."""
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def stored_files(node) -> list:
    return [p for p in (node.storage / "dicom").rglob("*") if p.is_file()]


def test_every_malformed_request_is_answered_and_leaves_nothing(node, course_100):
    ct = fresh(course_100["CT"][0])
    dose = fresh(course_100["RTDOSE"][0])
    good = encode_dataset(ct)
    uid = ct.SOPInstanceUID
    assoc = raw_association(node.port, [(CT, ExplicitVRLittleEndian),
                                        (RTDOSE, ExplicitVRLittleEndian),
                                        (VERIFICATION, ExplicitVRLittleEndian)])
    ct_cx, dose_cx = context_id(assoc, CT), context_id(assoc, RTDOSE)
    verification_cx = context_id(assoc, VERIFICATION)

    def zero_length_pixels():
        ds = fresh(course_100["CT"][1])
        ds.PixelData = b""
        return ds

    def padded(leading: bool) -> tuple[str, bytes]:
        """pydicom strips UIDs it is given, so the padding goes into the encoded bytes."""
        ds = fresh(course_100["CT"][2])
        core = "1.2.826.0.1.3680043.9." + str(uuid.uuid4().int)[:20].lstrip("0")
        ds.SOPInstanceUID = core + "9"
        data = encode_dataset(ds)
        bad = (" " + core) if leading else (core + " ")
        assert data.count((core + "9").encode()) == 1
        return core, data.replace((core + "9").encode(), bad.encode())

    lead_uid, lead_data = padded(True)
    trail_uid, trail_data = padded(False)
    cases = [
        # (what, context, request SOP class, request SOP instance UID, data, expected status)
        ("empty request UID", ct_cx, CT, "", good, 0xC001),
        ("blank request UID", ct_cx, CT, "  ", good, 0xC001),
        ("over-long request UID", ct_cx, CT, "1." + "2" * 70, good, 0xC001),
        ("request UID with a letter", ct_cx, CT, "1.2.x", good, 0xC001),
        ("empty data set", ct_cx, CT, uid, b"", 0xC000),
        ("request class differs from context", ct_cx, RTDOSE, uid, good, 0x0122),
        ("C-STORE of Verification", verification_cx, VERIFICATION, uid, good, 0x0122),
        ("empty request SOP class", ct_cx, "", uid, good, 0xC001),
        ("RTDOSE data set in a CT context", ct_cx, CT, dose.SOPInstanceUID,
         encode_dataset(dose), 0xA900),
        ("CT data set sent as RTDOSE", dose_cx, RTDOSE, uid, good, 0xA900),
        ("data set class Verification", ct_cx, CT, uid,
         encode_dataset(fresh(course_100["CT"][0], SOPClassUID=VERIFICATION,
                              SOPInstanceUID=uid)), 0xA900),
        ("data set class 1.2.3.4", ct_cx, CT, uid,
         encode_dataset(fresh(course_100["CT"][0], SOPClassUID="1.2.3.4",
                              SOPInstanceUID=uid)), 0xA900),
        ("zero-length Pixel Data with Rows/Columns", ct_cx, CT, None, zero_length_pixels(),
         0xC000),
        ("leading space in SOP Instance UID", ct_cx, CT, lead_uid, lead_data, 0xC001),
        ("trailing space in SOP Instance UID", ct_cx, CT, trail_uid, trail_data, 0xC001),
    ]
    try:
        for n, (what, cx, sop_class, sop_uid, data, expected) in enumerate(cases, start=1):
            if not isinstance(data, bytes):
                sop_uid = sop_uid or data.SOPInstanceUID
                data = encode_dataset(data)
            rsp = raw_c_store(assoc, cx, sop_class, sop_uid, data, message_id=n)
            assert rsp is not None, f"{what}: no response"
            assert int(rsp.Status) == expected, (what, hex(int(rsp.Status)), rsp.ErrorComment)
            assert rsp.ErrorComment, f"{what}: no ErrorComment"
            assert rsp.MessageIDBeingRespondedTo == n
        # the association survived all of it: a good instance still goes in
        rsp = raw_c_store(assoc, ct_cx, CT, uid, good, message_id=99)
        assert rsp is not None and rsp.Status == 0x0000
    finally:
        assoc.release()

    status = node.cli_json("status")
    assert status["counts"]["instances"] == 1
    assert status["events"]["rejected"] == len(cases)
    assert len(stored_files(node)) == 1
    assert not list((node.storage / "tmp").iterdir())
    assert "C-STORE of the Verification SOP Class" in node.log


def test_conflicting_concurrent_sends_keep_index_and_disk_in_agreement(node, course_100,
                                                                      tmp_path):
    """Two associations send the same SOP Instance UIDs with different bytes at the same time:
    whatever wins, the index digest describes the file on disk; resending the indexed version
    is a duplicate and leaves the disk alone."""
    import hashlib
    import threading

    from rtnode.store.part10 import split_part10

    sources = [pydicom.dcmread(p) for p in course_100["CT"][:40]]
    variants = {}
    for tag in ("A", "B"):
        variants[tag] = []
        for ds in sources:
            v = ds.copy()
            v.SeriesDescription = f"variant {tag}"
            variants[tag].append(encode_dataset(v))
    results: dict[str, list] = {}

    def send(tag: str) -> None:
        assoc = raw_association(node.port, [(CT, ExplicitVRLittleEndian)], calling=f"SCU{tag}")
        cx = context_id(assoc, CT)
        try:
            results[tag] = [raw_c_store(assoc, cx, CT, ds.SOPInstanceUID, data, message_id=i)
                            for i, (ds, data) in enumerate(zip(sources, variants[tag]), 1)]
        finally:
            assoc.release()

    for _ in range(2):
        threads = [threading.Thread(target=send, args=(t,)) for t in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r is not None and r.Status == 0 for tag in results for r in results[tag])

    rows = {r["sop_instance_uid"]: r for r in node.cli_json("instances")}
    assert len(rows) == len(sources)
    for uid, row in rows.items():
        data = split_part10((node.storage / row["path"]).read_bytes())[1]
        assert hashlib.sha256(data).hexdigest() == row["digest"], f"{uid}: index != disk"
    assert len(stored_files(node)) == len(sources)

    # resend exactly what the index holds: duplicates, and the disk keeps those bytes
    by_digest = {hashlib.sha256(d).hexdigest(): d for tag in variants for d in variants[tag]}
    assoc = raw_association(node.port, [(CT, ExplicitVRLittleEndian)])
    cx = context_id(assoc, CT)
    before = node.cli_json("status")["events"].get("duplicate", 0)
    try:
        for i, (uid, row) in enumerate(rows.items(), 1):
            rsp = raw_c_store(assoc, cx, CT, uid, by_digest[row["digest"]], message_id=i)
            assert rsp.Status == 0
    finally:
        assoc.release()
    assert node.cli_json("status")["events"]["duplicate"] == before + len(rows)
    for uid, row in rows.items():
        data = split_part10((node.storage / row["path"]).read_bytes())[1]
        assert hashlib.sha256(data).hexdigest() == row["digest"]
