"""``rtnode delete course|study|series|patient``: a dry run by default, ``--yes`` to act.

The dry run prints exactly what would go (instances, bytes, courses and their output folders);
``--yes`` carries out that plan (rtnode/store/delete.py), records a ``deleted`` audit event and
says what went. A course with a stage queued or running is refused, as is an unknown selection.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from rtnode.cliconfig import ConfigFile, config_or_exit

delete_app = typer.Typer(no_args_is_help=True, help="Delete a course, study, series or patient "
                         "(dry run unless --yes).")
out = Console()
err = Console(stderr=True)

Yes = Annotated[bool, typer.Option("--yes", help="Delete; without it, only show what would go.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the plan (and outcome) as JSON.")]


def _run(kind: str, key, yes: bool, as_json: bool, config_file: Optional[Path]) -> None:
    from rtnode.store.delete import DeleteRefused, Deleter
    from rtnode.store.index import index_exists, open_index

    cfg = config_or_exit(config_file)
    if not index_exists(cfg):
        err.print(f"[bold red]error:[/] no index under {cfg.storage_root}: nothing to delete",
                  highlight=False)
        raise typer.Exit(2)
    index = open_index(cfg)
    try:
        deleter = Deleter(index, cfg.storage_root)
        plan = getattr(deleter, f"plan_{kind}")(key)
        busy = deleter.busy_courses(plan.courses)
        if busy:
            raise DeleteRefused(f"a stage of course {', '.join(map(str, busy))} is queued or "
                                f"running; wait for it (or `rtnode cancel` it) and try again")
        data = plan.as_json()
        if not yes:
            if as_json:
                sys.stdout.write(json.dumps({**data, "dry_run": True}, indent=2) + "\n")
            else:
                _describe(data, "would delete")
                out.print("dry run: nothing deleted; add --yes to delete")
            return
        summary = deleter.execute(plan, by="cli")
    except DeleteRefused as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        index.close()
    if as_json:
        sys.stdout.write(json.dumps({**summary, "dry_run": False}, indent=2) + "\n")
    else:
        _describe(summary, "deleted")


def _describe(data: dict, verb: str) -> None:
    mods = ", ".join(f"{n} {m}" for m, n in sorted(data["modalities"].items())) or "no instances"
    out.print(f"{verb} {data['what']}: {data['instances']} instance(s) ({mods}), "
              f"{data['bytes'] / 1024**2:.1f} MB", highlight=False)
    if data["courses"]:
        out.print(f"  course(s): {', '.join(map(str, data['courses']))}"
                  + (" (rows and outputs kept)" if data["keep_outputs"] else
                     " (rows and outputs)"), highlight=False)
    for d in data["output_dirs"]:
        out.print(f"  outputs: {d}", highlight=False)


@delete_app.command("course")
def delete_course(course_id: Annotated[int, typer.Argument(help="Course id (rtnode courses).")],
                  yes: Yes = False, as_json: AsJson = False,
                  config_file: ConfigFile = None) -> None:
    """A course: its instances, the auto RTSTRUCTs filed for it, its rows and outputs."""
    _run("course", course_id, yes, as_json, config_file)


@delete_app.command("study")
def delete_study(study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID.")],
                 yes: Yes = False, as_json: AsJson = False,
                 config_file: ConfigFile = None) -> None:
    """A study, and every course with a member in it."""
    _run("study", study_uid, yes, as_json, config_file)


@delete_app.command("series")
def delete_series(series_uid: Annotated[str, typer.Argument(help="SeriesInstanceUID.")],
                  yes: Yes = False, as_json: AsJson = False,
                  config_file: ConfigFile = None) -> None:
    """A series, and every course with a member in it."""
    _run("series", series_uid, yes, as_json, config_file)


@delete_app.command("patient")
def delete_patient(patient_id: Annotated[str, typer.Argument(help="PatientID.")],
                   yes: Yes = False, as_json: AsJson = False,
                   config_file: ConfigFile = None) -> None:
    """Everything held for a patient: instances, courses and outputs."""
    _run("patient", patient_id, yes, as_json, config_file)
