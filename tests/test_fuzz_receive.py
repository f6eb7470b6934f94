"""A bounded fuzz of the receive path (fixed seed, 300 cases): mutated data sets and request
fields over one association at a time. Every request is answered, the node never falls over,
and refused input leaves no file and no index row."""

from __future__ import annotations

import hashlib
import random

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage, RTPlanStorage

from peers import context_id, echoscu, encode_dataset, raw_association, raw_c_store
from rtnode.store.part10 import split_part10

pytestmark = pytest.mark.network

SEED = 20261203
CASES = 300
CT = str(CTImageStorage)
RTPLAN = str(RTPlanStorage)
ODD_UIDS = ["", " ", "1", "1.2.", "..", "1.02.3", "1.2.3 ", " 1.2.3", "1.2.3\x00\x00",
            "1." + "9" * 80, "../../etc/passwd", "1.2.840.10008.1.1", "1.2.3.4", "\u00e9.1"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del b[rng.randrange(1, len(b)):]
    elif kind == 2:  # insert junk
        at = rng.randrange(len(b))
        b[at:at] = rng.randbytes(rng.randint(1, 64))
    elif kind == 3:  # a length field somewhere becomes huge
        at = rng.randrange(0, max(1, min(len(b) - 4, 2000)))
        b[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x01\x00"])
    elif kind == 4:  # header only
        del b[rng.randrange(1, min(len(b), 600)):]
    else:  # duplicate a slice
        at, n = rng.randrange(len(b)), rng.randint(1, 200)
        b[at:at] = b[at:at + n]
    return bytes(b)


def test_fuzzed_stores_are_all_answered_and_refusals_leave_nothing(node, course_100):
    rng = random.Random(SEED)
    templates = [pydicom.dcmread(p) for p in course_100["CT"][:3] + course_100["RTPLAN"]]
    accepted: dict[str, str] = {}  # SOP Instance UID -> digest of what was acknowledged
    refused = 0
    assoc = None
    try:
        for case in range(CASES):
            if assoc is None or not assoc.is_established:
                assoc = raw_association(node.port, [(CT, ExplicitVRLittleEndian),
                                                    (CT, ImplicitVRLittleEndian),
                                                    (RTPLAN, ExplicitVRLittleEndian)])
                contexts = {(cx.abstract_syntax, cx.transfer_syntax[0]): cx.context_id
                            for cx in assoc.accepted_contexts}
            ds = rng.choice(templates).copy()
            ds.SOPInstanceUID = generate_uid()
            syntax = rng.choice([ExplicitVRLittleEndian, ImplicitVRLittleEndian]) \
                if ds.SOPClassUID == CT else ExplicitVRLittleEndian
            data = encode_dataset(ds, syntax)
            sop_class, sop_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            roll = rng.random()
            if roll < 0.6:
                data = mutate(rng, data)
            elif roll < 0.8:
                sop_uid = rng.choice(ODD_UIDS)
            elif roll < 0.9:
                sop_class = rng.choice(ODD_UIDS + [RTPLAN, CT])
            cx = contexts[(str(ds.SOPClassUID), syntax)]
            rsp = raw_c_store(assoc, cx, sop_class, sop_uid, data, message_id=case % 65535 + 1)
            assert rsp is not None and rsp.Status is not None, f"case {case}: no answer"
            assert rsp.MessageIDBeingRespondedTo == case % 65535 + 1
            if rsp.Status == 0x0000:
                accepted[sop_uid] = hashlib.sha256(data).hexdigest()
            else:
                refused += 1
                assert rsp.ErrorComment, f"case {case}: 0x{rsp.Status:04X} without a reason"
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()

    assert refused > 50 and accepted, (refused, len(accepted))
    assert echoscu(node.port).returncode == 0
    assert node.proc.poll() is None
    rows = {r["sop_instance_uid"]: r for r in node.cli_json("instances")}
    assert set(rows) == set(accepted), "index rows differ from the acknowledged instances"
    for uid, digest in accepted.items():
        assert rows[uid]["digest"] == digest
        stored = split_part10((node.storage / rows[uid]["path"]).read_bytes())[1]
        assert hashlib.sha256(stored).hexdigest() == digest
    files = [p for p in (node.storage / "dicom").rglob("*") if p.is_file()]
    assert len(files) == len(accepted), "files left for refused input"
    assert node.cli_json("status")["events"]["rejected"] == refused
    assert not list((node.storage / "tmp").iterdir())
