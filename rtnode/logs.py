"""Logging set-up shared by every rtnode process: one line per event, UTC timestamps.

A node is a process tree (serve, its queue consumers, their workers) writing one log file. So
the file handler is a WatchedFileHandler — every process reopens the file when it was moved —
and at most one process, the one that set logging up first (``rtnode serve``), rotates it by
size; its children learn that from RTNODE_LOG_ROTATOR and only follow. With
``logging.rotate: external``, logrotate moves the file and every process follows the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rtnode.config import LoggingConfig

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: set by the process that rotates the log file by size, for the children it starts
ROTATOR_ENV = "RTNODE_LOG_ROTATOR"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (for Loki, Elastic, journald forwarding): ts, level, logger,
    pid, msg, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
               .isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "pid": record.process,
               "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class RotatingWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler that, in the one process allowed to, also rotates by size
    (file → file.1 → … → file.N). Other processes see the file move and reopen it."""

    def __init__(self, filename: Path, max_bytes: int, backups: int, rotate: bool):
        super().__init__(str(filename), encoding="utf-8", delay=False)
        self.max_bytes, self.backups, self.rotate = max_bytes, backups, rotate

    def _due(self) -> bool:
        try:
            return os.stat(self.baseFilename).st_size >= self.max_bytes
        except OSError:
            return False

    def _rotate(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        for i in range(self.backups - 1, 0, -1):
            src = f"{self.baseFilename}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.baseFilename}.{i + 1}")
        if self.backups > 0:
            os.replace(self.baseFilename, f"{self.baseFilename}.1")
        else:
            os.truncate(self.baseFilename, 0)
        self.stream = self._open()
        self._statstream()

    def emit(self, record: logging.LogRecord) -> None:
        if self.rotate and self.max_bytes > 0 and self._due():
            try:
                self._rotate()
            except OSError:
                self.handleError(record)
        super().emit(record)


def setup_logging(level: str = "INFO", file: Path | None = None,
                  settings: "LoggingConfig | None" = None) -> None:
    """Configure the root logger: standard error always, plus the log file if one is set.

    ``settings`` (the config's ``logging:`` section) adds format, rotation and the loggers
    quietened at INFO; without it, plain text and no rotation (the old behaviour).
    """
    fmt = settings.format if settings is not None else "text"
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file is not None:
        file = Path(file)
        file.parent.mkdir(parents=True, exist_ok=True)
        by_size = settings is not None and settings.rotate == "size"
        mine = by_size and os.environ.get(ROTATOR_ENV) in (None, "", str(os.getpid()))
        if mine:
            os.environ[ROTATOR_ENV] = str(os.getpid())  # the children started from here follow
        handlers.append(RotatingWatchedFileHandler(
            file, int((settings.max_mb if settings else 0) * 1024**2),
            settings.backups if settings else 0, rotate=mine))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(level)
    # pynetdicom narrates every PDU at INFO; its warnings and errors are what a node log needs.
    logging.getLogger("pynetdicom").setLevel("DEBUG" if level == "DEBUG" else "WARNING")
    # Huey's "Executing …"/"… executed in" per task and pykwalify's "validation.valid" per
    # radiomics parameter file drown the node's own lines; rtnode logs each stage run itself.
    quiet = settings.quiet if settings is not None else ["huey", "pykwalify"]
    for name in quiet:
        logging.getLogger(name).setLevel("DEBUG" if level == "DEBUG" else "WARNING")
