"""``radiomics``: pyradiomics features of every ROI of the course, one cpu-queue task per ROI.

The split names one part per ROI and source ("manual:GTV", "auto:Liver"); each part extracts
its ROI under the per-ROI time limit and leaves a small JSON file; the merge gathers them into
radiomics.csv (one row per ROI and source) and radiomics_status.csv (every ROI: done, skipped or
failed, with the reason). A failing or timed-out ROI fails alone; a memory error is retried by
the runner with ``footprint='small'`` (original image only) before that ROI fails.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rtnode.stages.base import Stage, StageContext, register
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


def part_file(out_dir: Path, part: str) -> Path:
    """ROI names may hold any character; the file is named by a digest of the part name."""
    digest = hashlib.sha1(part.encode("utf-8")).hexdigest()[:20]
    return out_dir / PARTS_DIR / f"{digest}.json"


def _write_json(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


def split(ctx: StageContext) -> list[str]:
    config = radiomics_config(ctx)
    parts, skipped = course_image(ctx).planned_rois(config)
    _write_json(ctx.out_dir / PARTS_DIR / SKIPPED_FILE,
                {"skipped": [r.status() for r in skipped]})
    return parts


def run_part(ctx: StageContext) -> None:
    from rtnode.radiomics.course import extract_part

    result = extract_part(course_image(ctx), ctx.part, radiomics_config(ctx),
                          small=ctx.footprint == "small")
    _write_json(part_file(ctx.out_dir, ctx.part),
                {"part": ctx.part, "status": result.status(), "features": result.features,
                 "footprint": ctx.footprint})


def merge(ctx: StageContext) -> None:
    from rtnode.radiomics.course import split_part
    from rtnode.radiomics.extract import RoiResult
    from rtnode.radiomics.tables import (RADIOMICS_CSV, STATUS_CSV, features_frame,
                                         status_frame, write_atomic)

    results: list[RoiResult] = []
    skipped = ctx.out_dir / PARTS_DIR / SKIPPED_FILE
    if skipped.exists():
        for s in json.loads(skipped.read_text())["skipped"]:
            results.append(RoiResult(s["roi_name"], s["source"], "skipped", s["reason"]))
    for p in ctx.parts:
        source, roi = split_part(p["part"])
        path = part_file(ctx.out_dir, p["part"])
        if p["state"] == "done" and path.exists():
            body = json.loads(path.read_text())
            st = body["status"]
            results.append(RoiResult(roi, source, st["state"], st["reason"], st["voxels"],
                                     st["seconds"], body["features"]))
        else:
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
    description="pyradiomics features per ROI and source (manual, auto), one task per ROI"))
