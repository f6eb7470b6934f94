"""``dvh``: DVH metrics and curves of every ROI of the course, for the manual RTSTRUCT(s) and for
the auto-contoured one when the rtstruct stage made it, in the course dose.

The dose is what course building chose (``rule['dose']``): the TPS plan sum when there is one,
else each plan's dose, summed for primary + boost. Writes dvh_metrics.csv (one row per ROI and
source), dvh_curves.parquet and dvh.png (docs/DVH.md).
"""

from __future__ import annotations

import numpy as np
import pydicom

from rtnode.stages.base import Stage, StageContext, register
from rtnode.stages.rtstruct import RTSTRUCT_AUTO



def compute_course_dvh(ctx: StageContext) -> None:
    from rtnode.dvh import compute_dvhs, write_course_outputs

    config = ctx.config.dvh
    if ctx.footprint == "small":
        config = config.model_copy(update={"samples_per_plane": config.samples_per_plane // 4})
    wanted = set(ctx.rule.get("dose", {}).get("rtdose") or [])
    doses = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTDOSE")
             if not wanted or m.sop_instance_uid in wanted]
    plans = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTPLAN")]
    planned = {u for d in doses for u in
               (str(r.ReferencedSOPInstanceUID) for r in d.get("ReferencedRTPlanSequence", []))}
    plans = [p for p in plans if not planned or p.SOPInstanceUID in planned] or None
    ct_z = np.asarray(sorted(float(m.attrs["ImagePositionPatient"][2]) for m in ctx.of("CT")
                             if m.attrs.get("ImagePositionPatient"))) if ctx.of("CT") else None
    results = []
    for member in ctx.of("RTSTRUCT"):
        results.append(compute_dvhs(pydicom.dcmread(ctx.path(member)), doses, plans,
                                    config=config, source="manual", slice_positions=ct_z))
    auto = ctx.upstream.get("rtstruct")
    if auto is not None and (auto / RTSTRUCT_AUTO).exists():
        results.append(compute_dvhs(pydicom.dcmread(auto / RTSTRUCT_AUTO), doses, plans,
                                    config=config, source="auto", slice_positions=ct_z))
    write_course_outputs(results, ctx.out_dir)


STAGE = register(Stage(
    name="dvh", queue="cpu", run=compute_course_dvh, needs=("RTSTRUCT", "RTDOSE"),
    uses=("rtstruct",), inputs=("CT", "RTSTRUCT", "RTPLAN", "RTDOSE"),
    writes=("dvh_metrics.csv", "dvh_curves.parquet", "dvh.png"), timeout=1800,
    description="DVH metrics and curves per ROI and source (manual, auto)"))
