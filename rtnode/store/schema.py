"""The index schema, as an ordered list of migrations, for SQLite and PostgreSQL alike.

``PRAGMA user_version`` (SQLite) or the ``schema_version`` table (PostgreSQL) holds how many have
been applied; opening an index applies the rest in one transaction. Statements are written in
SQLite's spelling and store/db.py ``ddl_for`` maps the few type names that differ. Add a migration at the end — never edit one that has shipped — so that every
existing storage/index.sqlite upgrades in place.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the DICOM hierarchy, references for course building, and the event log
    """
    CREATE TABLE patients (
        id          INTEGER PRIMARY KEY,
        patient_id  TEXT NOT NULL UNIQUE,
        name        TEXT NOT NULL DEFAULT '',
        birth_date  TEXT NOT NULL DEFAULT '',
        sex         TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE studies (
        id                INTEGER PRIMARY KEY,
        study_uid         TEXT NOT NULL UNIQUE,
        patient_fk        INTEGER NOT NULL REFERENCES patients(id),
        study_date        TEXT NOT NULL DEFAULT '',
        study_time        TEXT NOT NULL DEFAULT '',
        description       TEXT NOT NULL DEFAULT '',
        accession_number  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX studies_patient ON studies(patient_fk);
    CREATE TABLE series (
        id                      INTEGER PRIMARY KEY,
        series_uid              TEXT NOT NULL UNIQUE,
        study_fk                INTEGER NOT NULL REFERENCES studies(id),
        modality                TEXT NOT NULL DEFAULT '',
        series_number           INTEGER,
        description             TEXT NOT NULL DEFAULT '',
        frame_of_reference_uid  TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX series_study ON series(study_fk);
    CREATE INDEX series_for ON series(frame_of_reference_uid);
    CREATE TABLE instances (
        id                      INTEGER PRIMARY KEY,
        sop_instance_uid        TEXT NOT NULL UNIQUE,
        sop_class_uid           TEXT NOT NULL,
        series_fk               INTEGER NOT NULL REFERENCES series(id),
        modality                TEXT NOT NULL DEFAULT '',
        instance_number         INTEGER,
        frame_of_reference_uid  TEXT NOT NULL DEFAULT '',
        transfer_syntax_uid     TEXT NOT NULL,
        path                    TEXT NOT NULL,
        size                    INTEGER NOT NULL,
        digest                  TEXT NOT NULL,
        received_at             TEXT NOT NULL,
        calling_ae              TEXT NOT NULL DEFAULT '',
        called_ae               TEXT NOT NULL DEFAULT '',
        origin                  TEXT NOT NULL DEFAULT 'received',
        attrs                   TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX instances_series ON instances(series_fk);
    CREATE INDEX instances_received ON instances(received_at);
    CREATE TABLE instance_refs (
        instance_fk  INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
        kind         TEXT NOT NULL,
        uid          TEXT NOT NULL,
        PRIMARY KEY (instance_fk, kind, uid)
    ) WITHOUT ROWID;
    CREATE INDEX instance_refs_uid ON instance_refs(uid, kind);
    CREATE TABLE events (
        id                INTEGER PRIMARY KEY,
        at                TEXT NOT NULL,
        kind              TEXT NOT NULL,
        sop_instance_uid  TEXT NOT NULL DEFAULT '',
        calling_ae        TEXT NOT NULL DEFAULT '',
        status            INTEGER,
        detail            TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_kind ON events(kind, at);
    """,
    # 2: treatment courses, their revisions, and the stage runs of each revision
    """
    CREATE TABLE courses (
        id                      INTEGER PRIMARY KEY,
        patient_id              TEXT NOT NULL,
        course_key              TEXT NOT NULL,
        anchor_series_uid       TEXT NOT NULL DEFAULT '',
        frame_of_reference_uid  TEXT NOT NULL DEFAULT '',
        state                   TEXT NOT NULL DEFAULT 'receiving',
        tag                     TEXT NOT NULL DEFAULT 'clinical',
        rule                    TEXT NOT NULL DEFAULT '',
        calling_ae              TEXT NOT NULL DEFAULT '',
        instance_count          INTEGER NOT NULL DEFAULT 0,
        members                 TEXT NOT NULL DEFAULT '[]',
        verdict                 TEXT NOT NULL DEFAULT '{}',
        first_received_at       TEXT NOT NULL DEFAULT '',
        last_received_at        TEXT NOT NULL DEFAULT '',
        created_at              TEXT NOT NULL,
        updated_at              TEXT NOT NULL,
        cancelled               INTEGER NOT NULL DEFAULT 0,
        UNIQUE (patient_id, course_key)
    );
    CREATE INDEX courses_state ON courses(state);
    CREATE TABLE revisions (
        course_fk   INTEGER NOT NULL REFERENCES courses(id),
        revision    INTEGER NOT NULL,
        created_at  TEXT NOT NULL,
        members     TEXT NOT NULL,
        verdict     TEXT NOT NULL,
        rule        TEXT NOT NULL DEFAULT '',
        plan        TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (course_fk, revision)
    );
    CREATE TABLE stage_runs (
        id                INTEGER PRIMARY KEY,
        course_fk         INTEGER NOT NULL REFERENCES courses(id),
        revision          INTEGER NOT NULL,
        stage             TEXT NOT NULL,
        part              TEXT NOT NULL DEFAULT '',
        queue             TEXT NOT NULL,
        state             TEXT NOT NULL,
        reason            TEXT NOT NULL DEFAULT '',
        after             TEXT NOT NULL DEFAULT '[]',
        fingerprint       TEXT NOT NULL DEFAULT '',
        priority          REAL NOT NULL DEFAULT 0,
        size              INTEGER NOT NULL DEFAULT 0,
        attempts          INTEGER NOT NULL DEFAULT 0,
        footprint         TEXT NOT NULL DEFAULT 'normal',
        token             TEXT NOT NULL DEFAULT '',
        worker_pid        INTEGER,
        worker_host       TEXT NOT NULL DEFAULT '',
        reused_revision   INTEGER,
        pending_at        TEXT NOT NULL DEFAULT '',
        queued_at         TEXT NOT NULL DEFAULT '',
        started_at        TEXT NOT NULL DEFAULT '',
        finished_at       TEXT NOT NULL DEFAULT '',
        UNIQUE (course_fk, revision, stage, part)
    );
    CREATE INDEX stage_runs_state ON stage_runs(state, queue);
    CREATE TABLE queue_state (
        queue   TEXT PRIMARY KEY,
        paused  INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE node_state (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    """,
    # 3: cohort retrieval jobs, one row per series to move
    """
    CREATE TABLE retrievals (
        id           INTEGER PRIMARY KEY,
        remote       TEXT NOT NULL,
        selectors    TEXT NOT NULL,
        state        TEXT NOT NULL,
        error        TEXT NOT NULL DEFAULT '',
        pid          INTEGER,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        finished_at  TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE retrieval_series (
        job_fk       INTEGER NOT NULL REFERENCES retrievals(id),
        patient_id   TEXT NOT NULL,
        study_uid    TEXT NOT NULL,
        series_uid   TEXT NOT NULL,
        modality     TEXT NOT NULL DEFAULT '',
        expected     INTEGER,
        state        TEXT NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        moves        INTEGER NOT NULL DEFAULT 0,
        completed    INTEGER NOT NULL DEFAULT 0,
        failed       INTEGER NOT NULL DEFAULT 0,
        warning      INTEGER NOT NULL DEFAULT 0,
        error        TEXT NOT NULL DEFAULT '',
        started_at   TEXT NOT NULL DEFAULT '',
        finished_at  TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_fk, series_uid)
    );
    """,
    # 4: the worker registry (every queue consumer, on any host, with its slots and heartbeat)
    #    and which registered worker runs each stage run
    """
    CREATE TABLE workers (
        id            TEXT PRIMARY KEY,
        host          TEXT NOT NULL,
        pid           INTEGER NOT NULL,
        queue         TEXT NOT NULL,
        slots         INTEGER NOT NULL,
        device        TEXT NOT NULL DEFAULT '',
        version       TEXT NOT NULL DEFAULT '',
        started_at    TEXT NOT NULL,
        heartbeat_at  TEXT NOT NULL
    );
    CREATE INDEX workers_queue ON workers(queue, heartbeat_at);
    ALTER TABLE stage_runs ADD COLUMN worker_id TEXT NOT NULL DEFAULT ''
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
