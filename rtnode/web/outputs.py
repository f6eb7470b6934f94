"""A course's output files, as the dashboard and the API offer them — and nothing else.

A stage whose inputs did not change between revisions is skipped with ``reused_revision``
pointing at the folder that holds its outputs, so a revision's files are spread over its own
folder and the folders it reuses. Downloads are looked up by name among those folders only; a
name with a path separator (other than ``logs/``), a leading dot or a control character is
refused, and the resolved file (symbolic links followed) must lie under the storage root's
``courses/`` folder, so no URL reaches the index, the DICOM files or anything else on the disk.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from rtnode.config import Config
from rtnode.views import NotFound, ViewError, course_or_error

#: file names a download may ask for: one plain name, or logs/<name>
NAME = re.compile(r"^(logs/)?[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}$")
#: the files the course page links to, in this order, with what they are
KNOWN = {
    "report.html": "QC report",
    "qc.json": "QC checks (JSON)",
    "course.json": "course manifest",
    "dvh_metrics.csv": "DVH metrics",
    "dvh_curves.parquet": "DVH curves",
    "dvh.png": "DVH plot",
    "radiomics.csv": "radiomics features",
    "radiomics_status.csv": "radiomics status per ROI",
    "radiomics_robustness.csv": "radiomics robustness (ICC)",
    "rtstruct_auto.dcm": "auto-contoured RTSTRUCT",
    "send.json": "send attempts",
}


class Forbidden(ViewError):
    status = 403


def output_dirs(cfg: Config, book, course_id: int) -> list[Path]:
    """The folders holding the latest revision's outputs: its own first, then reused ones."""
    course_or_error(book, course_id)
    latest = book.latest_revision(course_id)
    if latest is None:
        return []
    base = cfg.storage_root / "courses" / str(course_id)
    revisions = [latest["revision"]] + [r["reused_revision"] for r in book.runs(course_id)
                                         if r["reused_revision"]]
    return [base / f"r{rev}" for rev in dict.fromkeys(revisions)]


def course_files(cfg: Config, book, course_id: int) -> dict[str, Path]:
    """name → file for every top-level file and stage log of the latest revision."""
    files: dict[str, Path] = {}
    for folder in output_dirs(cfg, book, course_id):
        if not folder.is_dir():
            continue
        candidates = sorted(folder.iterdir()) + sorted((folder / "logs").glob("*.log"))
        for f in candidates:
            name = f.name if f.parent == folder else f"logs/{f.name}"
            if f.is_file() and NAME.match(name):
                files.setdefault(name, f)
    return files


def files_json(cfg: Config, book, course_id: int) -> list[dict[str, Any]]:
    """``GET /api/v1/courses/{id}/files``: name, what it is, size, the revision folder."""
    out = []
    for n, p in course_files(cfg, book, course_id).items():
        folder = p.parent.parent if n.startswith("logs/") else p.parent
        out.append({"name": n, "what": KNOWN.get(n, "stage log" if n.startswith("logs/")
                                                  else ""),
                    "size": p.stat().st_size, "revision": int(folder.name[1:])})
    return out


def resolve_download(cfg: Config, book, course_id: int, name: str) -> Path:
    """The file behind a download URL, or an error; never a path outside storage/courses/."""
    if not NAME.match(name) or ".." in name:
        raise Forbidden(f"{name!r} is not a course output name")
    path = course_files(cfg, book, course_id).get(name)
    if path is None:
        raise NotFound(f"course {course_id} has no output {name!r}")
    real = path.resolve(strict=True)
    allowed = (cfg.storage_root / "courses" / str(course_id)).resolve()
    if not real.is_relative_to(allowed) or not real.is_file():
        raise Forbidden(f"{name!r} points outside the course's folder")
    return real


def dvh_metrics(path: Path | None) -> tuple[list[str], list[dict[str, Any]]]:
    """The DVH metrics table for the course page: every column the file has, in its order
    (column names change between versions, e.g. the ``_gy`` suffixes; read, don't assume)."""
    if path is None:
        return [], []
    frame = pd.read_csv(path)
    frame = frame.astype(object).where(frame.notna(), None)
    return list(frame.columns), frame.to_dict(orient="records")


def dvh_summary_columns(columns: list[str]) -> list[str]:
    """The few columns a person reads first: names, source, volume, mean/min/max dose and the
    Dx% levels — whatever they are called in this file."""
    wanted = []
    for c in columns:
        low = c.lower()
        if low in ("roi_name", "source", "dose_source", "volume_cc", "dose_coverage") or \
                re.match(r"^d(mean|min|max)(_gy)?$", low) or re.match(r"^d\d+(_gy)?$", low):
            wanted.append(c)
    return wanted or columns[:10]


#: shown in the browser (the QC report in its frame, the DVH picture); the rest is downloaded
INLINE = {".html": "text/html; charset=utf-8", ".png": "image/png",
          ".json": "application/json", ".log": "text/plain; charset=utf-8"}


def file_response(path: Path):
    """A download; HTML is served sandboxed (no scripts, no same-origin rights) even when it
    is opened outside the course page's frame."""
    from fastapi.responses import FileResponse

    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    kind = INLINE.get(path.suffix.lower())
    if kind is not None:
        if path.suffix.lower() == ".html":
            headers["Content-Security-Policy"] = "sandbox; default-src 'none'; " \
                                                 "img-src data:; style-src 'unsafe-inline'"
        return FileResponse(path, media_type=kind, headers=headers)
    return FileResponse(path, filename=path.name, headers=headers,
                        media_type="application/octet-stream")
