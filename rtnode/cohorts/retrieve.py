"""Retrieving a cohort: find what the PACS holds, then move it series by series, resumably.

Every retrieval is a job in the index with one row per series, so a retrieval killed after two
days resumes exactly: done series are never moved again, a series caught mid-move is completed
by moving only its missing instances, and a series the index already holds in full is skipped.
At most ``max_parallel_moves`` C-MOVEs run at once, only inside the off-peak window when one is
given, and a failed or partial move is retried with back-off before the series is marked failed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable

from rtnode.cohorts.selectors import Selectors, Window
from rtnode.config import Config
from rtnode.dicom.qr import MoveResult, QueryRetrieveSCU, RemoteError
from rtnode.store.index import Index, utc_now

log = logging.getLogger("rtnode.retrieve")

#: tries per series before it is marked failed, and the back-off between them (seconds)
MOVE_ATTEMPTS = 3
BACKOFF_S = (2.0, 8.0)

Emit = Callable[[dict[str, Any]], None]


class RetrievalError(RuntimeError):
    """A retrieval that cannot start or go on: the message is the one line to show."""


@dataclass
class FoundSeries:
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    expected: int | None
    have: int

    @property
    def complete_here(self) -> bool:
        return self.expected is not None and self.have >= self.expected


class Retriever:
    def __init__(self, config: Config, index: Index, remote_name: str, emit: Emit,
                 sleep: Callable[[float], None] = time.sleep):
        if remote_name not in config.remotes:
            known = ", ".join(sorted(config.remotes)) or "none configured"
            raise RetrievalError(f"unknown remote {remote_name!r} (remotes in the config: "
                                 f"{known})")
        self.config, self.index, self.name, self.emit, self.sleep = (
            config, index, remote_name, emit, sleep)
        self.remote = config.remotes[remote_name]
        self.scu = QueryRetrieveSCU(remote_name, self.remote, config.dicom.ae_title)

    # -- finding ---------------------------------------------------------------------------------

    def _have(self, series_uid: str) -> int:
        return self.index.query(
            "SELECT COUNT(*) FROM instances i JOIN series s ON i.series_fk = s.id"
            " WHERE s.series_uid=?", (series_uid,))[0][0]

    def find(self, sel: Selectors) -> list[FoundSeries]:
        """C-FIND at study then series level; only the wanted modalities."""
        try:
            studies = []
            for pid in (sel.patient_ids or [None]):
                studies += self.scu.find_studies(pid, sel.study_date, sel.study_uid)
            found = []
            for st in studies:
                for se in self.scu.find_series(st["patient_id"], st["study_uid"]):
                    if se["modality"] in sel.modalities:
                        found.append(FoundSeries(st["patient_id"], st["study_uid"],
                                                 se["series_uid"], se["modality"],
                                                 se["instances"], self._have(se["series_uid"])))
        except RemoteError as exc:
            raise RetrievalError(str(exc)) from None
        return found

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(self, sel: Selectors, found: list[FoundSeries]) -> int:
        now = utc_now()
        with self.index.transaction() as c:
            job = c.execute("INSERT INTO retrievals(remote, selectors, state, pid, created_at,"
                            " updated_at) VALUES (?,?,?,?,?,?) RETURNING id",
                            (self.name, json.dumps(sel.as_json()), "running", os.getpid(), now,
                             now)).fetchone()[0]
            c.executemany(
                "INSERT INTO retrieval_series(job_fk, patient_id, study_uid, series_uid,"
                " modality, expected, state, error, finished_at) VALUES (?,?,?,?,?,?,?,?,?)",
                [(job, f.patient_id, f.study_uid, f.series_uid, f.modality, f.expected,
                  "skipped" if f.complete_here else "pending",
                  "already complete in the index" if f.complete_here else "",
                  now if f.complete_here else "") for f in found])
        return job

    def _series(self, job: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.index.query(
            "SELECT * FROM retrieval_series WHERE job_fk=? ORDER BY patient_id, study_uid,"
            " modality, series_uid", (job,))]

    def _update(self, job: int, series_uid: str, **fields: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.index.transaction() as c:
            c.execute(f"UPDATE retrieval_series SET {sets} WHERE job_fk=? AND series_uid=?",
                      (*fields.values(), job, series_uid))
            c.execute("UPDATE retrievals SET updated_at=? WHERE id=?", (utc_now(), job))

    # -- moving --------------------------------------------------------------------------------

    def _move_series(self, job: int, row: dict[str, Any]) -> str:
        uid = row["series_uid"]
        self._update(job, uid, state="moving", started_at=utc_now())
        self.emit({"event": "series_start", "job": job, "series_uid": uid,
                   "modality": row["modality"], "expected": row["expected"]})
        attempts, moves = row["attempts"], row["moves"]
        result = MoveResult(None, error="not attempted")
        for attempt in range(MOVE_ATTEMPTS):
            have = self._have(uid)
            if row["expected"] is not None and have >= row["expected"]:
                result = MoveResult(0, completed=0)
                break
            only = None
            if have:  # caught mid-move earlier: fetch only what is missing
                try:
                    listed = self.scu.find_instances(row["patient_id"], row["study_uid"], uid)
                except RemoteError as exc:
                    result = MoveResult(None, error=str(exc))
                    listed = []
                present = {r[0] for r in self.index.query(
                    "SELECT i.sop_instance_uid FROM instances i JOIN series s ON"
                    " i.series_fk = s.id WHERE s.series_uid=?", (uid,))}
                only = [u for u in listed if u not in present]
                if listed and not only:
                    result = MoveResult(0)
                    break
            attempts += 1
            moves += 1
            self._update(job, uid, attempts=attempts, moves=moves)
            try:
                result = self.scu.move(self.config.dicom.ae_title, row["patient_id"],
                                       row["study_uid"], uid, only or None)
            except RemoteError as exc:
                result = MoveResult(None, error=str(exc))
            if result.ok and result.warning == 0:
                break
            self.emit({"event": "series_retry", "job": job, "series_uid": uid,
                       "attempt": attempt + 1, "status": result.status, "failed": result.failed,
                       "warning": result.warning, "error": result.error})
            if attempt + 1 < MOVE_ATTEMPTS:
                self.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        state = "done" if result.ok else "failed"
        self._update(job, uid, state=state, completed=result.completed, failed=result.failed,
                     warning=result.warning, error=result.error, finished_at=utc_now())
        self.emit({"event": f"series_{state}", "job": job, "series_uid": uid,
                   "completed": result.completed, "failed": result.failed,
                   "warning": result.warning, "error": result.error,
                   "instances_here": self._have(uid)})
        return state

    def _wait_for_window(self, window: Window | None) -> None:
        announced = False
        while window is not None and dt.datetime.now() not in window:
            if not announced:
                self.emit({"event": "paused", "window": str(window)})
                announced = True
            self.sleep(30)
        if announced:
            self.emit({"event": "resumed", "window": str(window)})

    def run(self, job: int, window: Window | None = None) -> dict[str, Any]:
        """Move every pending series of the job; returns the job's final counts."""
        with self.index.transaction() as c:
            c.execute("UPDATE retrievals SET state='running', pid=?, updated_at=? WHERE id=?",
                      (os.getpid(), utc_now(), job))
            # a series caught 'moving' by a kill is taken up again (only its missing instances)
            c.execute("UPDATE retrieval_series SET state='pending' WHERE job_fk=? AND"
                      " state='moving'", (job,))
        pending = [r for r in self._series(job) if r["state"] == "pending"]
        self.emit({"event": "job_start", "job": job, "remote": self.name,
                   "series": len(pending), "max_parallel_moves": self.remote.max_parallel_moves})
        with ThreadPoolExecutor(max_workers=self.remote.max_parallel_moves,
                                thread_name_prefix="rtnode-move") as pool:
            running: set[Future] = set()
            queue = list(pending)
            while queue or running:
                while queue and len(running) < self.remote.max_parallel_moves:
                    self._wait_for_window(window)
                    running.add(pool.submit(self._move_series, job, queue.pop(0)))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()
        return self.finish(job)

    def finish(self, job: int) -> dict[str, Any]:
        rows = self._series(job)
        counts = {s: sum(r["state"] == s for r in rows)
                  for s in ("done", "skipped", "failed", "pending", "moving")}
        state = "failed" if counts["failed"] else "done"
        with self.index.transaction() as c:
            c.execute("UPDATE retrievals SET state=?, finished_at=?, updated_at=?, error=?"
                      " WHERE id=?", (state, utc_now(), utc_now(),
                                      f"{counts['failed']} series failed" if counts["failed"]
                                      else "", job))
        summary = {"event": "job_done", "job": job, "state": state, **counts,
                   "instances": sum(r["completed"] for r in rows)}
        self.emit(summary)
        return summary


