"""What the node shows and what an operator may do to it: one service layer for the CLI and
the web.

``rtnode ... --json`` and the REST API under /api/v1 both build their answers here, so they give
the same keys (documented in docs/API.md). Admin actions (requeue, cancel, send, pause) live
here too, raising :class:`ViewError` with a sentence a person can act on; the CLI prints it and
exits, the API answers it with a 4xx status.

Data is read through :class:`~rtnode.store.index.Index` and
:class:`~rtnode.courses.book.CourseBook` methods only.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from typing import Any

from rtnode import __version__
from rtnode.config import Config

QUEUE_NAMES = ("gpu", "cpu")


class ViewError(ValueError):
    """A request that cannot be done as asked; the message says why and what to do."""

    status = 400


class NotFound(ViewError):
    status = 404


class Conflict(ViewError):
    status = 409


class SendError(Conflict):
    """The destination refused or could not be reached (after the configured retries)."""

    status = 502


# -- opening the index -------------------------------------------------------------------------

def open_index(cfg: Config):
    """The node's index, or None when nothing was ever received (no index file yet)."""
    from rtnode.store.index import index_exists
    from rtnode.store.index import open_index as _open

    if not index_exists(cfg):
        return None
    return _open(cfg)


def registered_workers(cfg: Config, index=None) -> list[dict[str, Any]]:
    """Every worker in the registry (any host), with its slots and last heartbeat."""
    from rtnode.queue.registry import Registry

    own = index is None
    index = index or open_index(cfg)
    if index is None:
        return []
    try:
        return [{k: w[k] for k in ("id", "host", "pid", "queue", "slots", "device",
                                   "started_at", "heartbeat_at", "age_s", "live")}
                for w in Registry(index, cfg.workers.heartbeat_timeout).workers()]
    finally:
        if own:
            index.close()


def open_book(cfg: Config):
    """A CourseBook on the node's index; NotFound when there is no index yet."""
    from rtnode.courses.book import CourseBook

    index = open_index(cfg)
    if index is None:
        raise NotFound(f"no index under {cfg.storage_root}: nothing received yet")
    return CourseBook(index)


# -- node --------------------------------------------------------------------------------------

def node_status(cfg: Config, index=None) -> dict[str, Any]:
    """The data behind ``rtnode status``; the keys are the documented JSON keys.

    ``index``: an open index to read (the web server keeps one); default opens and closes one."""
    from rtnode.courses.book import CourseBook
    from rtnode.node_info import node_is_up, pid_alive, read_node_info
    from rtnode.store.retention import status as retention_status

    root = cfg.storage_root
    info = read_node_info(root)
    up = node_is_up(info)
    own = index is None
    if own:
        index = open_index(cfg)
    counts = {"patients": 0, "studies": 0, "series": 0, "instances": 0, "derived": 0}
    events: dict[str, int] = {}
    last = None
    courses: dict[str, int] = {}
    queues: dict[str, dict[str, int]] = {}
    paused: set[str] = set()
    registry: list[dict[str, Any]] = []
    if index is not None:
        from rtnode.store.derived import held_counts

        counts, events, last = held_counts(index), index.event_counts(), index.last_received()
        book = CourseBook(index)
        courses, queues, paused = book.course_counts(), book.queue_depths(), book.paused()
        registry = registered_workers(cfg, index)
    retention = retention_status(cfg, index)
    if index is not None and own:
        index.close()
    workers = [{**w, "alive": up and bool(w.get("pid")) and pid_alive(w["pid"])}
               for w in (info.workers if info else [])]
    probe = root if root.exists() else root.parent
    free_gb = shutil.disk_usage(probe).free / 1024**3 if probe.exists() else None
    return {
        "version": __version__,
        "node": {
            "up": up,
            "pid": info.pid if info and up else None,
            "ae_title": info.ae_title if info and up else cfg.dicom.ae_title,
            "port": info.port if info and up else cfg.dicom.port,
            "started_at": info.started_at if info and up else None,
        },
        "counts": counts,
        "events": {k: events.get(k, 0) for k in ("received", "duplicate", "replaced",
                                                  "rejected", "association_rejected")},
        "last_received": last,
        "courses": courses,
        "queues": {q: {**{"pending": 0, "queued": 0, "running": 0}, **queues.get(q, {}),
                       "paused": q in paused} for q in QUEUE_NAMES},
        "workers": workers if up else [],
        "registry": registry,
        "storage": {"root": str(root), "free_gb": None if free_gb is None else round(free_gb, 2),
                    "min_free_gb": cfg.storage.min_free_gb},
        "retention": retention,
        "config": str(cfg.source) if cfg.source else None,
    }


# -- courses -----------------------------------------------------------------------------------

STAGE_KEYS = ("stage", "part", "queue", "state", "reason", "attempts", "footprint",
              "reused_revision", "queued_at", "started_at", "finished_at")


def course_or_error(book, course_id: int) -> dict[str, Any]:
    row = book.course(course_id)
    if row is None:
        raise NotFound(f"no course {course_id} (see rtnode courses)")
    return row


