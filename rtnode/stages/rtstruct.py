"""``rtstruct``: the auto-segmentation as an RT Structure Set on the course's planning CT.

One RTSTRUCT with the ROIs of every model the segment stage ran: per-slice closed planar
contours referencing their CT slices, the CT's frame of reference and patient/study modules,
ROIGenerationAlgorithm AUTOMATIC with the model named (docs/SEGMENTATION.md).
"""

from __future__ import annotations

import pydicom

from rtnode.stages.base import Stage, StageContext, StageSkipped, register

RTSTRUCT_AUTO = "rtstruct_auto.dcm"


def write_course_rtstruct(ctx: StageContext) -> None:
    from rtnode.rtstruct.writer import save_rtstruct
    from rtnode.segmentation.pipeline import rtstruct_from_segmentations

    seg = ctx.upstream.get("segment")
    label_maps = sorted(seg.glob("seg/*/labels.json")) if seg is not None else []
    if not label_maps:
        raise StageSkipped("no segmentation to write (segment stage not run)")
    ct = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("CT")]
    rs = rtstruct_from_segmentations(label_maps, ct, ctx.config.segmentation)
    save_rtstruct(rs, ctx.out_dir / RTSTRUCT_AUTO)
    # also an instance of the course's study, so that Query/Retrieve offers it
    from rtnode.store.derived import file_derived

    file_derived(ctx.config, ctx.out_dir / RTSTRUCT_AUTO)


STAGE = register(Stage(
    name="rtstruct", queue="cpu", run=write_course_rtstruct, needs=("CT",), after=("segment",),
    inputs=("CT",), writes=(RTSTRUCT_AUTO,), timeout=900,
    description="the auto-segmentation as an RTSTRUCT on the planning CT"))
