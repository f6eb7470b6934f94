"""``manifest``: course.json — every object of the course revision, its completeness verdict and
what was missing. The smallest real stage; every downstream report starts from it."""

from __future__ import annotations

import json
import os
from collections import Counter

from rtnode import __version__
from rtnode.stages.base import Stage, StageContext, register


def write_manifest(ctx: StageContext) -> None:
    objects = [{k: v for k, v in m.as_json().items() if k not in ("attrs", "refs")}
               for m in sorted(ctx.members, key=lambda m: (m.modality, m.series_uid,
                                                           m.sop_instance_uid))]
    body = {
        "course_id": ctx.course_id,
        "patient_id": ctx.patient_id,
        "revision": ctx.revision,
        "rule": ctx.rule.get("name", ""),
        "complete": bool(ctx.verdict.get("complete")),
        "missing": ctx.verdict.get("missing", []),
        "slice_spacing_mm": ctx.verdict.get("slice_spacing_mm"),
        "dose": ctx.rule.get("dose", {}),
        "counts": dict(Counter(m.modality for m in ctx.members)),
        "objects": objects,
        "rtnode_version": __version__,
    }
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = ctx.out_dir / "course.json.tmp"
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, ctx.out_dir / "course.json")


STAGE = register(Stage(
    name="manifest", queue="cpu", run=write_manifest, writes=("course.json",), timeout=120,
    description="course.json: the objects of the revision, completeness and what was missing"))
