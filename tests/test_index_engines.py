"""The same index code on both engines: the embedded SQLite file and a PostgreSQL server.

Every call goes through the public Index / CourseBook / Registry / Scheduler methods, and each
test runs twice, so a statement that only one engine accepts (or answers differently) fails here
rather than on a department's server.
"""

from __future__ import annotations

import io

import pytest
from huey import MemoryHuey

from postgres import PostgresServer
from rtnode.config import Config
from rtnode.courses.book import DONE, FAILED, PENDING, QUEUED, RUNNING, CourseBook, PlannedRun
from rtnode.phantom import CTGeometry, Patient, PhantomCourse
from rtnode.queue.hueys import TASK_NAME, execute_run, make_huey
from rtnode.queue.registry import Registry, worker_id
from rtnode.queue.scheduler import Scheduler
from rtnode.store.archive import Archive
from rtnode.store.index import Index
from rtnode.store.part10 import split_part10


@pytest.fixture(scope="module")
def server():
    pg = PostgresServer().start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """(index url or '' for the embedded file, storage root)."""
    if request.param == "sqlite":
        yield "", tmp_path / "storage"
        return
    pg = request.getfixturevalue("server")
    db = f"t{abs(hash(request.node.name)) % 10**8}"
    import psycopg

    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {db}")
    yield pg.url.rsplit("/", 1)[0] + "/" + db, tmp_path / "storage"


def encode(ds) -> tuple:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return split_part10(buf.getvalue())


def test_filing_listing_and_references(engine):
    url, root = engine
    archive = Archive(root, index_url=url)
    try:
        course = PhantomCourse(patient=Patient(patient_id="ENG1"),
                               geometry=CTGeometry(rows=32, columns=32, slices=6)).build()
        datasets = [*course.ct, course.rtstruct, course.rtplan, course.rtdose]
        for ds in datasets:
            meta, data = encode(ds)
            assert archive.file_instance(meta, data, calling_ae="TPS1").kind == "received"
        meta, data = encode(course.ct[0])
        assert archive.file_instance(meta, data, calling_ae="TPS1").kind == "duplicate"
        index = archive.index
        assert index.counts() == {"patients": 1, "studies": 1, "series": 4, "instances": 9}
        assert index.event_counts() == {"received": 9, "duplicate": 1}
        (study,) = index.studies()
        assert sorted(study["modalities"].split(",")) == ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]
        assert study["instance_count"] == 9 and study["series_count"] == 4
        assert len(index.instances(series_uid=course.ct[0].SeriesInstanceUID)) == 6
        refs = index.references_of(course.rtstruct.SOPInstanceUID)
        assert ("image", course.ct[0].SOPInstanceUID) in refs
        assert index.last_received() is not None
    finally:
        archive.close()


def save(book: CourseBook, course_key: str) -> int:
    return book.save_course(patient_id="P1", key=course_key, anchor_series_uid="1.2",
                            frame_of_reference_uid="", state="waiting", tag="clinical",
                            rule="r", calling_ae="TPS", members=[], verdict={},
                            first_received_at="", last_received_at="")


def plan(book: CourseBook, course_key: str, stages: list[str]) -> int:
    course = save(book, course_key)
    book.create_revision(course, [], {}, {"name": "r"},
                         [PlannedRun(stage=s, queue="cpu", state=PENDING) for s in stages],
                         priority=1.0, size=10)
    return course


def test_course_book_states_and_requeue(engine):
    url, root = engine
    index = Index(url or root / "index.sqlite")
    book = CourseBook(index)
    course = plan(book, "k1", ["a", "b"])
    assert save(book, "k1") == course  # the upsert keeps the id
    a, b = book.runs(course, 1)[:2]
    assert book.arm(a["id"], "t1")
    assert book.transition(a["id"], RUNNING, expect=[PENDING, QUEUED], if_token="t1",
                           worker_pid=42, worker_id="h:1:cpu", attempts=1)
    assert not book.transition(a["id"], DONE, expect=[RUNNING], if_token="stale")
    assert book.split(book.run(a["id"]), "t1", ["x", "y"])
    parts = book.parts_of(book.run(a["id"]))
    assert [p["part"] for p in parts] == ["x", "y"]
    x = next(r for r in book.runs(course, 1) if r["part"] == "x")
    assert book.transition(x["id"], FAILED, reason="broken")
    assert book.queue_depths()["cpu"]["pending"] >= 2
    assert book.requeue(course, only_failed=True) >= 2  # the failed part and its parent
    assert book.course_counts()["running"] == 1
    book.set_paused("gpu", True)
    assert book.paused() == {"gpu"}
    assert book.cancel(course) >= 1
    save(book, "k1")
    assert book.course(course)["state"] == "cancelled"  # a cancelled course stays cancelled
    index.close()


