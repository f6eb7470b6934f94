"""The dashboard's HTML pages: server-rendered Jinja2, no JavaScript build step. Live parts
(queues, a course's stage timeline) are fragments that static/live.js refetches every few
seconds. Actions go through a confirmation page and a POST that needs a login."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from rtnode import __version__, views
from rtnode.courses.book import COURSE_STATES
from rtnode.web import outputs
from rtnode.web.auth import SESSION_COOKIE, SESSION_IDLE_S
from rtnode.web.context import WebContext, web_context

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)

FINAL_OK = ("done", "skipped")


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def human_seconds(s: float | None) -> str:
    if s is None:
        return ""
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


TEMPLATES.env.filters["duration"] = human_seconds
TEMPLATES.env.filters["time"] = lambda v: (v or "").replace("T", " ")[:19]


def render(request: Request, name: str, status_code: int = 200, **data: Any) -> HTMLResponse:
    ctx = web_context(request)
    data.setdefault("msg", request.query_params.get("msg", ""))
    return TEMPLATES.TemplateResponse(request, name, {
        "version": __version__, "auth": ctx.auth, "logged_in": ctx.auth.authenticated(request),
        "ae_title": ctx.cfg.dicom.ae_title, **data}, status_code=status_code)


def page_reader(request: Request) -> WebContext:
    ctx = web_context(request)
    ctx.auth.reader(request, page=True)
    return ctx


def page_writer(request: Request) -> WebContext:
    ctx = web_context(request)
    ctx.auth.writer(request, page=True)
    return ctx


# -- views of a course for people --------------------------------------------------------------

def verdict_words(course: dict[str, Any], verdict: dict[str, Any]) -> str:
    if course["revision"] == 0 and course["state"] in ("receiving", "waiting"):
        waiting = ("still receiving: the course is not quiet yet" if course["state"] == "receiving"
                   else "quiet but incomplete: waiting for the missing objects until "
                        "courses.max_wait_seconds")
        return waiting
    if verdict.get("complete"):
        spacing = verdict.get("slice_spacing_mm")
        return ("Complete: every CT slice the structure set references is present, every "
                "plan's structure set and every dose's plan is present"
                + (f", CT slices evenly spaced at {spacing:g} mm." if spacing else "."))
    missing = verdict.get("missing") or []
    return (f"Incomplete: ran with what had arrived after the maximum wait; {len(missing)} "
            f"missing piece(s), listed below and on the QC report.")


def dose_words(dose: dict[str, Any]) -> list[str]:
    """One line per plan/dose pairing as the course detector chose it (never a guess here)."""
    if not dose:
        return ["No dose: the course has no RTDOSE (DVH stage skipped)."]
    lines = [f"Dose mode: {dose.get('mode', '?')}."]
    for p in dose.get("plans") or []:
        lines.append(f"RTPLAN {p.get('rtplan') or '(none)'}: RTDOSE "
                     f"{', '.join(p.get('rtdose') or []) or '(none)'} "
                     f"(summation type {p.get('summation') or 'unknown'})")
    if dose.get("rtdose"):
        lines.append(f"Dose used for DVH: {', '.join(dose['rtdose'])}")
    return lines


def timeline(stages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict]:
    """Parent runs with their parts summarised, durations, and bar offsets on a common axis."""
    parents = [dict(s) for s in stages if not s["part"]]
    parts: dict[str, Counter] = {}
    for s in stages:
        if s["part"]:
            parts.setdefault(s["stage"], Counter())[s["state"]] += 1
    times = [t for s in stages for t in (s["queued_at"], s["started_at"], s["finished_at"]) if t]
    t0 = min(times) if times else None
    t1 = max(times) if times else None
    span = seconds_between(t0, t1) or 1.0
    for s in parents:
        s["waited_s"] = seconds_between(s["queued_at"], s["started_at"])
        s["ran_s"] = seconds_between(s["started_at"], s["finished_at"])
        start = seconds_between(t0, s["started_at"])
        s["bar_left"] = 0 if start is None else round(100 * start / span, 1)
        s["bar_width"] = 0 if s["ran_s"] is None else max(0.5, round(100 * s["ran_s"] / span, 1))
        p = parts.get(s["stage"])
        s["parts"] = ", ".join(f"{n} {st}" for st, n in sorted(p.items())) if p else ""
    return parents, {"start": t0, "end": t1, "span_s": seconds_between(t0, t1)}


def progress(course: dict[str, Any]) -> dict[str, int]:
    parents = [s for s in course["stages"] if not s["part"]]
    return {"total": len(parents), "finished": sum(s["state"] in FINAL_OK for s in parents),
            "failed": sum(s["state"] == "failed" for s in parents)}


def course_page_data(ctx: WebContext, course_id: int, full: bool = True) -> dict[str, Any]:
    """Everything the course page shows; ``full=False``: only the live stage table's part."""
    book = ctx.book()
    row = views.course_or_error(book, course_id)
    course = views.course_json(book, row, ctx.cfg, detail=full)
    latest = book.latest_revision(course_id)
    plan = json.loads(latest["plan"]) if latest else {}
    verdict = json.loads(row["verdict"] or "{}")
    runs, span = timeline(course["stages"])
    data = {"course": course, "runs": runs, "span": span, "progress": progress(course)}
    if not full:
        return data
    series: dict[str, dict[str, Any]] = {}
    for o in course["objects"]:
        s = series.setdefault(o["series_uid"], {"modality": o["modality"], "series_uid":
                                                o["series_uid"], "count": 0, "last": ""})
        s["count"] += 1
        s["last"] = max(s["last"], o["received_at"] or "")
    files = outputs.course_files(ctx.cfg, book, course_id) if latest else {}
    columns, rows = outputs.dvh_metrics(files.get("dvh_metrics.csv"))
    return data | {
        "verdict_words": verdict_words(course, verdict),
        "missing": verdict.get("missing", []),
        "modalities": Counter(o["modality"] for o in course["objects"]),
        "series": sorted(series.values(), key=lambda s: (s["modality"], s["series_uid"])),
        "dose_lines": dose_words(plan.get("dose") or {}) if latest else [],
        "files": files, "known": outputs.KNOWN,
        "dvh_columns": outputs.dvh_summary_columns(columns), "dvh_rows": rows,
    }


