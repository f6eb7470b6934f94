"""Configuration: defaults, the shipped file, errors that name file/line/key, env overrides."""

from __future__ import annotations

import subprocess
from pathlib import Path

from typing import get_args

import pytest
from pydantic import BaseModel

from peers import RTNODE
from rtnode.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_yaml_is_exactly_the_embedded_defaults():
    shipped = load_config(REPO / "config.yaml", environ={})
    assert shipped.model_dump() == Config().model_dump()


def test_every_key_of_the_model_is_documented_in_config_yaml():
    text = (REPO / "config.yaml").read_text()
    for section_name, section in Config.model_fields.items():
        assert f"\n{section_name}:" in text, section_name
        model = section.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for key in model.model_fields:
                assert f"  {key}:" in text, f"{section_name}.{key} missing from config.yaml"
        else:  # a mapping of names to entries: the example must show every entry key
            entry = get_args(model)[1]
            for key in entry.model_fields:
                assert f"{key}:" in text, f"{section_name}: entry key {key} not shown"


def test_unknown_key_names_file_line_and_key(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("dicom:\n  ae_title: RTNODE\n  prot: 104\nstorage:\n  root: data\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, environ={})
    assert exc.value.problems == [f"{f.resolve()}:3: dicom.prot: unknown key (did you mean 'port'?)"]


def test_bad_values_are_all_reported_with_lines(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("dicom:\n  port: 99999\n  ae_title: 'THIS TITLE IS FAR TOO LONG'\n"
                 "workers:\n  reserved_cores: many\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, environ={})
    text = str(exc.value)
    assert f"{f.resolve()}:2: dicom.port:" in text
    assert f"{f.resolve()}:3: dicom.ae_title:" in text and "1-16" in text
    assert f"{f.resolve()}:5: workers.reserved_cores:" in text


def test_invalid_yaml_names_the_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("dicom:\n  port: 104\n   ae_title: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, environ={})
    assert str(exc.value).startswith(f"{f.resolve()}:3: not valid YAML")


def test_environment_overrides_and_their_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("dicom:\n  port: 104\n")
    cfg = load_config(f, environ={"RTNODE_DICOM__PORT": "11113",
                                  "RTNODE_DICOM__ALLOWED_CALLERS": "[TPS1, PACS]",
                                  "RTNODE_STORAGE__FSYNC": "false"})
    assert cfg.dicom.port == 11113
    assert cfg.dicom.allowed_callers == ["TPS1", "PACS"]
    assert cfg.storage.fsync is False
    with pytest.raises(ConfigError) as exc:
        load_config(f, environ={"RTNODE_DICOM__PORTT": "1"})
    assert exc.value.problems == ["environment RTNODE_DICOM__PORTT: dicom.portt: unknown key "
                                  "(did you mean 'port'?)"]


def test_relative_storage_root_resolves_against_the_config_folder(tmp_path, monkeypatch):
    site = tmp_path / "etc" / "rtnode"
    site.mkdir(parents=True)
    (site / "config.yaml").write_text("storage:\n  root: ../../var/rtnode\n")
    monkeypatch.chdir(REPO)
    cfg = load_config(site / "config.yaml", environ={})
    assert cfg.storage_root == (tmp_path / "var" / "rtnode").resolve()


def test_worker_budget_is_cores_minus_reserved_unless_set():
    assert Config().workers.cpu_budget(cores=8) == 8  # a worker per core, at lower priority
    assert Config().workers.nice > 0
    assert Config.model_validate({"workers": {"reserved_cores": 2}}).workers.cpu_budget(8) == 6
    assert Config.model_validate({"workers": {"cpu_workers": 3}}).workers.cpu_budget(8) == 3
    assert Config().workers.cpu_budget(cores=1) == 1


def test_config_check_command(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("dicom:\n  port: 4242\n")
    r = subprocess.run([*RTNODE, "config", "check", "--config", str(good)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  port: 4242\nstorrage:\n  root: x\n")
    r = subprocess.run([*RTNODE, "config", "check", "--config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{bad.resolve()}:3: storrage: unknown key" in " ".join(r.stderr.split())
    r = subprocess.run([*RTNODE, "config", "check", "--config", str(tmp_path / "none.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "config file not found" in r.stderr
