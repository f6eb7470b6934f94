"""Every QC check of a course, in report order, and the two files they are written to."""

from __future__ import annotations

import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

from rtnode.qc import autoseg_checks, course_checks, ct_checks, dose_checks, structure_checks
from rtnode.qc.checks import Check, overall
from rtnode.qc.config import QCConfig
from rtnode.qc.course import QCCourse

log = logging.getLogger(__name__)
QC_JSON = "qc.json"
REPORT_HTML = "report.html"


def run_checks(course: QCCourse, config: QCConfig | None = None) -> list[Check]:
    """All checks; one that crashes becomes a fail with the error, the others still run."""
    config = config or QCConfig()
    tol = config.spacing_tolerance_mm
    plan = [
        lambda: ct_checks.orientation(course),
        lambda: ct_checks.slice_spacing(course, tol),
        lambda: ct_checks.missing_slices(course, tol),
        lambda: structure_checks.references(course),
        lambda: structure_checks.contours(course),
        lambda: structure_checks.inside_image(course),
        lambda: dose_checks.units(course),
        lambda: dose_checks.prescription(course),
        lambda: dose_checks.coverage(course, config),
        lambda: dose_checks.dvh_vs_tps(course, config),
        lambda: autoseg_checks.volumes(course, config),
        lambda: autoseg_checks.laterality(course),
        lambda: autoseg_checks.auto_vs_manual(course, config),
        lambda: course_checks.completeness(course),
    ]
    ids = ["ct_orientation", "ct_slice_spacing", "ct_missing_slices", "rtstruct_references",
           "roi_contours", "roi_inside_image", "dose_units", "prescription", "dose_coverage",
           "dvh_vs_tps", "autoseg_volumes", "autoseg_laterality", "auto_vs_manual",
           "course_completeness"]
    checks = []
    for check_id, fn in zip(ids, plan):
        try:
            checks.append(fn())
        except Exception as exc:  # a check that cannot run is itself a finding
            log.warning("QC check %s could not run: %s: %s", check_id, type(exc).__name__, exc)
            log.debug("QC check %s:\n%s", check_id, traceback.format_exc())
            checks.append(Check(check_id, check_id, "fail",
                                f"check could not run: {type(exc).__name__}: {exc}"))
    checks.append(course_checks.required(course, checks, course.expected))
    return checks


def _clean(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def write_qc(course: QCCourse, out_dir: Path, config: QCConfig | None = None) -> dict[str, Any]:
    """qc.json and report.html in out_dir; returns the qc.json document."""
    from rtnode.qc.render import dvh_png, overlays_png, roi_styles
    from rtnode.qc.report import render_html

    config = config or QCConfig()
    checks = run_checks(course, config)
    status = overall(checks)
    doc = {"status": status, **course.ids,
           "counts": {s: sum(c.status == s for c in checks)
                      for s in ("pass", "warn", "fail", "skip")},
           "checks": [_clean(c.as_json()) for c in checks]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overlays = _picture(overlays_png, course, config.overlay_window) if course.images else None
    dvh = _picture(dvh_png, course)
    _write(out_dir / QC_JSON, json.dumps(doc, indent=2))
    styles = roi_styles(course, _dvh_keys(course))
    _write(out_dir / REPORT_HTML, render_html(checks, status, course, overlays, dvh, styles))
    return doc


def _picture(fn, *args) -> bytes | None:
    """A picture, or None with the reason logged: pictures help, their absence must not cost
    the checks."""
    try:
        return fn(*args)
    except Exception as exc:
        log.warning("QC picture %s failed: %s: %s", fn.__name__, type(exc).__name__, exc)
        log.debug("QC picture:\n%s", traceback.format_exc())
        return None


def _dvh_keys(course: QCCourse) -> list[tuple[str, str]]:
    """(source, ROI name) of every row of the DVH tables (none when they cannot be had)."""
    try:
        tables = course.dvh_tables
    except Exception:  # the dose checks already report why the DVH cannot be computed
        return []
    if tables is None or tables.metrics.empty:
        return []
    return [(str(s), str(n)) for s, n in zip(tables.metrics.get("source", "manual"),
                                             tables.metrics["roi_name"])]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
