"""Several associations' index rows share one commit; each still answers only for its own row."""

from __future__ import annotations

import dataclasses
import io
import threading

import pytest
from pydicom.uid import generate_uid

from rtnode.phantom import CTGeometry, PhantomCourse
from rtnode.store.archive import Archive
from rtnode.store.attributes import instance_record
from rtnode.store.files import FileStore
from rtnode.store.index import Index, _Job
from rtnode.store.part10 import split_part10


@pytest.fixture(scope="module")
def course():
    return PhantomCourse(geometry=CTGeometry(rows=16, columns=16, slices=24)).build()


def encode(ds) -> tuple:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return split_part10(buf.getvalue())


def job(rec, n: int) -> _Job:
    return _Job(rec, dict(path=f"dicom/x/{n}.dcm", size=1, digest=f"{n:064x}",
                          transfer_syntax_uid="1.2.840.10008.1.2.1", calling_ae="A",
                          called_ae="B", origin="received"))


def test_a_failing_row_in_a_batch_fails_alone(tmp_path, course):
    index = Index(tmp_path / "index.sqlite")
    recs = [instance_record(ds) for ds in course.ct[:3]]
    # an InstanceNumber SQLite cannot hold: the statement itself fails, inside the batch
    recs[1] = dataclasses.replace(recs[1], instance_number=2**70)
    jobs = [job(r, i) for i, r in enumerate(recs)]
    index._commit_jobs(jobs)
    assert [j.done for j in jobs] == [True, True, True]
    assert jobs[0].result()[0] == "received" and jobs[2].result()[0] == "received"
    with pytest.raises(OverflowError):
        jobs[1].result()
    rows = index.instances()
    assert sorted(r["sop_instance_uid"] for r in rows) == sorted(
        [recs[0].sop_instance_uid, recs[2].sop_instance_uid])
    assert index.event_counts() == {"received": 2}
    index.close()


def test_concurrent_filing_answers_each_for_its_own_row(tmp_path, course):
    archive = Archive(tmp_path / "storage")
    batches: list[int] = []
    commit = archive.index._commit_jobs

    def counting(jobs):
        batches.append(len(jobs))
        commit(jobs)

    archive.index._commit_jobs = counting
    items = [encode(ds) for ds in course.ct]
    bad = course.ct[0].copy()
    bad.SOPInstanceUID = generate_uid()
    bad.InstanceNumber = "12345678901234567890"  # filed, without the number
    items.append(encode(bad))
    outcomes: list = [None] * len(items)

    def file(k: int) -> None:
        for i in range(k, len(items), 6):
            outcomes[i] = archive.file_instance(*items[i], calling_ae="GC")

    threads = [threading.Thread(target=file, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o.ok and o.kind == "received" and o.path.exists() for o in outcomes), outcomes
    assert sum(batches) == len(items)  # every row committed exactly once
    assert archive.index.counts()["instances"] == len(items)
    stored = {r["sop_instance_uid"]: r["path"] for r in archive.index.instances()}
    assert {o.sop_instance_uid for o in outcomes} == set(stored)
    archive.close()


def test_one_folder_fsync_covers_renames_done_before_it(tmp_path):
    class Counting(FileStore):
        syncs = 0

        def _fsync_dir(self, path):
            Counting.syncs += 1
            super()._fsync_dir(path)

    store = Counting(tmp_path)
    folder = store.dicom_dir / "1.2" / "1.3"
    store.write(folder / "1.4.dcm", b"x")  # creates the folder: parents synced, then itself
    before = Counting.syncs
    state = store._folder_state(folder)
    # three renames already done when the next fsync starts: it covers all three
    for n in range(3):
        (store.tmp_dir / f"{n}.part").write_bytes(b"y")
        (store.tmp_dir / f"{n}.part").replace(folder / f"1.5.{n}.dcm")
        state.renamed += 1
    tickets = [state.renamed - 2, state.renamed - 1, state.renamed]
    for ticket in tickets:
        store._sync_renames(folder, state, ticket)
    assert Counting.syncs == before + 1
    # a rename after that fsync needs one of its own
    store.write(folder / "1.6.dcm", b"z")
    assert Counting.syncs == before + 2


@pytest.mark.parametrize("sop,ae", [
    ("1.2.3.4", "SENDER"), ("1.2.3.45", "ODD"), ("1.2.840.10008.5.1.4.1.1.2.1234567", ""),
    ("1.2.3", "A B"),
])
@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                                "1.2.840.10008.1.2.4.50"])
def test_hand_encoded_file_meta_is_what_pydicom_writes(sop, ae, ts):
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom.dsutils import create_file_meta

    from rtnode import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
    from rtnode.store.archive import plain_file_meta

    meta = create_file_meta(sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop,
                            transfer_syntax=ts)
    fast = plain_file_meta(meta, ae)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if ae:
        meta.SourceApplicationEntityTitle = ae
    buf = io.BytesIO()
    write_file_meta_info(buf, meta, enforce_standard=True)
    assert fast == buf.getvalue()


def test_unusual_file_meta_is_left_to_pydicom():
    from pynetdicom.dsutils import create_file_meta

    from rtnode.store.archive import plain_file_meta

    meta = create_file_meta(sop_class_uid="1.2.3", sop_instance_uid="1.2.4",
                            transfer_syntax="1.2.840.10008.1.2.1")
    meta.PrivateInformationCreatorUID = "1.2.5"  # an element the fast path does not know
    assert plain_file_meta(meta, "X") is None
    meta = create_file_meta(sop_class_uid="1.2.3", sop_instance_uid="1.2.4",
                            transfer_syntax="1.2.840.10008.1.2.1")
    assert plain_file_meta(meta, "SÉNDER") is None  # not ASCII: pydicom encodes (or refuses)
    del meta.MediaStorageSOPInstanceUID
    assert plain_file_meta(meta, "X") is None  # a required element missing: pydicom refuses