# -- pages -------------------------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request):
    ctx = page_reader(request)
    book = ctx.book_or_none()
    status = views.node_status(ctx.cfg, ctx.index())
    index = ctx.index()
    rejections = []
    if index is not None:
        rejections = index.events("rejected", 10) + index.events("association_rejected", 10)
        rejections.sort(key=lambda e: e["at"], reverse=True)
    return render(request, "dashboard.html", status=status, rejections=rejections[:10],
                  failures=book.recent_failures(10) if book else [],
                  course_states=COURSE_STATES, http=ctx.cfg.http)


@router.get("/fragments/queues", response_class=HTMLResponse)
def queues_fragment(request: Request):
    ctx = page_reader(request)
    return render(request, "_queues.html", status=views.node_status(ctx.cfg, ctx.index()))


@router.get("/courses", response_class=HTMLResponse)
def courses_page(request: Request, state: Optional[str] = None,
                 patient_id: Optional[str] = None):
    ctx = page_reader(request)
    rows = []
    if ctx.index() is not None:
        rows = views.courses_json(ctx.book(), ctx.cfg, state=state or None,
                                  patient_id=patient_id or None)
    for r in rows:
        r["progress"] = progress(r)
    return render(request, "courses.html", courses=rows, state=state or "",
                  patient_id=patient_id or "", course_states=COURSE_STATES)


@router.get("/courses/{course_id}", response_class=HTMLResponse)
def course_page(request: Request, course_id: int):
    ctx = page_reader(request)
    return render(request, "course.html", **course_page_data(ctx, course_id))


@router.get("/courses/{course_id}/fragments/stages", response_class=HTMLResponse)
def stages_fragment(request: Request, course_id: int):
    ctx = page_reader(request)
    return render(request, "_stages.html", **course_page_data(ctx, course_id, full=False))


@router.get("/courses/{course_id}/files/{name:path}")
def course_file(request: Request, course_id: int, name: str):
    ctx = page_reader(request)
    return outputs.file_response(outputs.resolve_download(ctx.cfg, ctx.book(), course_id, name))


@router.get("/retrievals", response_class=HTMLResponse)
def retrievals_page(request: Request):
    ctx = page_reader(request)
    jobs = views.retrievals_json(ctx.cfg, ctx.index()) if ctx.index() else []
    return render(request, "retrievals.html", jobs=jobs)


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request):
    ctx = page_reader(request)
    files = sorted(ctx.cfg.rules_dir.glob("*.y*ml")) if ctx.cfg.rules_dir.is_dir() else []
    return render(request, "rules.html", rules=views.rules_json(ctx.cfg),
                  stages=views.stages_json(ctx.cfg), rules_dir=ctx.cfg.rules_dir,
                  rule_files=[(f.name, f.read_text(errors="replace")) for f in files])


@router.get("/config", response_class=HTMLResponse)
def config_page(request: Request):
    import yaml

    ctx = page_reader(request)
    text = yaml.safe_dump(views.effective_config(ctx.cfg), sort_keys=False)
    return render(request, "config.html", text=text, source=ctx.cfg.source)


