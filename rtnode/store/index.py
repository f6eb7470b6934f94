"""The index: patients, studies, series, instances, their references, events, and pipeline state.

Embedded default: one SQLite file, WAL mode, one short IMMEDIATE transaction per received
instance, every lookup on the hot path by a UNIQUE key. Connections come from a small pool (one
per concurrent user, so one per concurrent association at most); SQLite serialises the writers.
``synchronous=FULL`` makes each commit durable before the C-STORE response goes out.

``index.url: postgresql://…`` puts the same schema on a PostgreSQL server instead, for nodes
whose workers run on several hosts (SQLite over a network filesystem is not safe for concurrent
writers). The SQL is the same; store/db.py translates the few spellings that differ, and each
write transaction takes one advisory lock so writers serialise exactly as they do on SQLite.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from rtnode.store.attributes import InstanceRecord
from rtnode.store.db import (
    POSTGRESQL,
    SQLITE,
    WRITER_LOCK,
    connect_postgres,
    ddl_for,
    is_postgres_url,
    redact,
)
from rtnode.store.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger("rtnode.store")


#: series whose patient/study/series rows this process remembers having written
HIERARCHY_CACHE = 4096


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def utc_ago(seconds: float) -> str:
    """The utc_now() text of ``seconds`` ago: index times compare as text on every engine."""
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds")


def seconds_since(stamp: str) -> float | None:
    """Age of an index time in seconds (None for an empty stamp), computed here rather than in
    SQL so that the scheduler needs no engine's date functions."""
    if not stamp:
        return None
    return (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(stamp)).total_seconds()


class _Job:
    """One instance's index rows waiting for a commit, and what became of them."""

    __slots__ = ("rec", "fields", "done", "_value", "_error")

    def __init__(self, rec: InstanceRecord, fields: dict):
        self.rec, self.fields = rec, fields
        self.done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def succeed(self, value: Any) -> None:
        self._value, self.done = value, True

    def fail(self, error: BaseException) -> None:
        self._error, self.done = error, True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class _GroupCommit:
    """Group commit on SQLite: while one thread commits, the rows other threads bring queue
    up; the next of them to take the turn writes them all in one transaction, one WAL fsync.

    No thread is added: each filing thread either leads a commit or waits for the commit
    that holds its row. Every caller returns only after that commit is durable (or with its
    own row's error), so the C-STORE answer still waits for its own row.
    """

    def __init__(self, index: "Index"):
        self.index = index
        self.cond = threading.Condition()
        self.pending: list[_Job] = []
        self.busy = False

    def run(self, job: _Job) -> None:
        with self.cond:
            self.pending.append(job)
            while self.busy and not job.done:
                self.cond.wait()
            if job.done:
                return
            self.busy = True
            batch, self.pending = self.pending, []
        try:
            self.index._commit_jobs(batch)
        except BaseException as exc:
            for j in batch:
                if not j.done:
                    j.fail(exc)
        finally:
            with self.cond:
                self.busy = False
                self.cond.notify_all()


class SchemaTooNew(RuntimeError):
    """The index was written by a newer rtnode; refusing to touch it protects its data."""


@dataclass(frozen=True)
class StoredFile:
    path: str
    digest: str


def open_index(config, *, migrate: bool = True) -> "Index":
    """The index a configuration names: ``index.url`` (PostgreSQL) or storage/index.sqlite."""
    url = config.index.url
    target = url if url else config.storage_root / "index.sqlite"
    return Index(target, durable=config.storage.fsync, migrate=migrate)


def index_exists(config) -> bool:
    """False only for an embedded index that was never created (nothing received yet)."""
    return bool(config.index.url) or (config.storage_root / "index.sqlite").exists()


