"""The archive without the network: UID grammar, filing outcomes, index schema and recovery."""

from __future__ import annotations

import io
import sqlite3
import threading
import zlib

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

from rtnode.dicom.status import StoreStatus
from rtnode.dicom.uid import is_valid_uid
from rtnode.phantom import CTGeometry, PhantomCourse
from rtnode.store.archive import Archive
from rtnode.store.index import Index, SchemaTooNew
from rtnode.store.part10 import split_part10
from rtnode.store.schema import SCHEMA_VERSION


@pytest.fixture(scope="module")
def course():
    return PhantomCourse(geometry=CTGeometry(rows=32, columns=32, slices=6)).build()


@pytest.fixture
def archive(tmp_path):
    a = Archive(tmp_path / "storage")
    yield a
    a.close()


def encode(ds) -> tuple:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return split_part10(buf.getvalue())


@pytest.mark.parametrize("uid,ok", [
    ("1.2.840.10008.5.1.4.1.1.2", True), ("0.1", True), ("1.2.0.3", True),
    ("1", False), ("1.02.3", False), ("1..2", False), ("1.2.", False), ("../1.2", False),
    ("1.2.3/4", False), ("1.2.a", False), ("1." + "2" * 63, False), ("", False),
    ("1.2.3\x00", False), (None, False),
])
def test_uid_grammar(uid, ok):
    assert is_valid_uid(uid) is ok


def test_filed_instance_keeps_bytes_and_meta(archive, course):
    meta, data = encode(course.ct[0])
    outcome = archive.file_instance(meta, data, calling_ae="TPS1", called_ae="RTNODE")
    assert outcome.ok and outcome.kind == "received"
    stored_meta, stored = split_part10(outcome.path.read_bytes())
    assert stored == data
    assert stored_meta.SourceApplicationEntityTitle == "TPS1"
    assert stored_meta.TransferSyntaxUID == meta.TransferSyntaxUID
    assert outcome.path.relative_to(archive.root).parts[:3] == (
        "dicom", course.ct[0].StudyInstanceUID, course.ct[0].SeriesInstanceUID)


def test_deflated_transfer_syntax_is_checked_and_stored_as_received(archive, course):
    ds = course.ct[1].copy()
    buf = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(buf, enforce_file_format=True)
    meta, data = split_part10(buf.getvalue())
    assert meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    zlib.decompress(data, -zlib.MAX_WBITS)  # really deflated
    outcome = archive.file_instance(meta, data)
    assert outcome.ok
    assert split_part10(outcome.path.read_bytes())[1] == data
    assert pydicom.dcmread(outcome.path).PixelData == course.ct[1].PixelData


def test_request_uid_must_match_the_data_set(archive, course):
    meta, data = encode(course.ct[2])
    outcome = archive.file_instance(meta, data, expected_sop_uid=generate_uid())
    assert outcome.status == StoreStatus.UID_MISMATCH
    assert archive.index.counts()["instances"] == 0


def test_replacement_under_another_series_moves_the_file(archive, course):
    first = course.ct[3].copy()
    meta, data = encode(first)
    old_path = archive.file_instance(meta, data).path
    moved = course.ct[3].copy()
    moved.SeriesInstanceUID = generate_uid()
    meta, data = encode(moved)
    outcome = archive.file_instance(meta, data)
    assert outcome.kind == "replaced"
    assert not old_path.exists() and outcome.path.exists()
    rows = archive.index.instances()
    assert len(rows) == 1 and rows[0]["series_uid"] == moved.SeriesInstanceUID


def test_concurrent_identical_stores_index_once(archive, course):
    meta, data = encode(course.ct[4])
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        archive.file_instance(meta.copy(), data))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.ok for r in results)
    assert sorted(r.kind for r in results).count("received") == 1
    assert archive.index.counts()["instances"] == 1
    assert archive.index.event_counts()["duplicate"] == 5


def test_garbage_is_refused_not_raised(archive):
    meta, _ = encode(PhantomCourse(geometry=CTGeometry(rows=8, columns=8, slices=1))
                     .build(with_rt=False).ct[0])
    outcome = archive.file_instance(meta, b"\x08\x00\x05\x00CS\xff\x00not dicom at all")
    assert outcome.status == StoreStatus.CANNOT_UNDERSTAND
    assert archive.index.event_counts() == {"rejected": 1}


def test_recover_drops_partial_writes(archive):
    (archive.files.tmp_dir / "abc.part").write_bytes(b"half a file")
    assert archive.recover() == 1
    assert not list(archive.files.tmp_dir.iterdir())


def test_schema_is_versioned_and_a_newer_one_is_refused(tmp_path):
    path = tmp_path / "index.sqlite"
    Index(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SchemaTooNew, match="Upgrade rtnode"):
        Index(path)


def test_hot_path_lookups_use_indexes(archive):
    plan = archive.index.query(
        "EXPLAIN QUERY PLAN SELECT path, digest FROM instances WHERE sop_instance_uid=?",
        ("1.2",))
    assert any("USING INDEX" in row[3] for row in plan)
    assert not any(row[3].startswith("SCAN") for row in plan)
