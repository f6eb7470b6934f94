"""``radiomics``: pyradiomics features of every ROI of the course, fanned out over the cpu pool.

The split groups the ROIs (named by source, "manual:GTV", "auto:Liver") into about
``workers.parts_per_worker`` parts per cpu worker, balanced by contoured area with the largest
first (``radiomics.course.group_rois``), so that a part is seconds of work — one-ROI tasks were
shorter than the hand-over between them — and a course still spreads over every worker. Each
ROI of a part is extracted under its own time limit (the stage's timeout is per ROI; a part gets
that much per ROI it holds) and a memory error retries that ROI with the small footprint, so a
failing or slow ROI fails alone. A part leaves one small JSON file; the merge gathers them into
radiomics.csv (one row per ROI and source) and radiomics_status.csv (every ROI: done, skipped or
failed, with the reason).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rtnode.limits import DeadlineExceeded, deadline, is_memory_error
from rtnode.stages.base import Stage, StageContext, register, stage_timeout
from rtnode.stages.rtstruct import RTSTRUCT_AUTO

PARTS_DIR = "radiomics_parts"
SKIPPED_FILE = "_skipped.json"


def radiomics_config(ctx: StageContext):
    """The ``radiomics:`` section of the node's config (defaults when absent), with the keys a
    routing rule sets under ``radiomics:`` (e.g. its own params_ct) laid over it."""
    from rtnode.radiomics.config import RadiomicsConfig

    config = ctx.config.radiomics if ctx.config is not None else RadiomicsConfig()
    overrides = (ctx.rule or {}).get("radiomics") or {}
    if overrides:
        config = RadiomicsConfig.model_validate({**config.model_dump(), **overrides})
    return config


#: the last course image this worker process loaded: the parts of one course follow each other
#: on the same worker, and reading and decoding the series again for every ROI would cost more
#: than extracting a small ROI
_LAST: dict[tuple, object] = {}


def course_image(ctx: StageContext):
    """The course's planning image series (CT, else MR/PT) and its structure sets by source
    (cached per worker process for the course revision being worked on)."""
    auto = ctx.upstream.get("rtstruct")
    key = (str(ctx.storage_root), ctx.course_id, ctx.revision, str(auto))
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = _load_course_image(ctx)
    return _LAST[key]


def _load_course_image(ctx: StageContext):
    import pydicom

    from rtnode.radiomics.course import CourseImage
    from rtnode.radiomics.images import IMAGE_MODALITIES, ImageSeriesError

    for modality in IMAGE_MODALITIES:
        members = ctx.of(modality)
        if members:
            by_series: dict[str, list] = {}
            for m in members:
                by_series.setdefault(m.series_uid, []).append(m)
            series = max(by_series.values(), key=len)
            datasets = [pydicom.dcmread(ctx.path(m)) for m in series]
            break
    else:
        raise ImageSeriesError("the course has no CT, MR or PT image series")
    course = CourseImage(modality, datasets)
    course.structure_sets["manual"] = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTSTRUCT")]
    auto = ctx.upstream.get("rtstruct")
    if auto is not None and (auto / RTSTRUCT_AUTO).exists():
        course.structure_sets["auto"] = [pydicom.dcmread(auto / RTSTRUCT_AUTO)]
    return course


def _rois_of(part: str) -> list[str]:
    from rtnode.radiomics.course import part_rois

    return part_rois(part)


def part_file(out_dir: Path, part: str) -> Path:
    """ROI names may hold any character; the file is named by a digest of the part name."""
    digest = hashlib.sha1(part.encode("utf-8")).hexdigest()[:20]
    return out_dir / PARTS_DIR / f"{digest}.json"


def _write_json(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def parts_wanted(ctx: StageContext) -> int:
    """About ``workers.parts_per_worker`` parts per worker of the node's cpu budget."""
    if ctx.config is None:
        return 2
    return ctx.config.workers.cpu_budget() * ctx.config.workers.parts_per_worker


def split(ctx: StageContext) -> list[str]:
    from rtnode.radiomics.course import group_rois, part_name

    config = radiomics_config(ctx)
    course = course_image(ctx)
    rois, skipped = course.planned_rois(config)
    _write_json(ctx.out_dir / PARTS_DIR / SKIPPED_FILE,
                {"skipped": [r.status() for r in skipped]})
    if not rois:
        return []
    return [part_name(group) for group in group_rois(course.roi_sizes(rois), parts_wanted(ctx))]