# -- actions -----------------------------------------------------------------------------------

ACTIONS = {
    "requeue": "Run again",
    "cancel": "Cancel course",
    "send": "Send the auto RTSTRUCT again",
    "pause": "Pause queue",
    "resume": "Resume queue",
    "requeue-failed": "Run every failed stage again",
}


def describe(action: str, f: dict[str, str]) -> str:
    c = f.get("course_id")
    if action == "requeue":
        if f.get("stage"):
            return f"Run stage {f['stage']} of course {c} again (and what it had blocked)."
        if f.get("from_stage"):
            return f"Run stage {f['from_stage']} of course {c} and every later stage again."
        return f"Run every stage of course {c}'s latest revision again."
    if action == "cancel":
        return f"Cancel course {c}: nothing more is dispatched (running stages finish)."
    if action == "send":
        return (f"C-STORE course {c}'s auto-contoured RTSTRUCT to "
                f"{f.get('to') or 'its rule destinations'} now.")
    if action in ("pause", "resume"):
        q = f.get("queue") or "gpu and cpu"
        return (f"Hold the {q} queue: running tasks finish, nothing new starts." if
                action == "pause" else f"Release the {q} queue.")
    return "Put every failed stage run back in the queue."


FIELDS = ("course_id", "stage", "from_stage", "queue", "to", "since")


@router.get("/confirm/{action}", response_class=HTMLResponse)
def confirm(request: Request, action: str):
    page_writer(request)
    if action not in ACTIONS:
        raise views.NotFound(f"no action {action!r}")
    f = {k: request.query_params.get(k, "") for k in FIELDS}
    back = f"/courses/{f['course_id']}" if f["course_id"] else "/"
    return render(request, "confirm.html", action=action, title=ACTIONS[action],
                  description=describe(action, f), fields={k: v for k, v in f.items() if v},
                  back=back)


@router.post("/actions/{action}")
def act(request: Request, action: str, course_id: int | None = Form(None),
        stage: str = Form(""), from_stage: str = Form(""), queue: str = Form(""),
        to: str = Form(""), since: str = Form("")):
    ctx = page_writer(request)
    book = ctx.book()
    back = f"/courses/{course_id}" if course_id is not None else "/"
    if action in ("requeue", "cancel", "send") and course_id is None:
        raise views.ViewError("course_id is required")
    if action == "requeue":
        n = views.requeue(book, course_id, stage or None, from_stage or None)
        msg = f"{n} stage run(s) of course {course_id} back to pending"
    elif action == "cancel":
        n = views.cancel(book, course_id)
        msg = f"course {course_id} cancelled ({n} waiting stage run(s) dropped)"
    elif action == "send":
        reports = views.send_course(ctx.cfg, book, course_id, to or None)
        msg = "sent to " + ", ".join(r["destination"] for r in reports)
    elif action in ("pause", "resume"):
        names = views.set_paused(book, queue or None, action == "pause")
        msg = f"{' and '.join(names)} queue {'paused' if action == 'pause' else 'resumed'}"
        back = "/"
    elif action == "requeue-failed":
        n, n_courses = views.requeue_failed(book, since or None)
        msg = f"{n} failed stage run(s) in {n_courses} course(s) back to pending"
    else:
        raise views.NotFound(f"no action {action!r}")
    if action in ("requeue", "resume", "requeue-failed"):
        views.wake_node(ctx.cfg)
    return RedirectResponse(f"{back}?{urlencode({'msg': msg})}", status_code=303)


# -- login -------------------------------------------------------------------------------------

def safe_next(url: str | None) -> str:
    """Only paths of this site (no //host, no scheme): no open redirect through the login."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/"):
    return render(request, "login.html", next=safe_next(next), error="")


@router.post("/login")
def login(request: Request, next: str = Form("/"), token: str = Form(""),
          username: str = Form(""), password: str = Form("")):
    ctx = web_context(request)
    ok = ctx.auth.configured and (ctx.auth.valid_token(token)
                                  or ctx.auth.valid_user(username, password))
    if not ok:
        return render(request, "login.html", status_code=401, next=safe_next(next),
                      error="wrong token or user/password" if ctx.auth.configured else
                      "no login is configured (http.token or http.username/password)")
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, ctx.auth.new_session(), max_age=SESSION_IDLE_S,
                        httponly=True, samesite="strict",
                        secure=ctx.cfg.http.tls_cert is not None, path="/")
    return response


@router.post("/logout")
def logout(request: Request):
    ctx = web_context(request)
    ctx.auth.end_session(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def login_redirect(next_url: str) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(next_url, safe='')}", status_code=303)
