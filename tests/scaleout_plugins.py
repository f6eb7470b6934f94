"""Stages for the scale-out tests, loaded by nodes and workers through ``stages.plugins``.

``fan6`` fans out into six parts that each sleep RTNODE_TEST_STAGE_SECONDS (default 2 s), so
that the index's timestamps show how many ran at once and on which host; ``step1`` → ``step2``
are two stages in a row, so that something can happen between them.
"""

from __future__ import annotations

import os
import time

from rtnode.stages.base import Stage, StageContext, register

PARTS = [f"p{i}" for i in range(1, 7)]


def _sleep(ctx: StageContext) -> None:
    time.sleep(float(os.environ.get("RTNODE_TEST_STAGE_SECONDS", "2")))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    name = ctx.part or "whole"
    (ctx.out_dir / f"{os.environ.get('RTNODE_HOST_ID', 'node')}-{name}-{os.getpid()}.txt"
     ).write_text("done")


def _merge(ctx: StageContext) -> None:
    done = sorted(p["part"] for p in ctx.parts if p["state"] == "done")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "fan6.txt").write_text(",".join(done))


register(Stage(name="fan6", queue="cpu", run=_sleep, split=lambda ctx: list(PARTS),
               merge=_merge, timeout=120, description="test: six sleeping parts"))
register(Stage(name="step1", queue="cpu", run=_sleep, timeout=120,
               description="test: sleeps, then step2 may start"))
register(Stage(name="step2", queue="cpu", run=_sleep, after=("step1",), timeout=120,
               description="test: sleeps after step1"))