def course_json(book, row: dict[str, Any], cfg: Config, detail: bool = False) -> dict[str, Any]:
    """A course as the documented --json object."""
    latest = book.latest_revision(row["id"])
    revision = latest["revision"] if latest else 0
    verdict = json.loads(row["verdict"] or "{}")
    runs = book.runs(row["id"]) if latest else []
    out: dict[str, Any] = {
        "id": row["id"], "patient_id": row["patient_id"], "revision": revision,
        "state": row["state"], "tag": row["tag"], "rule": row["rule"],
        "calling_ae": row["calling_ae"], "instance_count": row["instance_count"],
        "complete": bool(verdict.get("complete")), "missing": verdict.get("missing", []),
        "possibly_incomplete": verdict.get("possibly_incomplete", []),
        "last_received_at": row["last_received_at"],
        "stages": [{k: r[k] for k in STAGE_KEYS} for r in runs],
        "output_dir": str(cfg.storage_root / "courses" / str(row["id"]) / f"r{revision}")
        if revision else None,
    }
    if detail:
        members = json.loads(row["members"] or "[]")
        out["objects"] = [{k: m[k] for k in ("modality", "sop_instance_uid", "series_uid",
                                            "received_at", "path")} for m in members]
        out["revisions"] = book.revisions_summary(row["id"])
        out["dose_plan"] = dose_plan_words(cfg, row["id"], latest, runs)
    return out


def dose_plan_words(cfg: Config, course_id: int, latest: dict[str, Any] | None,
                     runs: list) -> str | None:
    """The dose plan in words: the dvh stage's dose_plan.json (decided from the files), else
    the revision's plan (decided when the course was built)."""
    if latest is None:
        return None
    dvh = next((r for r in runs if r["stage"] == "dvh" and not r["part"]), None)
    rev = (dvh["reused_revision"] or latest["revision"]) if dvh is not None else None
    path = cfg.storage_root / "courses" / str(course_id) / f"r{rev}" / "dose_plan.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["words"]
    except (OSError, ValueError, KeyError, TypeError):
        dose = json.loads(latest.get("plan") or "{}").get("dose") or {}
        return dose.get("words")



def courses_json(book, cfg: Config, state: str | None = None,
                 patient_id: str | None = None) -> list[dict[str, Any]]:
    """``rtnode courses --json``."""
    return [course_json(book, r, cfg) for r in book.courses(state=state, patient_id=patient_id)]


def stages_json(cfg: Config) -> list[dict[str, Any]]:
    """``rtnode stages --json``: the stages this installation can run."""
    from rtnode.stages.base import load_stages, stage_timeout

    return [{"name": s.name, "queue": s.queue, "needs": list(s.needs), "after": list(s.after),
             "uses": list(s.uses), "writes": list(s.writes), "timeout_s": stage_timeout(s, cfg),
             "description": s.description}
            for s in load_stages(cfg.stages.plugins).values()]


def listing(cfg: Config, kind: str, index=None, **filters) -> list[dict[str, Any]]:
    """``rtnode studies|series|instances --json`` (``index``: an open one to read)."""
    if kind not in ("studies", "series", "instances"):
        raise NotFound(f"no listing {kind!r}")
    own = index is None
    index = open_index(cfg) if own else index
    if index is None:
        return []
    try:
        return getattr(index, kind)(**filters)
    finally:
        if own:
            index.close()


def retrievals_json(cfg: Config, index=None) -> list[dict[str, Any]]:
    """``rtnode retrievals --json``."""
    from rtnode.cohorts.retrieve import list_jobs

    own = index is None
    index = open_index(cfg) if own else index
    if index is None:
        return []
    try:
        return list_jobs(index)
    finally:
        if own:
            index.close()


# -- actions -----------------------------------------------------------------------------------

def wake_node(cfg: Config) -> None:
    """Tell a running node that runs became pending, so it dispatches them now rather than at
    its next fallback poll (best effort: nothing happens when no node listens)."""
    from rtnode.queue.wake import WakeSender

    WakeSender(cfg.storage_root).notify()


def requeue(book, course_id: int, stage: str | None = None,
            from_stage: str | None = None) -> int:
    """Back to pending: every stage run of the latest revision, one stage (and the runs it
    had blocked), or one stage and every later one. Returns how many runs moved."""
    course_or_error(book, course_id)
    runs = book.runs(course_id)
    if not runs:
        raise Conflict(f"course {course_id} has not run yet: nothing to requeue")
    names = [r["stage"] for r in runs if not r["part"]]
    for opt, value in (("--stage", stage), ("--from-stage", from_stage)):
        if value is not None and value not in names:
            raise ViewError(f"{opt} {value!r}: course {course_id} has stages {', '.join(names)}")
    if stage and from_stage:
        raise ViewError("give --stage or --from-stage, not both")
    if stage:
        selected = [stage] + [r["stage"] for r in runs
                              if r["state"] == "skipped" and r["reason"].startswith("upstream ")]
    elif from_stage:
        selected = names[names.index(from_stage):]
    else:
        selected = None
    return book.requeue(course_id, selected)


