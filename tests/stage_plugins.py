"""Stages for pipeline tests, loaded by the node through ``stages.plugins``.

They do nothing but take time (``RTNODE_TEST_STAGE_SECONDS``, default 2 s) and write a marker, so
tests can watch ordering, concurrency, timeouts and restarts through the index's timestamps.
"""

from __future__ import annotations

import os
import time

from rtnode.stages.base import Stage, StageContext, register


def _slow(ctx: StageContext) -> None:
    time.sleep(float(os.environ.get("RTNODE_TEST_STAGE_SECONDS", "2")))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / f"slow-{os.getpid()}.txt").write_text(ctx.footprint)


def _memory_hungry(ctx: StageContext) -> None:
    if ctx.footprint == "normal":
        raise MemoryError("cannot allocate 64 GiB for the full volume")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "small.txt").write_text("done with a small footprint")


def _hang(ctx: StageContext) -> None:
    time.sleep(3600)


register(Stage(name="slow_gpu", queue="gpu", run=_slow, needs=("CT",), inputs=("CT",),
               description="test: sleeps on the gpu queue"))
register(Stage(name="slow_cpu", queue="cpu", run=_slow, after=("slow_gpu",),
               description="test: sleeps on the cpu queue"))
register(Stage(name="memory_hungry", queue="cpu", run=_memory_hungry,
               description="test: fails with MemoryError unless the footprint is small"))
register(Stage(name="hang", queue="cpu", run=_hang, timeout=2,
               description="test: never returns; its 2 s timeout must end it"))


def _fan_split(ctx: StageContext) -> list[str]:
    return ["roi1", "roi2", "roi3", "stuck"]


def _fan_part(ctx: StageContext) -> None:
    if ctx.part == "stuck":
        time.sleep(3600)
    time.sleep(float(os.environ.get("RTNODE_TEST_STAGE_SECONDS", "2")))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / f"part-{ctx.part}.txt").write_text(str(os.getpid()))


def _fan_merge(ctx: StageContext) -> None:
    done = sorted(p["part"] for p in ctx.parts if p["state"] == "done")
    (ctx.out_dir / "merged.txt").write_text(",".join(done))


register(Stage(name="fan", queue="cpu", run=_fan_part, split=_fan_split, merge=_fan_merge,
               timeout=4, description="test: four parts, one of which never finishes"))
