"""``dvh``: DVH metrics and curves of every ROI of the course, for the manual RTSTRUCT(s) and for
the auto-contoured one when the rtstruct stage made it, in every dose source of the course.

Which dose is what is the dose plan's decision (``rtnode.courses.doseplan``), taken again here
from the RTPLAN/RTDOSE files themselves (they carry RTPlanRelationship, which the index does
not), with the rule's ``dose: {sum: [...]}`` roles: the TPS plan sum, the plan in use (a replan
supersedes its predecessor), a primary + boost sum on evidence, or each plan on its own when the
data cannot tell. Writes dvh_metrics.csv (one row per ROI, structure-set source and dose source),
dvh_curves.parquet, dvh.png and dose_plan.json (docs/DVH.md).
"""

from __future__ import annotations

import numpy as np
import pydicom

from rtnode.stages.base import Stage, StageContext, register
from rtnode.stages.rtstruct import RTSTRUCT_AUTO


def sum_roles(ctx: StageContext, default: list[str]) -> list[str]:
    """The roles the revision's dose plan was made with (the rule's dose: {sum: [...]}, else the
    dvh config's, settled when the course was built), else the dvh config's."""
    dose = ctx.rule.get("dose") or {}
    roles = dose.get("sum") if isinstance(dose, dict) else None
    return list(roles) if roles is not None else list(default)


def compute_course_dvh(ctx: StageContext) -> None:
    from rtnode.courses.doseplan import from_datasets
    from rtnode.dvh import compute_dvhs, write_course_outputs

    config = ctx.config.dvh
    if ctx.footprint == "small":
        config = config.model_copy(update={"samples_per_plane": config.samples_per_plane // 4})
    doses = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTDOSE")]
    plans = [pydicom.dcmread(ctx.path(m)) for m in ctx.of("RTPLAN")]
    dose_plan = from_datasets(plans, doses, sum_roles(ctx, config.sum))
    ct_z = np.asarray(sorted(float(m.attrs["ImagePositionPatient"][2]) for m in ctx.of("CT")
                             if m.attrs.get("ImagePositionPatient"))) if ctx.of("CT") else None
    results = []
    for member in ctx.of("RTSTRUCT"):
        results.append(compute_dvhs(pydicom.dcmread(ctx.path(member)), doses, plans,
                                    config=config, source="manual", slice_positions=ct_z,
                                    dose_plan=dose_plan))
    auto = ctx.upstream.get("rtstruct")
    if auto is not None and (auto / RTSTRUCT_AUTO).exists():
        results.append(compute_dvhs(pydicom.dcmread(auto / RTSTRUCT_AUTO), doses, plans,
                                    config=config, source="auto", slice_positions=ct_z,
                                    dose_plan=dose_plan))
    write_course_outputs(results, ctx.out_dir)


STAGE = register(Stage(
    name="dvh", queue="cpu", run=compute_course_dvh, needs=("RTSTRUCT", "RTDOSE"),
    uses=("rtstruct",), inputs=("CT", "RTSTRUCT", "RTPLAN", "RTDOSE"),
    writes=("dvh_metrics.csv", "dvh_curves.parquet", "dvh.png", "dose_plan.json"),
    timeout=1800,
    description="DVH metrics and curves per ROI, source (manual, auto) and dose source"))