def requeue_failed(book, since: str | None = None) -> tuple[int, int]:
    """Every failed stage run (at or after ``since``, YYYY-MM-DD) back to pending; returns
    (runs, courses)."""
    try:
        if since:
            dt.date.fromisoformat(since)
    except ValueError:
        raise ViewError(f"--since {since!r}: use YYYY-MM-DD") from None
    ids = book.failed_course_ids(since or "")
    return sum(book.requeue(c, only_failed=True) for c in ids), len(ids)


def cancel(book, course_id: int) -> int:
    """Dispatch nothing more for a course; returns how many waiting runs were dropped."""
    course_or_error(book, course_id)
    return book.cancel(course_id)


def set_paused(book, queue: str | None, paused: bool) -> list[str]:
    """Hold (or release) one queue, or both when ``queue`` is None; returns the queues."""
    if queue not in (None, *QUEUE_NAMES):
        raise ViewError(f"queue must be gpu or cpu, not {queue!r}")
    names = [queue] if queue else list(QUEUE_NAMES)
    for q in names:
        book.set_paused(q, paused)
    return names


def send_course(cfg: Config, book, course_id: int, to: str | None = None) -> list[dict]:
    """C-STORE a course's auto-contoured RTSTRUCT now; returns one report per destination.
    Sending to the course's own destinations marks a failed or skipped send stage done."""
    from rtnode.courses.book import DONE, FAILED, SKIPPED
    from rtnode.stages.rtstruct import RTSTRUCT_AUTO
    from rtnode.stages.runner import course_dir
    from rtnode.stages.send import SendFailed, destinations_for, send_to

    row = course_or_error(book, course_id)
    runs = {r["stage"]: r for r in book.runs(course_id) if not r["part"]}
    made = runs.get("rtstruct")
    if made is None or made["state"] not in (DONE, SKIPPED):
        raise Conflict(f"course {course_id} has no auto-contoured RTSTRUCT yet")
    rtstruct = course_dir(cfg.storage_root, course_id,
                          made["reused_revision"] or made["revision"]) / RTSTRUCT_AUTO
    if not rtstruct.exists():
        raise Conflict(f"course {course_id}: {rtstruct} does not exist")
    latest = book.latest_revision(course_id)
    if to and to not in cfg.destinations:
        raise ViewError(f"--to {to!r}: not in the config's destinations "
                        f"({', '.join(sorted(cfg.destinations)) or 'none'})")
    try:
        names = [to] if to else destinations_for(cfg, json.loads(latest["plan"]),
                                                 row["calling_ae"])
    except ValueError as exc:
        raise ViewError(str(exc)) from None
    if not names:
        raise ViewError(f"no destination for course {course_id}: give --to NAME")
    try:
        reports = send_to(cfg, [rtstruct], names)
    except SendFailed as exc:
        raise SendError(f"send failed: {exc}") from None
    send_run = runs.get("send")
    if to is None and send_run is not None and send_run["state"] in (FAILED, SKIPPED):
        book.transition(send_run["id"], DONE, expect=[FAILED, SKIPPED],
                        reason="sent by rtnode send")
        book.set_state(course_id, "running")  # the scheduler settles it to done/failed
    for r in reports:
        r.setdefault("file", rtstruct.name)
    return reports


# -- configuration and rules -------------------------------------------------------------------

#: config keys whose values are never shown outside the config file
SECRET_KEYS = ("token", "password", "secret")


def _hide(data: Any, key: str = "") -> Any:
    import re

    if isinstance(data, dict):
        return {k: _hide(v, str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_hide(v, key) for v in data]
    if data is not None and any(s in key.lower() for s in SECRET_KEYS):
        return "(hidden)"
    if isinstance(data, str) and "://" in data:
        return re.sub(r"://[^/@\s]*@", "://(hidden)@", data)  # credentials in a URL
    return data


def effective_config(cfg: Config, hide_secrets: bool = True) -> dict[str, Any]:
    """The configuration in effect (file + environment + defaults): what ``rtnode config show``
    prints; secrets (tokens, passwords, credentials in URLs) hidden unless asked."""
    data = cfg.model_dump(mode="json")
    data["storage"]["root"] = str(cfg.storage_root)
    return _hide(data) if hide_secrets else data


def rules_json(cfg: Config) -> list[dict[str, Any]]:
    """The routing rules in force, in matching order, each with the file:line it came from."""
    from rtnode.courses.rules import RulesError, load_rules
    from rtnode.stages.base import load_stages

    try:
        rules = load_rules(cfg.rules_dir, load_stages(cfg.stages.plugins))
    except RulesError as exc:
        raise Conflict("rules error: " + "; ".join(exc.problems)) from None
    out = []
    for rule, source in zip(rules.rules, rules.sources):
        data = rule.model_dump(mode="json")
        data["match"] = {k: v for k, v in data["match"].items() if v not in (None, [], "")}
        out.append({"source": source, **data})
    return out
