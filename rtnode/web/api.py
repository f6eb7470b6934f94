"""The REST API under /api/v1: every ``--json`` listing of the CLI with the same keys (both come
from rtnode.views), the admin actions, course downloads. Documented in docs/API.md; the
OpenAPI schema is at /api/v1/openapi.json and rendered at /api/v1/docs."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from rtnode import views
from rtnode.web import outputs
from rtnode.web.context import WebContext, web_context


def api_reader(request: Request) -> WebContext:
    ctx = web_context(request)
    ctx.auth.reader(request, page=False)
    return ctx


def api_writer(request: Request) -> WebContext:
    ctx = web_context(request)
    ctx.auth.writer(request, page=False)
    return ctx


router = APIRouter(prefix="/api/v1")
Reader = Depends(api_reader)
Writer = Depends(api_writer)


class RequeueBody(BaseModel):
    stage: Optional[str] = None
    from_stage: Optional[str] = None


class RequeueFailedBody(BaseModel):
    since: Optional[str] = None


class SendBody(BaseModel):
    to: Optional[str] = None


# -- listings (the CLI's --json) ---------------------------------------------------------------

@router.get("/status", tags=["node"], summary="rtnode status --json")
def status(ctx: WebContext = Reader) -> dict[str, Any]:
    """Node up/down, counts, events, last received, queues, workers, disk."""
    return views.node_status(ctx.cfg, ctx.index())


@router.get("/studies", tags=["index"], summary="rtnode studies --json")
def studies(patient_id: Optional[str] = None, ctx: WebContext = Reader) -> list[dict]:
    return views.listing(ctx.cfg, "studies", ctx.index(), patient_id=patient_id) \
        if ctx.index() else []


@router.get("/series", tags=["index"], summary="rtnode series --json")
def series(patient_id: Optional[str] = None, study_uid: Optional[str] = None,
           ctx: WebContext = Reader) -> list[dict]:
    return views.listing(ctx.cfg, "series", ctx.index(), patient_id=patient_id,
                         study_uid=study_uid) if ctx.index() else []


@router.get("/instances", tags=["index"], summary="rtnode instances --json")
def instances(patient_id: Optional[str] = None, study_uid: Optional[str] = None,
              series_uid: Optional[str] = None, ctx: WebContext = Reader) -> list[dict]:
    return views.listing(ctx.cfg, "instances", ctx.index(), patient_id=patient_id,
                         study_uid=study_uid, series_uid=series_uid) if ctx.index() else []


@router.get("/courses", tags=["courses"], summary="rtnode courses --json")
def courses(state: Optional[str] = None, patient_id: Optional[str] = None,
            ctx: WebContext = Reader) -> list[dict]:
    if ctx.index() is None:
        return []
    return views.courses_json(ctx.book(), ctx.cfg, state=state, patient_id=patient_id)


@router.get("/courses/{course_id}", tags=["courses"], summary="rtnode course show ID --json")
def course(course_id: int, ctx: WebContext = Reader) -> dict:
    book = ctx.book()
    return views.course_json(book, views.course_or_error(book, course_id), ctx.cfg, detail=True)


@router.get("/courses/{course_id}/files", tags=["courses"],
            summary="the latest revision's output files")
def course_files(course_id: int, ctx: WebContext = Reader) -> list[dict]:
    return outputs.files_json(ctx.cfg, ctx.book(), course_id)


@router.get("/courses/{course_id}/files/{name:path}", tags=["courses"],
            summary="download one output file (report.html, dvh_metrics.csv, ...)",
            response_class=FileResponse)
def course_file(course_id: int, name: str, ctx: WebContext = Reader):
    return outputs.file_response(outputs.resolve_download(ctx.cfg, ctx.book(), course_id, name))


@router.get("/courses/{course_id}/dvh", tags=["courses"],
            summary="dvh_metrics.csv as JSON rows (columns as in the file)")
def course_dvh(course_id: int, ctx: WebContext = Reader) -> dict:
    files = outputs.course_files(ctx.cfg, ctx.book(), course_id)
    columns, rows = outputs.dvh_metrics(files.get("dvh_metrics.csv"))
    return {"columns": columns, "rows": rows}


@router.get("/stages", tags=["node"], summary="rtnode stages --json")
def stages(ctx: WebContext = Reader) -> list[dict]:
    return views.stages_json(ctx.cfg)


@router.get("/retrievals", tags=["cohorts"], summary="rtnode retrievals --json")
def retrievals(ctx: WebContext = Reader) -> list[dict]:
    return views.retrievals_json(ctx.cfg, ctx.index()) if ctx.index() else []


@router.get("/events", tags=["node"], summary="recent events (rejections, stage transitions)")
def events(kind: Optional[str] = None, limit: int = 100, ctx: WebContext = Reader) -> list[dict]:
    index = ctx.index()
    return index.events(kind=kind, limit=max(1, min(limit, 1000))) if index else []


@router.get("/failures", tags=["courses"], summary="the newest failed stage runs")
def failures(limit: int = 20, ctx: WebContext = Reader) -> list[dict]:
    return ctx.book().recent_failures(max(1, min(limit, 1000))) if ctx.index() else []


@router.get("/rules", tags=["config"], summary="the routing rules in force")
def rules(ctx: WebContext = Reader) -> list[dict]:
    return views.rules_json(ctx.cfg)


@router.get("/config", tags=["config"], summary="rtnode config show (secrets hidden)")
def config(ctx: WebContext = Reader) -> dict:
    return views.effective_config(ctx.cfg)


# -- actions -----------------------------------------------------------------------------------

@router.post("/courses/{course_id}/requeue", tags=["actions"],
             summary="rtnode requeue ID [--stage S | --from-stage S]")
def requeue(course_id: int, body: RequeueBody = Body(default_factory=RequeueBody),
            ctx: WebContext = Writer) -> dict:
    n = views.requeue(ctx.book(), course_id, body.stage, body.from_stage)
    views.wake_node(ctx.cfg)
    return {"course_id": course_id, "requeued": n}


@router.post("/requeue-failed", tags=["actions"], summary="rtnode requeue --failed [--since]")
def requeue_failed(body: RequeueFailedBody = Body(default_factory=RequeueFailedBody),
                   ctx: WebContext = Writer) -> dict:
    n, n_courses = views.requeue_failed(ctx.book(), body.since)
    views.wake_node(ctx.cfg)
    return {"requeued": n, "courses": n_courses}


@router.post("/courses/{course_id}/cancel", tags=["actions"], summary="rtnode cancel ID")
def cancel(course_id: int, ctx: WebContext = Writer) -> dict:
    return {"course_id": course_id, "cancelled": views.cancel(ctx.book(), course_id)}


@router.post("/courses/{course_id}/send", tags=["actions"], summary="rtnode send ID [--to NAME]")
def send(course_id: int, body: SendBody = Body(default_factory=SendBody),
         ctx: WebContext = Writer) -> dict:
    return {"course_id": course_id,
            "sent": views.send_course(ctx.cfg, ctx.book(), course_id, body.to)}


@router.post("/queues/{queue}/pause", tags=["actions"], summary="rtnode queue pause QUEUE")
def pause(queue: str, ctx: WebContext = Writer) -> dict:
    return {"queues": views.set_paused(ctx.book(), queue, True), "paused": True}


@router.post("/queues/{queue}/resume", tags=["actions"], summary="rtnode queue resume QUEUE")
def resume(queue: str, ctx: WebContext = Writer) -> dict:
    names = views.set_paused(ctx.book(), queue, False)
    views.wake_node(ctx.cfg)
    return {"queues": names, "paused": False}
