"""Executing one stage run inside a worker process: claim, run bounded, record the outcome.

A run is claimed only if it is still 'queued' with the token it was dispatched with, so a task
delivered twice (a requeue, a restarted consumer, a flushed queue) runs once. The stage runs under
a deadline (SIGALRM in the worker's main thread); a memory error is retried once with
``footprint='small'`` before the run fails with the reason. Tracebacks go to the revision's
logs/<stage>.log, the one-line reason to the index.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

from rtnode.config import Config, load_config
from rtnode.courses.book import DONE, FAILED, PENDING, QUEUED, RUNNING, SKIPPED, CourseBook
from rtnode.courses.grouping import Member
from rtnode.node_info import HOST
from rtnode.queue.registry import WORKER_ID_ENV
from rtnode.stages.base import (
    REGISTRY,
    StageContext,
    StageSkipped,
    load_stages,
    stage_timeout,
)
from rtnode.store.index import Index, open_index
from rtnode.limits import DeadlineExceeded, deadline, is_memory_error

log = logging.getLogger("rtnode.worker")

class WorkerState:
    """Per-process state, opened lazily after the consumer forks its workers."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.config: Config | None = None
        self.index: Index | None = None

    def get(self) -> tuple[Config, Index]:
        if self.pid != os.getpid() or self.config is None or self.index is None:
            self.pid = os.getpid()
            self.config = load_config(Path(os.environ["RTNODE_CONFIG"]))
            load_stages(self.config.stages.plugins)
            self.index = open_index(self.config)
        return self.config, self.index


STATE = WorkerState()


def course_dir(storage_root: Path, course_id: int, revision: int) -> Path:
    return storage_root / "courses" / str(course_id) / f"r{revision}"


def build_context(config: Config, book: CourseBook, run: dict[str, Any]) -> StageContext:
    rev = book.revision(run["course_fk"], run["revision"])
    course = book.course(run["course_fk"])
    assert rev is not None and course is not None
    root = config.storage_root
    upstream = {}
    for other in book.runs(run["course_fk"], run["revision"]):
        source = other["reused_revision"] or other["revision"]
        upstream[other["stage"]] = course_dir(root, run["course_fk"], source)
    return StageContext(
        course_id=run["course_fk"], patient_id=course["patient_id"], revision=run["revision"],
        members=[Member.from_json(m) for m in json.loads(rev["members"])],
        verdict=json.loads(rev["verdict"]), rule=json.loads(rev["plan"]), storage_root=root,
        out_dir=course_dir(root, run["course_fk"], run["revision"]), footprint=run["footprint"],
        part=run["part"], upstream=upstream, config=config)


def _log_failure(ctx: StageContext, stage: str, text: str) -> None:
    folder = ctx.out_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{stage}.log", "a", encoding="utf-8") as f:
        f.write(text + "\n")


def execute(run_id: int, token: str) -> str:
    """Run one claimed stage run to its end; returns the final state (or 'stale')."""
    config, index = STATE.get()
    book = CourseBook(index)
    run = book.run(run_id)
    # pending with its token: the message was taken before the scheduler marked it queued
    if run is None or run["state"] not in (PENDING, QUEUED) or not token or run["token"] != token:
        log.info("run %s: stale delivery ignored", run_id)
        return "stale"
    if not book.transition(run_id, RUNNING, expect=[PENDING, QUEUED], if_token=token,
                           worker_pid=os.getpid(), worker_host=HOST,
                           worker_id=os.environ.get(WORKER_ID_ENV, ""),
                           attempts=run["attempts"] + 1):
        return "stale"
    stage = REGISTRY.get(run["stage"])
    ctx = build_context(config, book, run)
    if stage is None:
        book.transition(run_id, FAILED, expect=[RUNNING], if_token=token,
                        reason=f"no stage named {run['stage']!r} in this worker")
        return FAILED
    seconds = stage_timeout(stage, config, run["part"])
    work = stage.run
    if stage.split is not None and not run["part"]:
        ctx.parts = book.parts_of(run)
        if not ctx.parts:
            return _split(book, run, token, stage, ctx, seconds)
        work = stage.merge or (lambda _ctx: None)
    footprint = run["footprint"]
    while True:
        ctx.footprint = footprint
        try:
            with deadline(seconds):
                work(ctx)
        except DeadlineExceeded as exc:
            reason = str(exc)
        except StageSkipped as exc:
            book.transition(run_id, SKIPPED, expect=[RUNNING], if_token=token, reason=str(exc))
            log.info("course %s r%s %s skipped: %s", run["course_fk"], run["revision"],
                     stage.name, exc)
            return SKIPPED
        except Exception as exc:  # a stage failure is recorded, never raised into Huey
            if is_memory_error(exc) and footprint == "normal":
                log.warning("run %s (%s): memory error, retrying with a smaller footprint: %s",
                            run_id, stage.name, exc)
                _log_failure(ctx, stage.name, traceback.format_exc())
                footprint = "small"
                continue
            _log_failure(ctx, stage.name, traceback.format_exc())
            reason = f"{type(exc).__name__}: {exc}"
            if is_memory_error(exc):
                reason = f"memory error even with a smaller footprint: {reason}"
        else:
            failed_parts = sum(p["state"] == FAILED for p in ctx.parts)
            note = f"{failed_parts} of {len(ctx.parts)} part(s) failed" if failed_parts else ""
            book.transition(run_id, DONE, expect=[RUNNING], if_token=token, footprint=footprint,
                            reason=note)
            log.info("course %s r%s %s%s done", run["course_fk"], run["revision"], stage.name,
                     f" [{run['part']}]" if run["part"] else "")
            return DONE
        book.transition(run_id, FAILED, expect=[RUNNING], if_token=token, reason=reason[:500],
                        footprint=footprint)
        log.warning("course %s r%s %s%s failed: %s", run["course_fk"], run["revision"],
                    stage.name, f" [{run['part']}]" if run["part"] else "", reason)
        return FAILED


def _split(book: CourseBook, run: dict[str, Any], token: str, stage, ctx: StageContext,
           seconds: float) -> str:
    """First pass of a fan-out stage: name the parts and hand them to the queue."""
    try:
        with deadline(seconds):
            parts = list(stage.split(ctx))
    except Exception as exc:
        _log_failure(ctx, stage.name, traceback.format_exc())
        book.transition(run["id"], FAILED, expect=[RUNNING], if_token=token,
                        reason=f"split: {type(exc).__name__}: {exc}"[:500])
        return FAILED
    if not parts:
        merge = stage.merge or (lambda _ctx: None)
        merge(ctx)
        book.transition(run["id"], DONE, expect=[RUNNING], if_token=token, reason="no parts")
        return DONE
    if len(set(parts)) != len(parts):
        book.transition(run["id"], FAILED, expect=[RUNNING], if_token=token,
                        reason="split named a part twice")
        return FAILED
    book.split(run, token, parts)
    log.info("course %s r%s %s split into %d part(s)", run["course_fk"], run["revision"],
             stage.name, len(parts))
    return "split"
