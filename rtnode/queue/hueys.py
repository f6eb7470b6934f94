"""The two Huey instances, built the same way in the node (which enqueues) and in each worker
(which executes), so task names and storage agree.

Embedded default: SqliteHuey files under storage/queue/. ``queue.backend: redis`` uses RedisHuey,
so `rtnode worker` on other hosts that share storage/ take the same tasks.
"""

from __future__ import annotations

from huey import Huey, RedisHuey, SqliteHuey

from rtnode.config import Config

QUEUES = ("gpu", "cpu")
TASK_NAME = "rtnode.run_stage"
REDIS_CONNECT_TIMEOUT_S = 5.0


def execute_run(run_id: int, token: str) -> None:
    """The task body: runs in a worker process (imported lazily: the node never executes)."""
    from rtnode.stages.runner import execute

    execute(run_id, token)


def make_huey(config: Config, queue: str) -> Huey:
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r} (gpu or cpu)")
    name = f"{config.queue.name}-{queue}"
    if config.queue.backend == "redis":
        from redis import ConnectionPool

        # a bounded connect: a broker host that is down must not hold the scheduler for the
        # kernel's TCP timeout (the run stays pending and is sent when the broker is back)
        pool = ConnectionPool.from_url(config.queue.redis_url,
                                       socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S)
        huey: Huey = RedisHuey(name, connection_pool=pool, results=False, utc=True)
    else:
        folder = config.storage_root / "queue"
        folder.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey(name, filename=str(folder / f"{queue}.db"), results=False, utc=True,
                          timeout=30)
    huey.run_stage = huey.task(name=TASK_NAME)(execute_run)
    return huey
