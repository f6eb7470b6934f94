"""Deleting what rtnode holds — a course, a study, a series or a patient — coherently.

One plan says everything a deletion will touch: the instances (files and index rows), the
courses that lose a member (their rows, revisions, stage runs and output folders go too, so no
course points at files that are gone), and the auto RTSTRUCTs rtnode filed for those courses.
``rtnode delete`` prints the plan (a dry run) and carries it out only with ``--yes``; retention
builds the same plans with ``keep_outputs`` (received instances go, course rows and outputs
stay).

Order of work: the index rows go in one transaction, which first checks that no stage of an
affected course is queued or running (inside the write lock, so the scheduler cannot dispatch
one in between), and records a ``deleted`` audit event; the files go after the commit. A crash
in between leaves unreferenced files, never rows pointing at missing files.

The SQL is plain and parameterised (``?``), run through the Index's connection API, so that
another index backend adapts it in this one place.
"""

from __future__ import annotations

import getpass
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rtnode.store.index import Index, utc_now

log = logging.getLogger("rtnode.delete")

#: largest IN (...) list per statement (SQLite's default variable limit is 999 on old builds)
CHUNK = 500
#: stage run states that block a deletion
BUSY = ("queued", "running")
#: the origin of instances rtnode made itself (the auto RTSTRUCT)
DERIVED = "derived"

AUTO_RTSTRUCT = "rtstruct_auto.dcm"


class DeleteRefused(RuntimeError):
    """The selection is unknown, or a course it touches has a stage queued or running."""


@dataclass
class DeletionPlan:
    """What one deletion removes. ``keep_outputs``: course rows and outputs stay (retention)."""

    what: str
    instances: list[dict[str, Any]] = field(default_factory=list)  # id, sop, path, size, series
    courses: list[int] = field(default_factory=list)
    output_dirs: list[Path] = field(default_factory=list)
    keep_outputs: bool = False
    regroup: list[str] = field(default_factory=list)  # patients whose remaining data regroups

    @property
    def bytes(self) -> int:
        return sum(int(i["size"] or 0) for i in self.instances)

    @property
    def empty(self) -> bool:
        return not self.instances and (self.keep_outputs or not self.courses)

    def as_json(self) -> dict[str, Any]:
        modalities: dict[str, int] = {}
        for i in self.instances:
            modalities[i["modality"]] = modalities.get(i["modality"], 0) + 1
        return {"what": self.what, "instances": len(self.instances), "bytes": self.bytes,
                "modalities": modalities, "courses": self.courses,
                "output_dirs": [] if self.keep_outputs else [str(d) for d in self.output_dirs],
                "keep_outputs": self.keep_outputs}


def _chunks(items: list, n: int = CHUNK) -> Iterable[list]:
    for start in range(0, len(items), n):
        yield items[start:start + n]


def _marks(n: int) -> str:
    return ",".join("?" * n)


INSTANCE_COLUMNS = ("SELECT i.id, i.sop_instance_uid, i.path, i.size, i.series_fk, i.modality,"
                    " i.origin FROM instances i")