def test_registry_capacity_and_scheduler_dispatch(engine):
    url, root = engine
    index = Index(url or root / "index.sqlite")
    config = Config(index={"url": url}, workers={"heartbeat_timeout": 30.0})
    book = CourseBook(index)
    course = plan(book, "k2", ["a", "b", "c", "d", "e"])
    registry = Registry(index, 30.0)
    for host, slots in (("here", 1), ("there", 1)):
        registry.register(worker_id(host, 7, "cpu"), host=host, pid=7, queue="cpu", slots=slots)
    assert registry.capacity() == {"cpu": 2}
    assert isinstance(registry.capacity()["cpu"], int)
    huey = MemoryHuey("engines", results=False)
    huey.run_stage = huey.task(name=TASK_NAME)(execute_run)
    scheduler = Scheduler(config, index, {"cpu": huey}, {"cpu": 0})
    # two live slots, each with one run queued ahead: four runs; the fifth waits
    assert scheduler.tick() == 4
    states = sorted(r["state"] for r in book.runs(course, 1))
    assert states == [PENDING] + [QUEUED] * 4
    assert len(huey) == 4
    # a broker that refuses: the run stays pending with no token, nothing is lost
    down = make_huey(Config(queue={"backend": "redis",
                                   "redis_url": "redis://127.0.0.1:1/0"}), "cpu")
    scheduler.hueys = {"cpu": down}
    registry.register(worker_id("third", 7, "cpu"), host="third", pid=7, queue="cpu", slots=1)
    assert scheduler.tick() == 0
    third = next(r for r in book.runs(course, 1) if r["state"] == PENDING)
    assert third["token"] == "" and "cpu" in scheduler._broker_down
    # a worker on another host that stops its heartbeat: its running run goes back to pending
    queued = next(r for r in book.runs(course, 1) if r["state"] == QUEUED)
    book.transition(queued["id"], RUNNING, expect=[QUEUED], worker_id=worker_id("there", 7, "cpu"),
                    worker_pid=7, worker_host="there", attempts=1)
    with index.transaction() as c:
        c.execute("UPDATE workers SET heartbeat_at='2000-01-01T00:00:00.000+00:00'"
                  " WHERE host='there'")
    assert registry.capacity() == {"cpu": 2}
    assert registry.release_orphans(book) == 1
    back = book.run(queued["id"])
    assert back["state"] == PENDING and back["token"] == "" and back["attempts"] == 1
    assert [w["live"] for w in registry.workers() if w["host"] == "there"] == [False]
    index.close()


def test_retrieval_job_listing(engine):
    from rtnode.cohorts.retrieve import list_jobs

    url, root = engine
    index = Index(url or root / "index.sqlite")
    with index.transaction() as c:
        job = c.execute("INSERT INTO retrievals(remote, selectors, state, pid, created_at,"
                        " updated_at) VALUES (?,?,?,?,?,?) RETURNING id",
                        ("pacs", "{}", "done", None, "t", "t")).fetchone()[0]
        c.executemany("INSERT INTO retrieval_series(job_fk, patient_id, study_uid, series_uid,"
                      " state, completed) VALUES (?,?,?,?,?,?)",
                      [(job, "P", "1.1", f"1.1.{i}", "done", 10) for i in range(3)])
    (listed,) = list_jobs(index)
    assert listed["series"]["done"] == 3 and listed["completed"] == 30
    assert type(listed["completed"]) is int
    index.close()


def test_a_workers_heartbeat_releases_dead_task_processes_and_kills_overdue_ones(engine):
    """What each worker's heartbeat does on its own host: a run whose task process is gone goes
    back to pending; a run far past its stage's timeout has its process killed and fails."""
    import subprocess
    import sys

    url, root = engine
    index = Index(url or root / "index.sqlite")
    config = Config(index={"url": url}, stages={"default_timeout": 5.0})
    book = CourseBook(index)
    course = plan(book, "k3", ["gone", "overdue"])
    gone, overdue = book.runs(course, 1)
    wid = worker_id("this-host", 1, "cpu")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hung = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        for run, pid in ((gone, dead.pid), (overdue, hung.pid)):
            book.arm(run["id"], f"t{run['id']}")
            book.transition(run["id"], RUNNING, expect=[PENDING], worker_pid=pid,
                            worker_id=wid, attempts=1)
        with index.transaction() as c:  # started long before the 5 s timeout + grace
            c.execute("UPDATE stage_runs SET started_at='2000-01-01T00:00:00.000+00:00'"
                      " WHERE id=?", (overdue["id"],))
        assert Registry(index, 30.0).release_dead_tasks(wid, config) == 1
        assert book.run(gone["id"])["state"] == PENDING
        assert hung.wait(10) == -9
        late = book.run(overdue["id"])
        assert late["state"] == FAILED and late["reason"] == "timed out after 5 s (worker killed)"
    finally:
        if hung.poll() is None:
            hung.kill()
    index.close()


def test_a_series_deleted_by_another_process_is_filed_again_at_once(engine):
    """The node remembers the patient/study/series rows it wrote; ``rtnode delete`` in another
    process removes them. The next instance of that series must be filed with its hierarchy
    written anew, not refused for rows that are gone."""
    from rtnode.store.delete import Deleter

    url, root = engine
    node = Archive(root, index_url=url)
    other = Archive(root, index_url=url)
    try:
        course = PhantomCourse(patient=Patient(patient_id="ENG2"),
                               geometry=CTGeometry(rows=32, columns=32, slices=4)
                               ).build(with_rt=False)
        encoded = [encode(ds) for ds in course.ct]
        for meta, data in encoded[:2]:
            assert node.file_instance(meta, data, calling_ae="TPS1").kind == "received"
        deleter = Deleter(other.index, root)
        deleter.execute(deleter.plan_series(str(course.ct[0].SeriesInstanceUID)), by="test")
        assert other.index.counts()["series"] == 0
        for meta, data in encoded:
            outcome = node.file_instance(meta, data, calling_ae="TPS1")
            assert outcome.ok and outcome.kind == "received", outcome
        assert node.index.counts() == {"patients": 1, "studies": 1, "series": 1,
                                       "instances": 4}
    finally:
        node.close()
        other.close()
