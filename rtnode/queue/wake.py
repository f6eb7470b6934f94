"""Waking the pipeline thread when there is news, instead of making every hand-over wait for a
poll.

A worker that finishes a stage run (done, failed, skipped or split into parts) sends one
datagram; the node's pipeline thread, blocked in ``WakeListener.wait``, runs the scheduler at
once, so the next run is queued within milliseconds. Polling (``courses.poll_seconds``) stays as
a slow fallback for what sends no news: workers on other hosts, a consumer killed mid-task, runs
requeued from the command line.

The channel is a Linux abstract-namespace unix datagram socket named after the storage root:
no file to clean up after a kill -9, no path-length limit, one name per node. Sending never
blocks and never fails a task: a node that is not listening (stopped, restarting) simply misses
the wake-up and its fallback poll finds the work. With ``queue.backend: redis`` workers (on any
host) publish on the queue's Redis instead (``RedisWake``) and a node thread forwards what it
hears to the listener; another transport (PostgreSQL LISTEN/NOTIFY with a PostgreSQL index)
plugs in the same way: a sender with ``notify`` and a thread calling ``WakeListener.notify``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("rtnode.wake")

#: what a datagram says; the listener only needs to know that something happened, and which
RUN_FINISHED = "run"
ARRIVAL = "arrival"
KINDS = (RUN_FINISHED, ARRIVAL)
#: however many datagrams arrive, the pipeline thread wakes at most this often (a local flood
#: of datagrams cannot spin it)
MIN_GAP_S = 0.01


def wake_address(storage_root: Path) -> str | None:
    """The socket name of the node serving storage_root (None where abstract sockets are not
    available: everything then falls back on polling)."""
    if not sys.platform.startswith("linux"):
        return None
    digest = hashlib.sha1(str(Path(storage_root).resolve()).encode()).hexdigest()[:20]
    return f"\0rtnode-wake-{digest}"


class WakeSender:
    """Best-effort notification from a worker (or any local process) to the node."""

    def __init__(self, storage_root: Path):
        self.address = wake_address(storage_root)
        self._sock: socket.socket | None = None

    def notify(self, kind: str = RUN_FINISHED) -> bool:
        """Send one datagram; False when nobody listens (the fallback poll covers it)."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(kind.encode("ascii"), self.address)
            return True
        except OSError:  # not listening, or its buffer is full: it is awake anyway
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WakeListener:
    """The node's end: ``wait`` returns as soon as news arrives (or the timeout runs out)."""

    def __init__(self, storage_root: Path):
        self.address = wake_address(storage_root)
        self._sock: socket.socket | None = None
        self._local_r, self._local_w = os.pipe()  # in-process news and stop()
        os.set_blocking(self._local_r, False)
        os.set_blocking(self._local_w, False)
        self._last_wake = 0.0
        self._closed = False
        if self.address is not None:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(self.address)
                sock.setblocking(False)
                self._sock = sock
            except OSError as exc:
                log.warning("no wake-up socket (%s); the pipeline polls every "
                            "courses.poll_seconds instead", exc)

    @property
    def event_driven(self) -> bool:
        return self._sock is not None

    def notify(self, kind: str = RUN_FINISHED) -> None:
        """Wake the waiting thread from inside this process (or from a forwarding thread)."""
        if self._closed:
            return
        try:
            os.write(self._local_w, kind.encode("ascii")[:16] + b"\n")
        except OSError:  # the pipe is full: a wake-up is already pending
            pass

    def wait(self, timeout: float) -> set[str]:
        """Block until news or timeout; returns the kinds of news received (empty on
        timeout). Every pending datagram is drained, so a burst of finished runs costs one
        scheduler tick."""
        gap = MIN_GAP_S - (time.monotonic() - self._last_wake)
        if gap > 0:
            time.sleep(min(gap, max(timeout, 0.0)))
        sources = [self._local_r] + ([self._sock] if self._sock is not None else [])
        try:
            ready, _, _ = select.select(sources, [], [], max(timeout, 0.0))
        except InterruptedError:
            ready = []
        news = self._drain() if ready else set()
        self._last_wake = time.monotonic()
        return news

    def _drain(self) -> set[str]:
        news: set[str] = set()
        while True:
            try:
                chunk = os.read(self._local_r, 4096)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                break
            news.update(k.decode("ascii", "replace") for k in chunk.split(b"\n") if k)
        while self._sock is not None:
            try:
                data = self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            news.add(data.decode("ascii", "replace") or RUN_FINISHED)
        return {k if k in KINDS else RUN_FINISHED for k in news}

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for fd in (self._local_r, self._local_w):
            try:
                os.close(fd)
            except OSError:
                pass


class RedisWake:
    """The same news over Redis pub/sub, for ``queue.backend: redis``: workers on other hosts
    share the queue's Redis but not this host's sockets. Workers publish; the node runs
    ``forward`` in a thread that hands what it hears to its ``WakeListener``."""

    def __init__(self, url: str, name: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.channel = f"{name}-wake"

    def notify(self, kind: str = RUN_FINISHED) -> bool:
        try:
            self.client.publish(self.channel, kind.encode("ascii"))
            return True
        except Exception:  # Redis down: the fallback poll covers it, the task is not failed
            return False

    def forward(self, listener: WakeListener, stop) -> None:
        """Until ``stop`` (a threading.Event) is set: every message becomes a wake-up."""
        while not stop.is_set():
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        data = message.get("data")
                        kind = data.decode("ascii", "replace") if isinstance(data, bytes) \
                            else RUN_FINISHED
                        listener.notify(kind if kind in KINDS else RUN_FINISHED)
            except Exception as exc:  # Redis restarting: try again shortly
                log.warning("wake-ups over Redis interrupted (%s); retrying", exc)
                stop.wait(2.0)
