"""What a running node says about itself in storage/node.json, and how others read it.

Liveness is a pid plus a heartbeat rather than a network probe: a bare TCP connect would hold one
of pynetdicom's association slots until the ACSE timeout, and a C-ECHO from the CLI would be
refused when the allow-list is on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from rtnode import __version__

NODE_FILE = "node.json"
#: this host's id in the index (worker registry, stage runs); RTNODE_HOST_ID overrides the
#: hostname, e.g. for containers that share one, or to stand in for another host in tests
HOST = os.environ.get("RTNODE_HOST_ID") or socket.gethostname()
#: node.json is rewritten this often; a heartbeat older than HEARTBEAT_STALE_S means down
HEARTBEAT_S = 5.0
HEARTBEAT_STALE_S = 20.0


@dataclass(frozen=True)
class NodeInfo:
    """What a running node writes about itself for ``rtnode status``."""

    pid: int
    ae_title: str
    bind: str
    port: int
    started_at: str
    heartbeat_at: str = ""
    version: str = __version__
    workers: list[dict] = field(default_factory=list)  # {"queue", "pid", "workers"}

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "", "::") else self.bind


def write_node_info(storage_root: Path, info: NodeInfo) -> None:
    data = {**info.__dict__, "heartbeat_at": dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="milliseconds")}
    path = storage_root / NODE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_node_info(storage_root: Path) -> NodeInfo | None:
    try:
        return NodeInfo(**json.loads((storage_root / NODE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def node_is_up(info: NodeInfo | None) -> bool:
    """The process lives and its main loop wrote a heartbeat recently."""
    if info is None or not pid_alive(info.pid) or not info.heartbeat_at:
        return False
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(info.heartbeat_at)
    return age.total_seconds() < HEARTBEAT_STALE_S


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
