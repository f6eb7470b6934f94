"""``robustness`` (optional; name it in a rule to run it): features of the ROIs matching
``radiomics.robustness.roi_patterns`` re-extracted under each configured segmentation
perturbation, one cpu-queue task per ROI; the merge computes ICC(2,1) per feature across ROIs
and perturbations and writes radiomics_robustness.csv with a robust/non-robust verdict."""

from __future__ import annotations

import json

from rtnode.stages.base import Stage, StageContext, register
from rtnode.stages.radiomics import _write_json, course_image, part_file, radiomics_config

PARTS_DIR = "robustness_parts"


def split(ctx: StageContext) -> list[str]:
    from rtnode.radiomics.course import split_part
    from rtnode.radiomics.selection import matches_any

    config = radiomics_config(ctx)
    parts, _ = course_image(ctx).planned_rois(config)
    return [p for p in parts if matches_any(split_part(p)[1], config.robustness.roi_patterns)]


def run_part(ctx: StageContext) -> None:
    from rtnode.radiomics.course import course_params, split_part
    from rtnode.radiomics.robustness import roi_perturbation_features
    from rtnode.limits import deadline

    config = radiomics_config(ctx)
    course = course_image(ctx)
    source, roi = split_part(ctx.part)
    mask = course.mask(source, roi)
    params = course_params(course.modality, config, small=ctx.footprint == "small")
    seconds = config.roi_timeout_seconds * len(config.robustness.perturbations)
    with deadline(seconds, f"ROI {roi!r} perturbations"):
        features = roi_perturbation_features(course.image, mask, params, config.robustness)
    path = part_file(ctx.out_dir, ctx.part)
    _write_json(path.parent.parent / PARTS_DIR / path.name,
                {"part": ctx.part, "features": features})


def merge(ctx: StageContext) -> None:
    from rtnode.radiomics.robustness import ROBUSTNESS_CSV, icc_table
    from rtnode.radiomics.tables import write_atomic

    config = radiomics_config(ctx)
    per_roi = {}
    for p in ctx.parts:
        path = part_file(ctx.out_dir, p["part"])
        path = path.parent.parent / PARTS_DIR / path.name
        if p["state"] == "done" and path.exists():
            per_roi[p["part"]] = json.loads(path.read_text())["features"]
    table = icc_table(per_roi, config.robustness)
    table.insert(0, "patient_id", ctx.patient_id)
    table.insert(0, "course_id", ctx.course_id)
    write_atomic(table, ctx.out_dir / ROBUSTNESS_CSV)


STAGE = register(Stage(
    name="robustness", queue="cpu", run=run_part, split=split, merge=merge,
    uses=("rtstruct",), inputs=("CT", "MR", "PT", "RTSTRUCT"),
    writes=("radiomics_robustness.csv",), timeout=3600,
    description="feature ICC across segmentation perturbations (optional), one task per ROI"))
