"""Which stage runs a new course revision gets, and which of them can reuse the last revision's.

A stage reruns only when its inputs changed: its fingerprint covers its own name and rule
parameters, the instances of the modalities it reads (UID and arrival time, so a replaced instance
counts as changed) and the fingerprints of the stages it comes after. An unchanged fingerprint of a
stage that finished in the previous revision makes the new run 'skipped' with the outputs reused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from rtnode.courses.book import DONE, PENDING, SKIPPED, PlannedRun
from rtnode.courses.grouping import Member
from rtnode.stages.base import Stage


OPTIONAL = "?"  # marks a `uses` entry in a run's `after` list


def encode_after(required: tuple[str, ...], optional: tuple[str, ...]) -> tuple[str, ...]:
    return (*required, *(OPTIONAL + name for name in optional))


def decode_after(after: list[str]) -> tuple[list[str], list[str]]:
    """(required, optional) upstream stage names of a run."""
    return ([a for a in after if not a.startswith(OPTIONAL)],
            [a[len(OPTIONAL):] for a in after if a.startswith(OPTIONAL)])


def effective_queue(stage: Stage, gpu_workers: int) -> str:
    """gpu stages run on the gpu queue only when there are gpu workers; else in the cpu pool."""
    return "gpu" if stage.queue == "gpu" and gpu_workers > 0 else "cpu"


def fingerprint(stage: Stage, rule: dict[str, Any], members: list[Member],
                upstream: list[str]) -> str:
    wanted = set(stage.inputs) if stage.inputs is not None else None
    inputs = sorted((m.sop_instance_uid, m.received_at) for m in members
                    if wanted is None or m.modality in wanted)
    params = {k: rule.get(k) for k in ("models", "destinations")}
    blob = json.dumps([stage.name, params, inputs, upstream], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def plan_runs(stage_names: list[str], registry: dict[str, Stage], rule: dict[str, Any],
              members: list[Member], previous: list[dict[str, Any]],
              gpu_workers: int) -> list[PlannedRun]:
    have = {m.modality for m in members}
    prior = {r["stage"]: r for r in previous if not r["part"]}
    fps: dict[str, str] = {}
    runs = []
    for name in stage_names:
        stage = registry[name]
        queue = effective_queue(stage, gpu_workers)
        required = tuple(a for a in stage.after if a in stage_names)
        optional = tuple(a for a in stage.uses if a in stage_names)
        after = encode_after(required, optional)
        lacking = [n for n in stage.needs if n not in have]
        if lacking:
            runs.append(PlannedRun(name, queue, SKIPPED, f"course has no {', '.join(lacking)}",
                                   after))
            continue
        fp = fingerprint(stage, rule, members, [fps.get(a, "") for a in required + optional])
        fps[name] = fp
        old = prior.get(name)
        if old is not None and old["fingerprint"] == fp and (
                old["state"] == DONE or old["reused_revision"] is not None):
            source = old["reused_revision"] or old["revision"]
            runs.append(PlannedRun(name, queue, SKIPPED, f"inputs unchanged since r{source}",
                                   after, fp, reused_revision=source))
        else:
            runs.append(PlannedRun(name, queue, PENDING, "", after, fp))
    return runs