def run_part(ctx: StageContext) -> None:
    from rtnode.radiomics.course import part_rois

    course = course_image(ctx)
    config = radiomics_config(ctx)
    per_roi = stage_timeout(STAGE, ctx.config)
    results = [_extract_one(course, roi, config, per_roi, ctx.footprint == "small")
               for roi in part_rois(ctx.part)]
    _write_json(part_file(ctx.out_dir, ctx.part), {"part": ctx.part, "results": results})
    failed = [r["status"]["reason"] for r in results if r["status"]["state"] == "failed"]
    if failed:  # the part (and so the course) says so; the merge still keeps the ROIs done
        raise RoiFailed("; ".join(failed)[:480] if len(results) == 1 else
                        f"{len(failed)} of {len(results)} ROI(s): " + "; ".join(failed)[:440])


class RoiFailed(Exception):
    """Some ROIs of a part failed; their reasons are in the part's file and the status table."""


def _extract_one(course, roi: str, config, seconds: float, small: bool) -> dict:
    """One ROI of a part under its own deadline; its failure is recorded, not raised, unless
    the part's own deadline fired (then the runner records the part as failed)."""
    from rtnode.radiomics.course import extract_part, split_part
    from rtnode.radiomics.extract import RoiResult

    source, name = split_part(roi)
    label = f"ROI {name!r}"
    while True:
        try:
            with deadline(seconds, label):
                result = extract_part(course, roi, config, small=small)
        except DeadlineExceeded as exc:
            if not str(exc).startswith(label):
                raise  # the part's deadline, not this ROI's
            result = RoiResult(name, source, "failed", str(exc))
        except Exception as exc:  # one bad ROI must not cost the others of its part
            if is_memory_error(exc) and not small:
                small = True
                continue
            reason = f"{type(exc).__name__}: {exc}"
            if is_memory_error(exc):
                reason = f"memory error even with a smaller footprint: {reason}"
            result = RoiResult(name, source, "failed", reason[:500])
        return {"roi": roi, "status": result.status(), "features": result.features,
                "footprint": "small" if small else "normal"}


def merge(ctx: StageContext) -> None:
    from rtnode.radiomics.course import part_rois, split_part
    from rtnode.radiomics.extract import RoiResult
    from rtnode.radiomics.tables import (RADIOMICS_CSV, STATUS_CSV, features_frame,
                                         status_frame, write_atomic)

    results: list[RoiResult] = []
    skipped = ctx.out_dir / PARTS_DIR / SKIPPED_FILE
    if skipped.exists():
        for s in json.loads(skipped.read_text())["skipped"]:
            results.append(RoiResult(s["roi_name"], s["source"], "skipped", s["reason"]))
    for p in ctx.parts:
        path = part_file(ctx.out_dir, p["part"])
        if p["state"] in ("done", "failed") and path.exists():
            body = json.loads(path.read_text())
            for one in body.get("results") or [{**body, "roi": body["part"]}]:
                source, roi = split_part(one["roi"])
                st = one["status"]
                results.append(RoiResult(roi, source, st["state"], st["reason"], st["voxels"],
                                         st["seconds"], one["features"]))
        else:
            for name in part_rois(p["part"]):
                source, roi = split_part(name)
                results.append(RoiResult(roi, source, "failed",
                                         p.get("reason") or f"part {p['state']}"))
    ids = {"course_id": ctx.course_id, "patient_id": ctx.patient_id, "revision": ctx.revision}
    write_atomic(features_frame(results, ids), ctx.out_dir / RADIOMICS_CSV)
    write_atomic(status_frame(results), ctx.out_dir / STATUS_CSV)


STAGE = register(Stage(
    name="radiomics", queue="cpu", run=run_part, split=split, merge=merge,
    uses=("rtstruct",), inputs=("CT", "MR", "PT", "RTSTRUCT"),
    writes=("radiomics.csv", "radiomics_status.csv"), timeout=600,
    timeout_setting=lambda c: c.radiomics.roi_timeout_seconds,
    # each ROI may overrun its own limit until pyradiomics returns from C: room for twice that
    part_timeout=lambda part, per_roi: per_roi * (2 * len(_rois_of(part)) + 1),
    description="pyradiomics features per ROI and source (manual, auto), ROIs grouped into "
                "balanced parts per worker"))