class Index:
    """One index (SQLite file or PostgreSQL database), shared by every thread of one process
    (and by other processes, on this host or others)."""

    def __init__(self, path: Path | str, durable: bool = True, migrate: bool = True):
        self.dialect = POSTGRESQL if is_postgres_url(str(path)) else SQLITE
        self.url = str(path) if self.dialect == POSTGRESQL else ""
        self.path = Path(path) if self.dialect == SQLITE else Path()
        if self.dialect == SQLITE:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        # A pool, not one connection per thread: pynetdicom starts a thread per association, and
        # a long-running node must not keep a connection for every association it ever served.
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._all: list = []
        self._lock = threading.Lock()
        self._hierarchy: dict[str, tuple[tuple, int]] = {}
        self._group = _GroupCommit(self)
        if migrate:
            self.migrate()

    @property
    def where(self) -> str:
        """Where the index lives, for people (never with a password)."""
        return redact(self.url) if self.url else str(self.path)

    # -- connections ---------------------------------------------------------------------------

    def _open(self):
        if self.dialect == POSTGRESQL:
            c = connect_postgres(self.url)
        else:
            c = sqlite3.connect(self.path, isolation_level=None, timeout=60.0,
                                check_same_thread=False)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            c.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._all.append(c)
        return c

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Borrow a connection for one unit of work (a broken server connection is dropped)."""
        try:
            c = self._idle.get_nowait()
        except queue.Empty:
            c = self._open()
        try:
            yield c
        finally:
            if getattr(c, "usable", True):
                self._idle.put(c)
            else:
                with self._lock:
                    if c in self._all:
                        self._all.remove(c)

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()
        self._idle = queue.SimpleQueue()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so no transaction fails half-way
        on a lock upgrade; the busy timeout queues writers instead of failing them. On
        PostgreSQL the transaction-scoped advisory lock gives the same one-writer order."""
        with self.connection() as c:
            if self.dialect == POSTGRESQL:
                c.execute("BEGIN")
                try:
                    c.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))
                except BaseException:
                    self._rollback(c)
                    raise
            else:
                c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                self._rollback(c)
                raise
            c.execute("COMMIT")

    @staticmethod
    def _rollback(c) -> None:
        try:
            c.execute("ROLLBACK")
        except Exception:  # a dead server connection has nothing left to roll back
            pass

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self.connection() as c:
            return c.execute(sql, args).fetchall()

    def migrate(self) -> int:
        """Apply the migrations this index lacks, in one transaction. SQLite keeps the version
        in ``PRAGMA user_version``; PostgreSQL in a one-row ``schema_version`` table."""
        with self.transaction() as c:
            version = self._schema_version(c)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{self.where} has schema version {version}; this rtnode knows up to "
                    f"{SCHEMA_VERSION}. Upgrade rtnode, or point storage.root/index.url "
                    "elsewhere.")
            for n in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[n].split(";"):
                    if statement.strip():
                        c.execute(ddl_for(self.dialect, statement))
            if self.dialect == POSTGRESQL:
                c.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION,))
            else:
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return SCHEMA_VERSION

    def _schema_version(self, c) -> int:
        if self.dialect == SQLITE:
            return c.execute("PRAGMA user_version").fetchone()[0]
        c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = c.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            c.execute("INSERT INTO schema_version(version) VALUES (0)")
            return 0
        return row[0]

    # -- the hot path --------------------------------------------------------------------------

    def stored_file(self, sop_instance_uid: str) -> StoredFile | None:
        rows = self.query("SELECT path, digest FROM instances WHERE sop_instance_uid=?",
                          (sop_instance_uid,))
        return StoredFile(rows[0]["path"], rows[0]["digest"]) if rows else None

    def record_instance(self, rec: InstanceRecord, *, path: str, size: int, digest: str,
                        transfer_syntax_uid: str, calling_ae: str = "", called_ae: str = "",
                        origin: str = "received") -> tuple[str, StoredFile | None]:
        """Insert or replace the instance row and its parents, with its event, in one commit.

        Returns ("received" | "duplicate" | "replaced", the file it replaced or None) once the
        commit holding the row is durable. A duplicate can still arrive here when two
        associations deliver the same instance at once. On SQLite the rows of instances filed
        at the same moment by several associations share one commit (one WAL fsync): see
        ``_GroupCommit``.
        """
        fields = dict(path=path, size=size, digest=digest,
                      transfer_syntax_uid=transfer_syntax_uid, calling_ae=calling_ae,
                      called_ae=called_ae, origin=origin)
        try:
            return self._commit_one(_Job(rec, fields))
        except Exception:
            # the series' rows may have been deleted by another process (``rtnode delete``)
            # after this one remembered them: forget them and write the hierarchy anew, once
            if self._hierarchy.pop(rec.series_uid, None) is None:
                raise
            log.info("series %s: remembered hierarchy rows are gone; writing them again",
                     rec.series_uid)
            return self._commit_one(_Job(rec, fields))

    def _commit_one(self, job: "_Job") -> tuple[str, StoredFile | None]:
        if self.dialect == SQLITE:
            self._group.run(job)
        else:
            self._commit_jobs([job])
        return job.result()

    def _commit_jobs(self, jobs: list["_Job"]) -> None:
        """Write each job's rows in one transaction; a job whose statements fail is rolled
        back to its savepoint alone and fails alone. Results are set only after COMMIT."""
        now = utc_now()
        done: list[tuple[_Job, tuple]] = []
        with self.transaction() as c:
            for job in jobs:
                if len(jobs) > 1:
                    c.execute("SAVEPOINT rtnode_instance")
                try:
                    outcome = self._record_in(c, job.rec, now, **job.fields)
                except Exception as exc:
                    if len(jobs) == 1:
                        raise
                    c.execute("ROLLBACK TO rtnode_instance")
                    c.execute("RELEASE rtnode_instance")
                    job.fail(exc)
                    continue
                if len(jobs) > 1:
                    c.execute("RELEASE rtnode_instance")
                done.append((job, outcome))
        # committed: only now may results be given and the upserted hierarchy be remembered
        for job, (kind, replaced, hierarchy) in done:
            if hierarchy is not None:
                if len(self._hierarchy) >= HIERARCHY_CACHE:
                    self._hierarchy.clear()  # the series being received are re-learnt in one write
                self._hierarchy[job.rec.series_uid] = hierarchy
            job.succeed((kind, replaced))

    def _record_in(self, c, rec: InstanceRecord, now: str, *, path: str, size: int,
                   digest: str, transfer_syntax_uid: str, calling_ae: str, called_ae: str,
                   origin: str) -> tuple[str, StoredFile | None, tuple | None]:
        old = c.execute("SELECT id, path, digest FROM instances WHERE sop_instance_uid=?",
                        (rec.sop_instance_uid,)).fetchone()
        if old is not None and old["digest"] == digest:
            self._event(c, now, "duplicate", rec.sop_instance_uid, calling_ae, 0, "")
            return "duplicate", None, None
        series, hierarchy = self._series_fk(c, rec)
        values = (rec.sop_class_uid, series, rec.modality, rec.instance_number,
                  rec.frame_of_reference_uid, transfer_syntax_uid, path, size, digest, now,
                  calling_ae, called_ae, origin, json.dumps(rec.attrs))
        if old is None:
            instance = c.execute(
                "INSERT INTO instances(sop_class_uid, series_fk, modality, instance_number,"
                " frame_of_reference_uid, transfer_syntax_uid, path, size, digest,"
                " received_at, calling_ae, called_ae, origin, attrs, sop_instance_uid)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (*values, rec.sop_instance_uid)).fetchone()[0]
        else:
            instance = old["id"]
            c.execute(
                "UPDATE instances SET sop_class_uid=?, series_fk=?, modality=?,"
                " instance_number=?, frame_of_reference_uid=?, transfer_syntax_uid=?,"
                " path=?, size=?, digest=?, received_at=?, calling_ae=?, called_ae=?,"
                " origin=?, attrs=? WHERE id=?", (*values, instance))
            c.execute("DELETE FROM instance_refs WHERE instance_fk=?", (instance,))
        if rec.refs:
            c.executemany("INSERT INTO instance_refs(instance_fk, kind, uid) VALUES (?,?,?)"
                          " ON CONFLICT DO NOTHING", [(instance, k, u) for k, u in rec.refs])
        kind = "received" if old is None else "replaced"
        detail = "" if old is None else f"previous digest {old['digest'][:16]}"
        self._event(c, now, kind, rec.sop_instance_uid, calling_ae, 0, detail)
        return (kind, None if old is None else StoredFile(old["path"], old["digest"]),
                (hierarchy, series))

    def _series_fk(self, c: sqlite3.Connection, rec: InstanceRecord) -> tuple[int, tuple]:
        """Upsert patient, study and series; skipped when this process already committed
        exactly these values for this series (every slice of a CT repeats them). Returns the
        series row id and the values, for the caller to remember once committed."""
        values = (rec.patient_id, rec.patient_name, rec.patient_birth_date, rec.patient_sex,
                  rec.study_uid, rec.study_date, rec.study_time, rec.study_description,
                  rec.accession_number, rec.series_uid, rec.modality, rec.series_number,
                  rec.series_description, rec.frame_of_reference_uid)
        cached = self._hierarchy.get(rec.series_uid)
        if cached is not None and cached[0] == values:
            return cached[1], values
        patient = c.execute(
            "INSERT INTO patients(patient_id, name, birth_date, sex) VALUES (?,?,?,?) "
            "ON CONFLICT(patient_id) DO UPDATE SET name=excluded.name, "
            "birth_date=excluded.birth_date, sex=excluded.sex RETURNING id",
            (rec.patient_id, rec.patient_name, rec.patient_birth_date,
             rec.patient_sex)).fetchone()[0]
        study = c.execute(
            "INSERT INTO studies(study_uid, patient_fk, study_date, study_time, description,"
            " accession_number) VALUES (?,?,?,?,?,?) ON CONFLICT(study_uid) DO UPDATE SET "
            "patient_fk=excluded.patient_fk, study_date=excluded.study_date, "
            "study_time=excluded.study_time, description=excluded.description, "
            "accession_number=excluded.accession_number RETURNING id",
            (rec.study_uid, patient, rec.study_date, rec.study_time, rec.study_description,
             rec.accession_number)).fetchone()[0]
        series = c.execute(
            "INSERT INTO series(series_uid, study_fk, modality, series_number, description,"
            " frame_of_reference_uid) VALUES (?,?,?,?,?,?) ON CONFLICT(series_uid) DO UPDATE"
            " SET study_fk=excluded.study_fk, modality=excluded.modality, "
            "series_number=excluded.series_number, description=excluded.description, "
            "frame_of_reference_uid=CASE WHEN excluded.frame_of_reference_uid != '' THEN "
            "excluded.frame_of_reference_uid ELSE series.frame_of_reference_uid END RETURNING id",
            (rec.series_uid, study, rec.modality, rec.series_number,
             rec.series_description, rec.frame_of_reference_uid)).fetchone()[0]
        return series, values

    @staticmethod
    def _event(c: sqlite3.Connection, at: str, kind: str, sop_instance_uid: str,
               calling_ae: str, status: int | None, detail: str) -> None:
        c.execute("INSERT INTO events(at, kind, sop_instance_uid, calling_ae, status, detail)"
                  " VALUES (?,?,?,?,?,?)", (at, kind, sop_instance_uid, calling_ae, status, detail))

    def record_event(self, kind: str, *, sop_instance_uid: str = "", calling_ae: str = "",
                     status: int | None = None, detail: str = "") -> None:
        with self.transaction() as c:
            self._event(c, utc_now(), kind, sop_instance_uid, calling_ae, status, detail)

    # -- reading, for the CLI and course building ----------------------------------------------

    def counts(self) -> dict[str, int]:
        return {t: self.query(f"SELECT COUNT(*) FROM {t}")[0][0]
                for t in ("patients", "studies", "series", "instances")}

    def event_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.query("SELECT kind, COUNT(*) FROM events GROUP BY kind")}

    def last_received(self) -> str | None:
        return self.query("SELECT MAX(received_at) FROM instances")[0][0]

    def events(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT at, kind, sop_instance_uid, calling_ae, status, detail FROM events"
        args: tuple = ()
        if kind:
            sql += " WHERE kind=?"
            args = (kind,)
        sql += " ORDER BY id DESC LIMIT ?"
        return [dict(r) for r in self.query(sql, (*args, limit))]

    def studies(self, patient_id: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT p.patient_id, p.name AS patient_name, st.study_uid, st.study_date,"
               " st.description AS study_description, st.accession_number,"
               " (SELECT COUNT(*) FROM series se WHERE se.study_fk = st.id) AS series_count,"
               " (SELECT COUNT(*) FROM instances i JOIN series se ON i.series_fk = se.id"
               "   WHERE se.study_fk = st.id) AS instance_count,"
               " (SELECT GROUP_CONCAT(DISTINCT se.modality) FROM series se"
               "   WHERE se.study_fk = st.id) AS modalities"
               " FROM studies st JOIN patients p ON st.patient_fk = p.id")
        return self._query(sql, {"p.patient_id": patient_id}, "st.study_date, st.study_uid")

    def series(self, patient_id: str | None = None,
               study_uid: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT p.patient_id, st.study_uid, se.series_uid, se.modality, se.series_number,"
               " se.description AS series_description, se.frame_of_reference_uid,"
               " (SELECT COUNT(*) FROM instances i WHERE i.series_fk = se.id) AS instance_count,"
               " (SELECT MAX(i.received_at) FROM instances i WHERE i.series_fk = se.id)"
               "   AS last_received"
               " FROM series se JOIN studies st ON se.study_fk = st.id"
               " JOIN patients p ON st.patient_fk = p.id")
        return self._query(sql, {"p.patient_id": patient_id, "st.study_uid": study_uid},
                           "st.study_uid, se.series_number")

    def instances(self, patient_id: str | None = None, study_uid: str | None = None,
                  series_uid: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT p.patient_id, st.study_uid, se.series_uid, i.sop_instance_uid,"
               " i.sop_class_uid, i.modality, i.instance_number, i.frame_of_reference_uid,"
               " i.transfer_syntax_uid, i.path, i.size, i.digest, i.received_at, i.calling_ae,"
               " i.origin FROM instances i JOIN series se ON i.series_fk = se.id"
               " JOIN studies st ON se.study_fk = st.id JOIN patients p ON st.patient_fk = p.id")
        return self._query(sql, {"p.patient_id": patient_id, "st.study_uid": study_uid,
                                 "se.series_uid": series_uid},
                           "st.study_uid, se.series_uid, i.instance_number, i.id")

    def references_of(self, sop_instance_uid: str) -> list[tuple[str, str]]:
        rows = self.query(
            "SELECT r.kind, r.uid FROM instance_refs r JOIN instances i ON r.instance_fk = i.id"
            " WHERE i.sop_instance_uid=? ORDER BY r.kind, r.uid", (sop_instance_uid,))
        return [(r[0], r[1]) for r in rows]

    def _query(self, sql: str, filters: dict[str, str | None],
               order: str) -> list[dict[str, Any]]:
        """Run a listing; filters map fixed column names (never user text) to wanted values."""
        used = {col: v for col, v in filters.items() if v is not None}
        if used:
            sql += " WHERE " + " AND ".join(f"{col} = ?" for col in used)
        sql += f" ORDER BY {order}"
        return [dict(r) for r in self.query(sql, tuple(used.values()))]
