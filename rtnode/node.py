"""``rtnode serve``: the node as one supervised process.

Start-up order matters for the no-loss promise: recover the storage (drop partial writes), open
and migrate the index, and only then open the port. Shutdown is the reverse: stop accepting,
let in-flight stores finish and be acknowledged, close. ``node.json`` in the storage root tells
``rtnode status`` which process is serving and where.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom

from rtnode import __version__
from rtnode.config import Config
from rtnode.dicom.scp import StorageSCP
from rtnode.store.archive import Archive
from rtnode.store.index import utc_now
from rtnode.store.schema import SCHEMA_VERSION

log = logging.getLogger("rtnode.node")

NODE_FILE = "node.json"
#: how long shutdown waits for open associations to finish their stores
DRAIN_SECONDS = 60.0
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

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.bind in ("0.0.0.0", "", "::") else self.bind


def read_node_info(storage_root: Path) -> NodeInfo | None:
    try:
        return NodeInfo(**json.loads((storage_root / NODE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def node_is_up(info: NodeInfo | None) -> bool:
    """The process lives and its main loop wrote a heartbeat recently.

    Deliberately not a network probe: a bare TCP connect holds one of pynetdicom's association
    slots until the ACSE timeout, and a C-ECHO from here is refused when an allow-list is on.
    """
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


class NodeAlreadyRunning(RuntimeError):
    """A live node already serves this storage root."""


class Node:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = threading.Event()

    def _log_start(self, archive: Archive, port: int) -> None:
        c = self.config
        cores = os.cpu_count() or 1
        log.info("rtnode %s starting (pid %d)", __version__, os.getpid())
        log.info("config: %s", c.source or "embedded defaults")
        log.info("DICOM: AE %s on %s:%d, max PDU %s, max associations %d, allowed callers: %s",
                 c.dicom.ae_title, c.dicom.bind, port, c.dicom.max_pdu or "unlimited",
                 c.dicom.max_associations, ", ".join(c.dicom.allowed_callers) or "any")
        log.info("storage: %s (fsync %s, min free %.1f GB), index schema v%d",
                 archive.root, "on" if c.storage.fsync else "OFF", c.storage.min_free_gb,
                 SCHEMA_VERSION)
        log.info("cores: %d, cpu worker budget: %d (reserved %d), threads per worker: %d",
                 cores, c.workers.cpu_budget(cores), c.workers.reserved_cores,
                 c.workers.threads_per_worker)

    def _on_signal(self, signum: int, _frame) -> None:
        log.info("received %s: finishing in-flight stores, then stopping",
                 signal.Signals(signum).name)
        self.stopping.set()

    def run(self) -> int:
        root = self.config.storage_root
        other = read_node_info(root)
        if other is not None and other.pid != os.getpid() and pid_alive(other.pid):
            raise NodeAlreadyRunning(
                f"another rtnode (pid {other.pid}, {other.ae_title} on port {other.port}) is "
                f"serving {root}; stop it first or use another storage.root")
        # The archive judges UIDs itself and answers with a status; pydicom's per-value warnings
        # would only repeat that, unformatted, on standard error.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        archive = Archive.from_config(self.config)
        archive.recover()
        scp = StorageSCP(self.config.dicom, archive)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        scp.start()
        self._log_start(archive, scp.port)
        info_path = archive.root / NODE_FILE
        info = NodeInfo(pid=os.getpid(), ae_title=self.config.dicom.ae_title,
                        bind=self.config.dicom.bind, port=scp.port, started_at=utc_now())
        try:
            while True:
                self._write_info(info_path, info)
                if self.stopping.wait(HEARTBEAT_S):
                    break
        finally:
            drained = scp.stop(DRAIN_SECONDS)
            info_path.unlink(missing_ok=True)
            archive.close()
            log.info("stopped after %d stored instance(s)%s", scp.stored,
                     "" if drained else " (some associations were aborted)")
        return 0

    @staticmethod
    def _write_info(path: Path, info: NodeInfo) -> None:
        data = {**info.__dict__, "heartbeat_at": utc_now()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
