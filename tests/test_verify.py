"""`rtnode verify`: index against disk; a planted orphan is found, adopted by --repair, and
adopted by the start-up check too; index failures after the rename leave no orphan."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import time

import pytest
from pydicom.uid import generate_uid

from peers import RTNODE, write_config
from rtnode.dicom.status import StoreStatus
from rtnode.phantom import CTGeometry, PhantomCourse
from rtnode.store.archive import Archive
from rtnode.store.part10 import split_part10
from rtnode.store.verify import verify


@pytest.fixture(scope="module")
def course():
    return PhantomCourse(geometry=CTGeometry(rows=32, columns=32, slices=6)).build()


def encode(ds) -> tuple:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return split_part10(buf.getvalue())


def plant_orphan(archive: Archive, ds) -> str:
    """What a kill -9 between rename and index commit leaves: a whole file, no row."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path = archive.files.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return archive.files.relative(path)


def run_cli(config, *args):
    return subprocess.run([*RTNODE, "verify", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120)


def test_verify_cli_finds_and_repairs_a_planted_orphan(tmp_path, course):
    config = write_config(tmp_path)
    archive = Archive(tmp_path / "storage")
    for ds in course.ct[:3]:
        assert archive.file_instance(*encode(ds)).ok
    orphan = plant_orphan(archive, course.ct[3])
    garbage = archive.files.dicom_dir / "1.2.3" / "4.5.6" / "7.8.9.dcm"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not DICOM")
    lost = archive.file_instance(*encode(course.ct[4])).path
    lost.unlink()
    tampered = archive.file_instance(*encode(course.ct[5])).path
    blob = bytearray(tampered.read_bytes())
    blob[-1] ^= 0xFF
    tampered.write_bytes(bytes(blob))
    archive.close()

    r = run_cli(config, "--json")
    assert r.returncode == 1, r.stderr
    import json
    report = json.loads(r.stdout)
    assert report["orphans"] == sorted([orphan, "dicom/1.2.3/4.5.6/7.8.9.dcm"])
    assert report["missing"] == [Archive(tmp_path / "storage").files.relative(lost)]
    assert report["digest_mismatch"] == [f"dicom/{course.ct[5].StudyInstanceUID}/"
                                         f"{course.ct[5].SeriesInstanceUID}/"
                                         f"{course.ct[5].SOPInstanceUID}.dcm"]
    assert report["ok"] is False

    r = run_cli(config, "--repair", "--json")
    report = json.loads(r.stdout)
    assert report["adopted"] == [orphan]
    assert report["quarantined"] == ["dicom/1.2.3/4.5.6/7.8.9.dcm"]
    assert (tmp_path / "storage" / "quarantine" / "dicom/1.2.3/4.5.6/7.8.9.dcm").exists()
    assert len(report["dropped_rows"]) == 1
    assert r.returncode == 1  # the tampered file cannot be repaired, and says so

    archive = Archive(tmp_path / "storage")
    assert archive.index.stored_file(course.ct[3].SOPInstanceUID).path == orphan
    assert archive.index.stored_file(course.ct[4].SOPInstanceUID) is None
    again = verify(archive)
    assert again.orphans == [] and again.missing == []
    assert len(again.digest_mismatch) == 1
    archive.close()


@pytest.mark.network
def test_start_up_check_adopts_an_orphan(node_factory, course, tmp_path):
    node = node_factory()
    node.stop()
    archive = Archive(node.storage)
    orphan = plant_orphan(archive, course.ct[0])
    archive.close()
    node.start()
    deadline = time.monotonic() + 60
    while node.log.count("storage check") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "storage check: 0 indexed, 1 files: 1 orphan(s)" in node.log
    assert "adopted 1" in node.log
    rows = node.cli_json("instances")
    assert [r["path"] for r in rows] == [orphan]


def test_index_failure_after_rename_leaves_no_orphan_and_keeps_the_old_bytes(tmp_path, course):
    archive = Archive(tmp_path / "storage")
    first = course.ct[0].copy()
    assert archive.file_instance(*encode(first)).ok
    kept = archive.files.path_for(first.StudyInstanceUID, first.SeriesInstanceUID,
                                  first.SOPInstanceUID).read_bytes()
    # another process holds the write lock: the commit fails with "database is locked"
    for c in archive.index._all:
        c.execute("PRAGMA busy_timeout=300")
    blocker = sqlite3.connect(tmp_path / "storage" / "index.sqlite")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        changed = first.copy()
        changed.SeriesDescription = "changed while the index was locked"
        replaced = archive.file_instance(*encode(changed), calling_ae="TPS1")
        new = course.ct[1].copy()
        refused = archive.file_instance(*encode(new), calling_ae="TPS1")
    finally:
        blocker.rollback()
        blocker.close()
    for outcome in (replaced, refused):
        assert outcome.status == StoreStatus.OUT_OF_RESOURCES
        assert "locked" in outcome.reason
    # the replaced file still holds the indexed bytes; the new one left nothing behind
    assert archive.files.path_for(first.StudyInstanceUID, first.SeriesInstanceUID,
                                  first.SOPInstanceUID).read_bytes() == kept
    assert not archive.files.path_for(new.StudyInstanceUID, new.SeriesInstanceUID,
                                      new.SOPInstanceUID).exists()
    assert not list(archive.files.tmp_dir.iterdir())
    report = verify(archive)
    assert report.ok, report
    # the refusals were recorded once the index could take them
    archive._events_retry_at = 0
    archive.flush_events()
    assert archive.index.event_counts()["rejected"] == 2
    archive.close()


def test_twenty_digit_instance_number_is_filed_without_it(tmp_path, course):
    archive = Archive(tmp_path / "storage")
    ds = course.ct[2].copy()
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = "12345678901234567890"
    outcome = archive.file_instance(*encode(ds))
    assert outcome.ok, outcome
    assert archive.index.instances()[0]["instance_number"] is None
    assert b"12345678901234567890" in outcome.path.read_bytes()  # the file keeps it
    archive.close()
