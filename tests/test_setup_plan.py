"""The install split: the runtime install puts no test peer on a clinical host.

Judged from the script's own plan (``--print-plan``), which is the list the real run installs
from, so the plan and the install cannot drift apart.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).parents[1]
SETUP = REPO / "scripts" / "setup.sh"
PEERS = ("dcmtk", "orthanc", "dicom3tools", "redis-server", "chromium", "chromium-driver",
         "postgresql", "plastimatch")


def plan(*args: str) -> dict[str, list[str]]:
    r = subprocess.run(["bash", str(SETUP), "--print-plan", *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(": ")
        out.setdefault(key, []).append(value)
    return out


def test_runtime_plan_installs_no_test_peer_and_no_test_tools():
    p = plan()
    apt = p["apt"][0].split()
    assert not set(apt) & set(PEERS), apt
    assert p["pip"] == ["-e ."]
    assert "services disabled" not in p


def test_dev_plan_adds_every_peer_the_tests_start_and_disables_their_services():
    p = plan("--dev")
    apt = p["apt"][0].split()
    assert set(PEERS) <= set(apt)
    assert any("test" in step for step in p["pip"])
    assert set(p["services disabled"][0].split()) == {"orthanc", "redis-server", "postgresql"}


def test_ml_adds_the_pinned_torch_in_the_same_command_as_the_models():
    p = plan("--ml")
    ml = [s for s in p["pip"] if "[ml]" in s]
    assert ml and "torch==2.13.0" in ml[0]
    assert not set(p["apt"][0].split()) & set(PEERS)


def test_unknown_option_is_refused_and_installs_nothing():
    r = subprocess.run(["bash", str(SETUP), "--nope"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


def test_core_dependencies_carry_no_test_tool_and_no_exact_dicom_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = project["dependencies"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].split("~")[0].strip().lower()
             for d in core]
    assert not {"pytest", "pytest-timeout", "redis"} & set(names)
    for pkg in ("pydicom", "pynetdicom"):
        spec = next(d for d in core if d.lower().startswith(pkg + ">") or
                    d.lower().startswith(pkg + "=") or d.lower().startswith(pkg + "~"))
        assert "==" not in spec, spec
    assert "redis" in project["optional-dependencies"]


def test_ci_uses_the_dev_install_after_an_apt_update():
    text = (REPO / ".ci" / "run").read_text()
    assert "apt-get update" in text
    assert text.index("apt-get update") < text.index("scripts/setup.sh --dev")