class Deleter:
    """Plans and carries out deletions on one storage root."""

    def __init__(self, index: Index, storage_root: Path):
        self.index = index
        self.root = Path(storage_root)

    # -- what a selection covers ---------------------------------------------------------------

    def _instances_by_uid(self, uids: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(sorted(set(uids))):
            rows += [dict(r) for r in self.index.query(
                f"{INSTANCE_COLUMNS} WHERE i.sop_instance_uid IN ({_marks(len(chunk))})",
                tuple(chunk))]
        return rows

    def course_members(self, course_id: int) -> list[str]:
        """SOP Instance UIDs of a course: its current members and every revision's."""
        uids: set[str] = set()
        for r in self.index.query("SELECT members FROM courses WHERE id=?", (course_id,)):
            uids |= {m["sop_instance_uid"] for m in json.loads(r[0] or "[]")}
        for r in self.index.query("SELECT members FROM revisions WHERE course_fk=?",
                                  (course_id,)):
            uids |= {m["sop_instance_uid"] for m in json.loads(r[0] or "[]")}
        return sorted(uids)

    def course_folder(self, course_id: int) -> Path:
        return self.root / "courses" / str(course_id)

    def derived_of(self, course_id: int) -> list[str]:
        """SOP Instance UIDs of the auto RTSTRUCTs filed for this course: derived instances
        referencing its planning CT series, and those named by its output files."""
        import pydicom

        uids = [r[0] for r in self.index.query(
            "SELECT i.sop_instance_uid FROM instances i JOIN instance_refs r"
            " ON r.instance_fk = i.id JOIN courses c ON r.uid = c.anchor_series_uid"
            " WHERE c.id = ? AND c.anchor_series_uid != '' AND i.origin = ?",
            (course_id, DERIVED))]  # also those of reruns whose output file was replaced
        for path in sorted(self.course_folder(course_id).glob(f"r*/{AUTO_RTSTRUCT}")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=["SOPInstanceUID"])
                uids.append(str(ds.SOPInstanceUID))
            except Exception:  # an unreadable output names nothing to delete
                log.warning("cannot read %s; its archived copy (if any) stays", path)
        return sorted(set(uids))

    def _courses_touching(self, patient_ids: Iterable[str], uids: set[str]) -> list[int]:
        found = []
        for pid in sorted(set(patient_ids)):
            for row in self.index.query("SELECT id, members FROM courses WHERE patient_id=?",
                                        (pid,)):
                if {m["sop_instance_uid"] for m in json.loads(row[1] or "[]")} & uids:
                    found.append(row[0])
        return found

    def _with_courses(self, what: str, instances: list[dict[str, Any]],
                      patient_ids: Iterable[str]) -> DeletionPlan:
        """The selected instances, plus every course that has one of them as a member: its
        revisions, stage runs, outputs and auto RTSTRUCTs go (they describe data no longer
        held). The course's other members stay and are grouped into a course again (and run
        again) by the course detector."""
        uids = {i["sop_instance_uid"] for i in instances}
        courses = self._courses_touching(patient_ids, uids)
        extra: list[str] = []
        for c in courses:
            extra += self.derived_of(c)
        instances = instances + [i for i in self._instances_by_uid(extra)
                                 if i["sop_instance_uid"] not in uids]
        return DeletionPlan(what, instances, courses,
                            [self.course_folder(c) for c in courses
                             if self.course_folder(c).exists()],
                            regroup=sorted(set(patient_ids)) if courses else [])

    def plan_course(self, course_id: int, keep_outputs: bool = False) -> DeletionPlan:
        rows = self.index.query("SELECT id, patient_id FROM courses WHERE id=?", (course_id,))
        if not rows:
            raise DeleteRefused(f"no course {course_id} (see rtnode courses)")
        if keep_outputs:
            members = [i for i in self._instances_by_uid(self.course_members(course_id))
                       if i["origin"] != DERIVED]
            return DeletionPlan(f"course {course_id} (received instances)", members,
                                [course_id], [], keep_outputs=True)
        instances = self._instances_by_uid(self.course_members(course_id)
                                           + self.derived_of(course_id))
        folder = self.course_folder(course_id)
        return DeletionPlan(f"course {course_id}", instances, [course_id],
                            [folder] if folder.exists() else [])

    def plan_study(self, study_uid: str) -> DeletionPlan:
        rows = [dict(r) for r in self.index.query(
            f"{INSTANCE_COLUMNS} JOIN series se ON i.series_fk = se.id"
            " JOIN studies st ON se.study_fk = st.id WHERE st.study_uid = ?", (study_uid,))]
        pids = [r[0] for r in self.index.query(
            "SELECT p.patient_id FROM studies st JOIN patients p ON st.patient_fk = p.id"
            " WHERE st.study_uid = ?", (study_uid,))]
        if not pids:
            raise DeleteRefused(f"no study {study_uid} (see rtnode studies)")
        return self._with_courses(f"study {study_uid}", rows, pids)

    def plan_series(self, series_uid: str) -> DeletionPlan:
        rows = [dict(r) for r in self.index.query(
            f"{INSTANCE_COLUMNS} JOIN series se ON i.series_fk = se.id WHERE se.series_uid = ?",
            (series_uid,))]
        pids = [r[0] for r in self.index.query(
            "SELECT p.patient_id FROM series se JOIN studies st ON se.study_fk = st.id"
            " JOIN patients p ON st.patient_fk = p.id WHERE se.series_uid = ?", (series_uid,))]
        if not pids:
            raise DeleteRefused(f"no series {series_uid} (see rtnode series)")
        return self._with_courses(f"series {series_uid}", rows, pids)

    def plan_patient(self, patient_id: str) -> DeletionPlan:
        rows = [dict(r) for r in self.index.query(
            f"{INSTANCE_COLUMNS} JOIN series se ON i.series_fk = se.id"
            " JOIN studies st ON se.study_fk = st.id JOIN patients p ON st.patient_fk = p.id"
            " WHERE p.patient_id = ?", (patient_id,))]
        courses = [r[0] for r in self.index.query(
            "SELECT id FROM courses WHERE patient_id=? ORDER BY id", (patient_id,))]
        if not rows and not courses:
            raise DeleteRefused(f"no patient {patient_id!r} (see rtnode studies)")
        plan = self._with_courses(f"patient {patient_id}", rows, [patient_id])
        plan.regroup = []  # nothing of the patient is left to regroup: rows go entirely
        for c in courses:  # courses whose members are already gone (retention) go too
            if c not in plan.courses:
                plan.courses.append(c)
                if self.course_folder(c).exists():
                    plan.output_dirs.append(self.course_folder(c))
        return plan

    # -- carrying it out -----------------------------------------------------------------------

    def busy_courses(self, course_ids: list[int]) -> list[int]:
        """Courses with a stage run queued or running (read outside any transaction)."""
        busy = []
        for chunk in _chunks(course_ids):
            busy += [r[0] for r in self.index.query(
                f"SELECT DISTINCT course_fk FROM stage_runs WHERE course_fk IN"
                f" ({_marks(len(chunk))}) AND state IN ({_marks(len(BUSY))})",
                (*chunk, *BUSY))]
        return sorted(busy)

    def execute(self, plan: DeletionPlan, by: str = "cli") -> dict[str, Any]:
        """Remove the rows (one transaction, refused if a course is busy), then the files."""
        ids = [i["id"] for i in plan.instances]
        series = sorted({i["series_fk"] for i in plan.instances})
        summary = plan.as_json()
        summary.update(by=by, user=_user())
        with self.index.transaction() as c:
            for chunk in _chunks(plan.courses):
                busy = c.execute(
                    f"SELECT DISTINCT course_fk FROM stage_runs WHERE course_fk IN"
                    f" ({_marks(len(chunk))}) AND state IN ({_marks(len(BUSY))})",
                    (*chunk, *BUSY)).fetchall()
                if busy:
                    raise DeleteRefused(
                        "a stage of course " + ", ".join(str(r[0]) for r in busy) + " is queued "
                        "or running; wait for it (or `rtnode cancel` it) and try again")
            for chunk in _chunks(ids):
                c.execute(f"DELETE FROM instance_refs WHERE instance_fk IN ({_marks(len(chunk))})",
                          tuple(chunk))
                c.execute(f"DELETE FROM instances WHERE id IN ({_marks(len(chunk))})",
                          tuple(chunk))
            if not plan.keep_outputs:
                for chunk in _chunks(plan.courses):
                    m = _marks(len(chunk))
                    c.execute(f"DELETE FROM stage_runs WHERE course_fk IN ({m})", tuple(chunk))
                    c.execute(f"DELETE FROM revisions WHERE course_fk IN ({m})", tuple(chunk))
                    if plan.regroup:
                        # An empty shell in 'waiting': the course detector looks at its patient
                        # again, groups what is left into a course (reusing the row when the
                        # planning CT is still there) and drops the shell otherwise.
                        c.execute("UPDATE courses SET state='waiting', members='[]',"
                                  " verdict='{}', instance_count=0, cancelled=0, updated_at=?"
                                  f" WHERE id IN ({m})", (utc_now(), *chunk))
                    else:
                        c.execute(f"DELETE FROM courses WHERE id IN ({m})", tuple(chunk))
            self._drop_empty_parents(c, series)
            c.execute("INSERT INTO events(at, kind, calling_ae, detail) VALUES (?, ?, ?, ?)",
                      (utc_now(), "deleted", by, json.dumps(summary)))
        # This process's index remembers hierarchy rows it wrote; some may be gone now.
        cache = getattr(self.index, "_hierarchy", None)
        if isinstance(cache, dict):
            cache.clear()
        missing = 0
        for i in plan.instances:
            path = self.root / i["path"]
            try:
                path.unlink()
            except FileNotFoundError:
                missing += 1
            except OSError as exc:
                log.error("deleted %s from the index but cannot remove %s: %s",
                          i["sop_instance_uid"], path, exc)
            else:
                _prune_empty(path.parent, self.root / "dicom")
        if not plan.keep_outputs:
            for folder in plan.output_dirs:
                shutil.rmtree(folder, ignore_errors=True)
        summary["files_already_missing"] = missing
        log.info("deleted %s (by %s): %d instance(s), %.1f MB, course(s) %s%s", plan.what, by,
                 len(plan.instances), plan.bytes / 1024**2,
                 ", ".join(map(str, plan.courses)) or "none",
                 " (outputs kept)" if plan.keep_outputs else "")
        return summary

    @staticmethod
    def _drop_empty_parents(c, series_ids: list[int]) -> None:
        """Series, studies and patients left without instances go with them."""
        studies: set[int] = set()
        for chunk in _chunks(series_ids):
            studies |= {r[0] for r in c.execute(
                f"SELECT study_fk FROM series WHERE id IN ({_marks(len(chunk))})",
                tuple(chunk)).fetchall()}
            c.execute(f"DELETE FROM series WHERE id IN ({_marks(len(chunk))}) AND NOT EXISTS"
                      " (SELECT 1 FROM instances i WHERE i.series_fk = series.id)", tuple(chunk))
        patients: set[int] = set()
        for chunk in _chunks(sorted(studies)):
            patients |= {r[0] for r in c.execute(
                f"SELECT patient_fk FROM studies WHERE id IN ({_marks(len(chunk))})",
                tuple(chunk)).fetchall()}
            c.execute(f"DELETE FROM studies WHERE id IN ({_marks(len(chunk))}) AND NOT EXISTS"
                      " (SELECT 1 FROM series se WHERE se.study_fk = studies.id)", tuple(chunk))
        for chunk in _chunks(sorted(patients)):
            c.execute(f"DELETE FROM patients WHERE id IN ({_marks(len(chunk))}) AND NOT EXISTS"
                      " (SELECT 1 FROM studies st WHERE st.patient_fk = patients.id)",
                      tuple(chunk))


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove now-empty series/study folders up to (not including) dicom/."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""
