"""``segment``: auto-segmentation of the planning CT with the rule's models, on the gpu queue.

Runs every model the rule names (default ``segmentation.default_model``, builtin:body) and
writes each one's labels under seg/<model>/ (labels.nii.gz, one <ROI>.nii.gz per ROI,
labels.json). The model stays loaded in the worker between courses; the worker's slot says
which device it uses (RTNODE_DEVICE). A memory error retries with a smaller footprint
(TotalSegmentator force_split, smaller nnU-Net tiles) — in the model registry, and once more
from the runner with ``footprint='small'``.
"""

from __future__ import annotations

import os

from rtnode.stages.base import Stage, StageContext, register

DEVICE_ENV = "RTNODE_DEVICE"


def segment_course(ctx: StageContext) -> None:
    from rtnode.segmentation.ct import load_ct
    from rtnode.segmentation.pipeline import safe_file_name, save_segmentation
    from rtnode.segmentation.registry import segment

    config = ctx.config.segmentation
    if ctx.footprint == "small":
        config = config.model_copy(update={"force_split": True})
    device = os.environ.get(DEVICE_ENV) or "cpu"
    image, _ = load_ct([ctx.path(m) for m in ctx.of("CT")])
    for spec in ctx.rule.get("models") or [config.default_model]:
        result = segment(image, spec, config, device)
        save_segmentation(result, image, spec, ctx.out_dir / "seg" / safe_file_name(spec))


STAGE = register(Stage(
    name="segment", queue="gpu", run=segment_course, needs=("CT",), inputs=("CT",),
    writes=("seg/",), timeout=3600, timeout_setting=lambda c: c.segmentation.timeout_seconds,
    description="auto-segmentation of the planning CT (rule models; builtin:body by default)"))
