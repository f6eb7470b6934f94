"""Peers that try to knock the listener over: silent and half-sent connections, stalled PDUs,
PDUs and instances over the limits, deflate bombs. Real callers must keep getting through, and
the node's memory must stay bounded."""

from __future__ import annotations

import socket
import time
import zlib

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage

from peers import (echoscu, encode_dataset, event_count, raw_association, raw_c_store,
                   rss_kib, store_responses, storescu)

pytestmark = pytest.mark.network

CT = str(CTImageStorage)
#: the first 20 bytes of an A-ASSOCIATE-RQ (type, length 205, version, called AE half-sent)
PARTIAL_RQ = b"\x01\x00\x00\x00\x00\xcd\x00\x01\x00\x00RTNODE    "
#: a P-DATA-TF header announcing 4096 bytes, then 10 of them
PARTIAL_P_DATA = b"\x04\x00\x00\x00\x10\x00" + b"\x00" * 10
MB = 1024 * 1024


def open_silent(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(PARTIAL_RQ if i % 2 == 0 else PARTIAL_P_DATA)
        socks.append(s)
    return socks


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the node closed the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_silent_connections_do_not_lock_out_allowed_callers(node_factory, course_100):
    node = node_factory(dicom={"allowed_callers": ["TPS1"], "max_associations": 4,
                               "request_timeout": 4.0})
    socks = open_silent(node.port, 20)
    # and a hundred more that connect and say nothing, or send garbage
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        if i % 2:
            s.sendall(bytes(range(256)) * 2)
        socks.append(s)
    try:
        # 120 half-open or garbage connections, four association slots: the real caller still
        # gets in, long before any of the silent ones times out
        t0 = time.monotonic()
        echo = echoscu(node.port, calling="TPS1", timeout=60)
        assert echo.returncode == 0, echo.stdout
        assert "Received Echo Response (Success)" in echo.stdout
        stored = storescu(node.port, course_100["RTPLAN"], calling="TPS1", timeout=60)
        assert store_responses(stored.stdout) == ["Success"], stored.stdout
        assert time.monotonic() - t0 < 30, "callers waited for the silent connections"
        # every silent connection is closed by the node (evicted, or at request_timeout)
        assert all(closed_by_peer(s, 30) for s in socks)
    finally:
        for s in socks:
            s.close()
    assert "dropped connection from 127.0.0.1" in node.log
    assert event_count(node.storage, "connection_dropped") >= 1


def test_stalled_pdu_on_an_association_is_cut_off(node_factory):
    node = node_factory(dicom={"read_timeout": 3.0})
    assoc = raw_association(node.port, [(CT, ExplicitVRLittleEndian)])
    assoc.dul.socket.socket.sendall(PARTIAL_P_DATA)
    deadline = time.monotonic() + 60
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not assoc.is_established, "the node kept a stalled PDU open"
    assert echoscu(node.port).returncode == 0


def _peak_growth_kib(node, action) -> int:
    """How far the node's peak RSS rose above its resident set before action."""
    before = rss_kib(node.proc.pid)
    action()
    return rss_kib(node.proc.pid, "VmHWM") - before


def test_oversize_pdu_is_aborted_without_buffering(node_factory):
    """A P-DATA PDU declaring 2 GB (dicom.max_pdu is 1 MiB) is aborted at its header; 64 MB
    pushed behind it must not reach the node's memory."""
    node = node_factory(dicom={"max_pdu": MB, "max_instance_mb": 64})
    assoc = raw_association(node.port, [(CT, ExplicitVRLittleEndian)])
    sock = assoc.dul.socket.socket

    def flood():
        try:
            sock.sendall(b"\x04\x00\x80\x00\x00\x00")
            chunk = b"\x00" * MB
            for _ in range(64):
                sock.sendall(chunk)
        except OSError:
            pass  # the node aborted and closed: what we want
        deadline = time.monotonic() + 30
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)

    growth = _peak_growth_kib(node, flood)
    assert not assoc.is_established
    # bound: nothing of the body is buffered; 16 MB covers allocator noise of a busy node
    assert growth < 16 * 1024, f"peak RSS grew {growth} KiB"
    assert "declares 2147483648 bytes" in node.log
    assert echoscu(node.port).returncode == 0


