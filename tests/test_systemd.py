"""The shipped systemd units are valid as systemd itself reads them (``systemd-analyze
verify``), carry the restart policy, service user and hardening the README promises, and run
commands rtnode actually has. Skipped where systemd-analyze is absent."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
UNITS = REPO / "packaging" / "systemd"
SHIPPED_BIN = "/opt/rtnode/.venv/bin/rtnode"

analyze = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(analyze is None, reason="systemd-analyze not installed")


def staged(tmp_path: Path, name: str, text: str | None = None) -> Path:
    """The unit with its ExecStart pointed at this checkout's rtnode (verify insists that the
    binary exists); an instance name for the template."""
    text = text if text is not None else (UNITS / name).read_text()
    rtnode = Path(sys.executable).parent / "rtnode"
    path = tmp_path / name.replace("@.service", "@cpu.service")
    path.write_text(text.replace(SHIPPED_BIN, str(rtnode)))
    return path


def verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                          timeout=120)


@needs_systemd
@pytest.mark.parametrize("name", ["rtnode.service", "rtnode-worker@.service"])
def test_units_pass_systemd_analyze_verify(tmp_path, name):
    r = verify(staged(tmp_path, name))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@needs_systemd
def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt value is reported."""
    text = (UNITS / "rtnode.service").read_text().replace("ProtectSystem=strict",
                                                          "ProtectSystem=strictly")
    r = verify(staged(tmp_path, "rtnode.service", text))
    assert "ProtectSystem" in r.stderr or "protect system" in r.stderr.lower()


@pytest.mark.parametrize("name,command", [("rtnode.service", "serve"),
                                          ("rtnode-worker@.service", "worker")])
def test_units_restart_run_as_rtnode_hardened_and_read_etc_config(name, command):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive in systemd
    unit.read(UNITS / name)
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure"
    assert svc["User"] == "rtnode"
    assert svc["ProtectSystem"] == "strict" and svc["NoNewPrivileges"] == "true"
    assert "/var/lib/rtnode" in svc["ReadWritePaths"]
    assert svc["KillMode"] == "mixed"  # the node drains and stops its own workers
    exec_start = svc["ExecStart"].split()
    assert exec_start[0] == SHIPPED_BIN and exec_start[1] == command
    assert "/etc/rtnode/config.yaml" in exec_start
    # the command exists in this rtnode
    r = subprocess.run([sys.executable, "-m", "rtnode", command, "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_example_service_config_is_valid(tmp_path):
    from rtnode.config import load_config

    cfg = load_config(REPO / "packaging" / "etc" / "config.yaml", environ={})
    assert str(cfg.storage_root) == "/var/lib/rtnode/storage"
    assert str(cfg.log_file) == "/var/log/rtnode/rtnode.log"