def list_jobs(index: Index) -> list[dict[str, Any]]:
    """Jobs with their series counts; a 'running' job whose process is gone is 'interrupted'."""
    from rtnode.node_info import pid_alive

    out = []
    for job in index.query("SELECT * FROM retrievals ORDER BY id"):
        job = dict(job)
        counts = {s: n for s, n in index.query(
            "SELECT state, COUNT(*) FROM retrieval_series WHERE job_fk=? GROUP BY state",
            (job["id"],))}
        moved = index.query("SELECT COALESCE(SUM(completed),0), COALESCE(SUM(failed),0),"
                            " COALESCE(SUM(warning),0) FROM retrieval_series WHERE job_fk=?",
                            (job["id"],))[0]
        state = job["state"]
        if state == "running" and not (job["pid"] and pid_alive(job["pid"])):
            state = "interrupted"
        out.append({"id": job["id"], "remote": job["remote"], "state": state,
                    "selectors": json.loads(job["selectors"]),
                    "series": {s: counts.get(s, 0) for s in
                               ("pending", "moving", "done", "skipped", "failed")},
                    "completed": moved[0], "failed": moved[1], "warning": moved[2],
                    "created_at": job["created_at"], "updated_at": job["updated_at"],
                    "finished_at": job["finished_at"] or None, "error": job["error"]})
    return out
