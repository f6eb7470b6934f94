"""No rtnode command answers a bad path or a wrong-modality file with a traceback: each ends
with a non-zero exit code and one line naming the file. Every command that takes a path is run
(the table below must cover each; a new command with a path fails the coverage test until it is
added), as a real process, so log output is checked too."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer

from rtnode.cli import app
from rtnode.phantom.qc_course import Defects, write_qc_course

CLEAN = Defects(False, False, False, False)


def path_parameters() -> dict[str, list[str]]:
    """command name -> its parameters typed Path (or a list/Optional of Path), --config aside."""
    out: dict[str, list[str]] = {}

    def visit(t: typer.Typer, prefix: str) -> None:
        for cmd in t.registered_commands:
            fn = inspect.unwrap(cmd.callback)
            hints = typing.get_type_hints(fn)
            names = [n for n, h in hints.items()
                     if n not in ("config", "config_file", "return") and "Path" in str(h)]
            name = prefix + (cmd.name or fn.__name__.replace("_", "-"))
            if names:
                out[name] = names
        for g in t.registered_groups:
            visit(g.typer_instance, prefix + g.name + " ")

    visit(app, "")
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_errors")
    course = root / "course"
    paths = write_qc_course(course, CLEAN, patient_id="PA")
    write_qc_course(root / "two" / "a", CLEAN, patient_id="PA")
    write_qc_course(root / "two" / "b", CLEAN, patient_id="PB")
    (root / "notes.txt").write_text("not DICOM\n")
    (root / "empty").mkdir()
    (root / "config.yaml").write_text(
        f"storage:\n  root: {root / 'storage'}\nremotes:\n  PACS: {{ae_title: PACS, "
        "host: 127.0.0.1, port: 1}\n")
    by_mod = {p.name.split("_")[0]: p for p in paths}
    return {"root": root, "course": course, "rtdose": by_mod["RTDOSE"],
            "rtplan": by_mod["RTPLAN"], "rtstruct": by_mod["RTSTRUCT"],
            "notes": root / "notes.txt", "two": root / "two", "empty": root / "empty",
            "missing": root / "no" / "such.dcm", "config": root / "config.yaml"}


def cases(f: dict[str, Path]) -> list[tuple[str, list[str], Path]]:
    """(command, argv after 'rtnode', the path the message must name)."""
    c, out = f["course"], str(f["root"] / "out")
    miss, notes = f["missing"], f["notes"]
    return [
        ("dvh", ["dvh", str(miss)], miss),
        ("dvh", ["dvh", str(c), "--rtplan", str(f["rtdose"])], f["rtdose"]),
        ("dvh", ["dvh", str(c), "--rtdose", str(notes)], notes),
        ("dvh", ["dvh", str(c), "--rtstruct", str(miss)], miss),
        ("dvh", ["dvh", str(c), "--rtstruct", str(f["rtplan"])], f["rtplan"]),
        ("dvh", ["dvh", str(c), "--csv", str(miss)], miss.parent),
        ("dvh", ["dvh", str(c), "--plot", str(f["root"] / "no" / "p.png")],
         f["root"] / "no" / "p.png"),
        ("qc", ["qc", str(miss), "-o", out], miss),
        ("qc", ["qc", str(f["two"]), "-o", out], f["two"]),
        ("qc", ["qc", str(f["rtdose"]), "-o", out], f["rtdose"]),
        ("radiomics", ["radiomics", str(miss), "-o", out + ".csv"], miss),
        ("radiomics", ["radiomics", str(c), "-o", out + ".csv", "--rtstruct",
                       str(f["rtdose"])], f["rtdose"]),
        ("radiomics", ["radiomics", str(c), "-o", out + ".csv", "--params", str(miss)], miss),
        ("segment", ["segment", str(miss), "-o", out], miss),
        ("segment", ["segment", str(f["empty"]), "-o", out], f["empty"]),
        ("segment", ["segment", str(c), "-o", out, "--model", "nnunet:" + str(miss)], miss),
        ("import", ["import", str(miss)], miss),
        ("export", ["export", "-c", str(f["config"]), "-o", str(f["root"] / "no" / "x.csv")],
         f["root"] / "storage"),
        ("retrieve", ["retrieve", "-c", str(f["config"]), "--from", "PACS", "--patients",
                      str(miss)], miss),
    ]


def run_rtnode(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rtnode", *argv], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


def test_the_table_covers_every_command_taking_a_path(files):
    covered = {name for name, _, _ in cases(files)}
    assert set(path_parameters()) <= covered, set(path_parameters()) - covered


def test_bad_paths_and_wrong_modalities_end_in_one_line(files):
    failures = []
    for name, argv, named in cases(files):
        r = run_rtnode(argv, files["root"])
        text = r.stdout + r.stderr
        ok = (r.returncode != 0 and "Traceback" not in text
              and (str(named) in text or named.name in text))
        if not ok:
            failures.append(f"rtnode {' '.join(argv)} -> {r.returncode}\n{text[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_every_command_names_a_missing_config_file(files):
    """--config given a path that does not exist, on every command that takes it."""
    from typer.testing import CliRunner

    missing = files["root"] / "nowhere.yaml"
    runner = CliRunner()
    names = []

    def visit(t: typer.Typer, prefix: list[str]) -> None:
        for cmd in t.registered_commands:
            fn = inspect.unwrap(cmd.callback)
            if {"config", "config_file"} & set(inspect.signature(fn).parameters):
                names.append(prefix + [cmd.name or fn.__name__.replace("_", "-")])
        for g in t.registered_groups:
            visit(g.typer_instance, prefix + [g.name])

    visit(app, [])
    assert len(names) > 15
    for argv in names:
        r = runner.invoke(app, [*argv, "--config", str(missing)])
        assert r.exit_code != 0 and "Traceback" not in r.output, (argv, r.output)
        assert isinstance(r.exception, SystemExit), (argv, r.exception)
