"""The benchmark's stage, loaded by the node and its workers through ``stages.plugins``:
``burn`` fans out into RTNODE_BENCH_PARTS parts that each do the same fixed CPU-bound work
(RTNODE_BENCH_WORK iterations of integer arithmetic, about a second per 2e7 on one core)."""

from __future__ import annotations

import os

from rtnode.stages.base import Stage, StageContext, register


def _split(ctx: StageContext) -> list[str]:
    return [f"part{i:03d}" for i in range(int(os.environ.get("RTNODE_BENCH_PARTS", "12")))]


def _burn(ctx: StageContext) -> None:
    n = int(float(os.environ.get("RTNODE_BENCH_WORK", "2e7")))
    total = 0
    for i in range(n):
        total += i * i % 7
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / f"{ctx.part}.txt").write_text(str(total))


register(Stage(name="burn", queue="cpu", run=_burn, split=_split, timeout=3600,
               description="benchmark: fixed CPU-bound work per part"))
