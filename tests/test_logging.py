"""The node's log: size rotation by one process only, reopening after logrotate, JSON lines,
and the chatter of Huey and pykwalify quietened at INFO (real Huey and pykwalify calls)."""

from __future__ import annotations

import json
import logging
import os

import pytest

from rtnode.config import LoggingConfig
from rtnode.logs import ROTATOR_ENV, setup_logging


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    monkeypatch.delenv(ROTATOR_ENV, raising=False)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    for name in ("huey", "pykwalify"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_size_rotation_keeps_the_configured_number_of_backups(tmp_path):
    log_file = tmp_path / "rtnode.log"
    setup_logging("INFO", log_file, LoggingConfig(rotate="size", max_mb=0.01, backups=2))
    for i in range(400):
        logging.getLogger("rtnode.test").info("line %04d %s", i, "x" * 60)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rtnode.log", "rtnode.log.1", "rtnode.log.2"]
    assert log_file.stat().st_size < 0.01 * 1024**2 + 200
    assert "line 0399" in log_file.read_text()


def test_a_child_of_the_rotating_process_follows_but_does_not_rotate(tmp_path, monkeypatch):
    monkeypatch.setenv(ROTATOR_ENV, str(os.getpid() + 1))  # another process rotates
    log_file = tmp_path / "rtnode.log"
    setup_logging("INFO", log_file, LoggingConfig(rotate="size", max_mb=0.01, backups=2))
    for i in range(400):
        logging.getLogger("rtnode.test").info("line %04d %s", i, "x" * 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rtnode.log"]


def test_external_rotation_reopens_the_file_logrotate_moved(tmp_path):
    log_file = tmp_path / "rtnode.log"
    setup_logging("INFO", log_file, LoggingConfig(rotate="external"))
    logging.getLogger("rtnode.test").info("before the move")
    os.replace(log_file, tmp_path / "rtnode.log.1")  # what logrotate does
    logging.getLogger("rtnode.test").info("after the move")
    assert "after the move" in log_file.read_text()
    assert "before the move" in (tmp_path / "rtnode.log.1").read_text()


def test_json_format_is_one_object_per_line(tmp_path):
    log_file = tmp_path / "rtnode.log"
    setup_logging("INFO", log_file, LoggingConfig(format="json"))
    logging.getLogger("rtnode.node").warning("disk %s", "low")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("rtnode.node").exception("stage failed")
    docs = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert docs[0]["msg"] == "disk low" and docs[0]["level"] == "WARNING"
    assert docs[0]["logger"] == "rtnode.node" and docs[0]["ts"].endswith("+00:00")
    assert "ValueError: boom" in docs[1]["exc"]


def test_huey_task_lines_and_pykwalify_valid_are_quiet_at_info_but_not_at_debug(tmp_path):
    from huey import MemoryHuey
    from pykwalify.core import Core

    def run_both():
        huey = MemoryHuey("t", immediate=True)

        @huey.task()
        def add(a, b):
            return a + b

        add(1, 2)
        Core(source_data={"a": 1}, schema_data={"type": "map", "mapping": {
            "a": {"type": "int"}}}).validate()

    log_file = tmp_path / "info.log"
    setup_logging("INFO", log_file, LoggingConfig())
    run_both()
    text = log_file.read_text()
    assert "Executing" not in text and "executed in" not in text
    assert "validation.valid" not in text
    logging.getLogger("huey").warning("a huey warning still shows")
    assert "a huey warning still shows" in log_file.read_text()

    log_file = tmp_path / "debug.log"
    setup_logging("DEBUG", log_file, LoggingConfig())
    run_both()
    text = log_file.read_text()
    assert "Executing" in text and "validation.valid" in text
