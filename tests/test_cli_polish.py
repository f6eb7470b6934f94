"""What a new user met in the CLI, one test per item: tables readable at 80 columns,
contradictory or pointless options refused, a stopped node named as such, skipped subfolders
and unfound patients said, config mistakes with the nearest key, and where the config came
from."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest

from held import rules_dir, send_and_wait, small_course
from peers import RTNODE, free_port
from test_cohorts import pacs_and_node  # noqa: F401  (fixture: Orthanc holding two patients)

pytestmark = pytest.mark.network


def rtnode(*args: str, cwd: Path | None = None, env: dict | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RTNODE_")}
    # this checkout first, also when the command runs in another folder
    base["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1])] + [str(Path(p).resolve()) for p in
                                            base.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([*RTNODE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**base, "COLUMNS": "80", **(env or {})})


@pytest.fixture
def one_course(node_factory, tmp_path):
    rules = rules_dir(tmp_path, ["manifest"])
    node = node_factory(courses={"rules_dir": str(rules), "quiet_seconds": 1.0})
    files = small_course(tmp_path, "POLISH1")
    [course] = send_and_wait(node, files, 1)
    return node, course, files


def test_tables_fit_80_columns_one_line_per_row_without_python_reprs(one_course):
    node, course, files = one_course
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    cfg = str(node.config)
    for args, rows in ((["series"], 4), (["studies"], 1), (["courses"], 1), (["stages"], None),
                       (["instances"], 27), (["course", "show", str(course["id"])], None)):
        r = rtnode(*args, "--config", cfg)
        assert r.returncode == 0, r.stderr
        # every line fits, but a folder printed on its own line for copying
        lines = [line for line in r.stdout.splitlines()
                 if line.strip() != course["output_dir"]]
        assert max(len(line) for line in lines) <= 80, (args, r.stdout)
        for repr_ in ("['", "']", "True", "False", "None"):
            assert repr_ not in r.stdout, (args, repr_, r.stdout)
        assert series_uid not in r.stdout  # UIDs are shortened...
        if rows is not None and args[0] != "stages":
            # ...and every row stays on one line
            assert sum("POLISH1" in line for line in lines) == rows, (args, r.stdout)
    assert series_uid[-12:] in rtnode("series", "--config", cfg).stdout
    show = rtnode("course", "show", str(course["id"]), "--config", cfg).stdout
    assert "part" in show and "complete: yes" in show
    # --json keeps full values
    assert series_uid in rtnode("series", "--json", "--config", cfg).stdout


def test_requeue_stage_with_from_stage_is_an_error(one_course):
    node, course, _ = one_course
    r = node.cli("requeue", str(course["id"]), "--stage", "manifest", "--from-stage",
                 "manifest")
    assert r.returncode == 2 and "exclude each other" in r.stderr


def test_requeue_and_queue_pause_say_when_the_node_is_down(one_course):
    node, course, _ = one_course
    up = node.cli("queue", "pause", "cpu")
    assert up.returncode == 0 and "not running" not in up.stderr
    node.cli("queue", "resume", "cpu")
    node.stop()
    r = node.cli("queue", "pause", "cpu")
    assert r.returncode == 0 and "the node is not running" in r.stderr
    r = node.cli("requeue", str(course["id"]))
    assert r.returncode == 0 and "the node is not running" in r.stderr


def test_demo_does_not_fall_back_to_a_default_port_when_the_node_is_down(tmp_path):
    from peers import write_config

    cfg = write_config(tmp_path)
    r = rtnode("demo", "--config", str(cfg), "--timeout", "5")
    assert r.returncode == 2
    assert "the node is not running" in r.stderr and "--to" in r.stderr
    assert "generated patient" not in r.stdout + r.stderr


def test_retrieve_without_a_selector_needs_all(tmp_path):
    from peers import write_config

    cfg = write_config(tmp_path, remotes={"PACS": {"ae_title": "ORTHANC", "host": "127.0.0.1",
                                                   "port": free_port()}})
    r = rtnode("retrieve", "--from", "PACS", "--config", str(cfg))
    assert r.returncode == 2 and "no selector" in r.stderr and "--all" in r.stderr
    r = rtnode("retrieve", "--from", "PACS", "--all", "--dry-run", "--config", str(cfg))
    assert "no selector" not in r.stderr and "cannot reach PACS" in " ".join(r.stderr.split())


def test_retrieve_dry_run_lists_patients_not_found(pacs_and_node):  # noqa: F811
    _, node, _ = pacs_and_node()
    r = node.cli("retrieve", "--from", "PACS", "--dry-run", "--patient-id", "COH2",
                 "--patient-id", "GHOST1", "--patient-id", "GHOST2")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "2 patient(s): GHOST1, GHOST2" in text and "not found on PACS" in text
    r = node.cli("retrieve", "--from", "PACS", "--dry-run", "--json", "--patient-id", "COH2",
                 "--patient-id", "GHOST1")
    assert '"event": "not_found", "patient_id": "GHOST1"' in r.stdout


def test_import_without_recursive_says_subfolders_were_skipped(tmp_path):
    from peers import write_config

    cfg = write_config(tmp_path)
    files = small_course(tmp_path / "data", "IMP1")
    top = files[0].parent
    (top / "more").mkdir()
    files[-1].rename(top / "more" / files[-1].name)
    r = rtnode("import", str(top), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "26 new" in r.stdout
    assert "1 subfolder(s)" in r.stdout and "--recursive" in r.stdout
    r = rtnode("import", str(top), "-r", "--config", str(cfg))
    assert "1 new" in r.stdout and "subfolder" not in r.stdout


def test_config_check_names_unknown_models_destinations_and_the_nearest_key(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.yaml").write_text(
        "rules:\n  - name: r1\n    models: [totalsegmentor:total]\n    destinations: [pacs2]\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("destinations:\n  pacs: {ae_title: PACS, host: 127.0.0.1, port: 104}\n")
    r = rtnode("config", "check", "--config", str(cfg))
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert "unknown destination 'pacs2' (did you mean 'pacs'?)" in err
    assert "unknown model 'totalsegmentor:total' (did you mean 'totalsegmentator'?)" in err
    cfg.write_text("dicom:\n  prot: 104\n")
    r = rtnode("config", "check", "--config", str(cfg))
    assert r.returncode == 2 and "config.yaml:2: dicom.prot: unknown key (did you mean " \
        "'port'?)" in r.stderr
    (tmp_path / "rules" / "a.yaml").write_text("rules:\n  - name: r1\n    destination: [x]\n")
    cfg.write_text("")
    r = rtnode("config", "check", "--config", str(cfg))
    assert "rules[0].destination: unknown key (did you mean 'destinations'?)" in r.stderr


def test_environment_override_errors_name_the_variable_not_the_file(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("dicom:\n  port: 104\n")
    for var, value in (("RTNODE_DICOM__PORT", "abc"), ("RTNODE_DICON__PORT", "11113"),
                       ("RTNODE_LOGGING__LEVL", "INFO")):
        r = rtnode("config", "check", "--config", str(cfg), env={var: value})
        assert r.returncode == 2
        assert f"environment {var}" in r.stderr and str(cfg) not in r.stderr, r.stderr


@pytest.mark.skipif(Path("/etc/rtnode/config.yaml").exists(),
                    reason="this host has a system config")
def test_status_says_when_it_runs_on_the_embedded_defaults(tmp_path):
    r = rtnode("status", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "running on the embedded defaults" in r.stdout
    from peers import write_config

    cfg = write_config(tmp_path / "site" if (tmp_path / "site").mkdir() is None else tmp_path)
    r = rtnode("status", "--config", str(cfg), cwd=tmp_path)
    assert "embedded defaults" not in r.stdout and str(cfg) in " ".join(r.stdout.split())