def _bomb(course_ct, inflated: int) -> tuple[str, bytes]:
    """A CT data set, Deflated Explicit VR Little Endian, whose private OB element inflates to
    `inflated` bytes of zeros (about 1 MB deflated per GiB)."""
    ds = pydicom.dcmread(course_ct)
    ds.SOPInstanceUID = generate_uid()
    head = encode_dataset(ds)
    tag = b"\x09\x00\x10\x10OB\x00\x00" + inflated.to_bytes(4, "little")  # (0009,1010) OB
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [comp.compress(head), comp.compress(tag)]
    zeros = b"\x00" * (16 * MB)
    for _ in range(inflated // len(zeros)):
        out.append(comp.compress(zeros))
    out.append(comp.flush())
    return ds.SOPInstanceUID, b"".join(out)


def test_deflate_bomb_and_oversize_instance_are_refused_with_bounded_memory(node_factory,
                                                                           course_100):
    """dicom.max_instance_mb = 64: three 1 GiB deflate bombs and a 98 MB plain instance are
    answered 0xA700. Bound on the node's peak RSS growth, 2 x 64 MB: a bomb is measured 1 MB at
    a time and never held; the plain instance is buffered up to the limit (64 MB) and then
    discarded; the rest is the 1 MiB PDUs, the copies of one PDU pynetdicom makes, and
    allocator slack. Unbounded, one bomb alone took 1 GiB.
    """
    node = node_factory(dicom={"max_pdu": MB, "max_instance_mb": 64})
    bombs = [_bomb(course_100["CT"][i], 1024 * MB) for i in range(3)]
    assert all(len(data) < 2 * MB for _, data in bombs)
    big = pydicom.dcmread(course_100["CT"][5])
    big.SOPInstanceUID = generate_uid()
    big.Rows = big.Columns = 7000
    big.PixelData = b"\x01\x00" * (7000 * 7000)  # 98 MB
    big_data = encode_dataset(big)
    answers = []

    def send():
        assoc = raw_association(node.port, [(CT, DeflatedExplicitVRLittleEndian),
                                            (CT, ExplicitVRLittleEndian)], timeout=120)
        try:
            cx_deflated = next(c.context_id for c in assoc.accepted_contexts
                               if c.transfer_syntax[0] == DeflatedExplicitVRLittleEndian)
            cx_plain = next(c.context_id for c in assoc.accepted_contexts
                            if c.transfer_syntax[0] == ExplicitVRLittleEndian)
            for n, (uid, data) in enumerate(bombs, 1):
                answers.append(raw_c_store(assoc, cx_deflated, CT, uid, data, message_id=n))
            answers.append(raw_c_store(assoc, cx_plain, CT, big.SOPInstanceUID, big_data,
                                       message_id=9))
        finally:
            assoc.release()

    growth = _peak_growth_kib(node, send)
    assert [a.Status if a else None for a in answers] == [0xA700] * 4
    assert all("inflates beyond" in a.ErrorComment for a in answers[:3])
    assert "max_instance_mb" in answers[3].ErrorComment
    assert growth < 128 * 1024, f"peak RSS grew {growth} KiB"
    status = node.cli_json("status")
    assert status["counts"]["instances"] == 0
    assert status["events"]["rejected"] == 4
    assert not [p for p in (node.storage / "dicom").rglob("*") if p.is_file()]


def test_a_burst_of_honest_parallel_associations_all_get_in(node):
    """More parallel callers from one address than max_pending_per_address: none is evicted,
    because each completes its A-ASSOCIATE-RQ within the grace period."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda i: echoscu(node.port, calling=f"SCU{i}", timeout=60),
                                range(12)))
    assert [r.returncode for r in results] == [0] * 12, [r.stdout for r in results if r.returncode]
    assert "dropped connection" not in node.log
