"""``rtnode qc``: QC of one course's files in a folder, without a running node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rtnode.cliconfig import ConfigFile, config_or_exit


def qc_command(
    path: Annotated[Path, typer.Argument(help="Folder of one course's DICOM files (found by "
                                              "modality; an RTSTRUCT whose ROIs are all "
                                              "AUTOMATIC counts as the auto-segmentation).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for qc.json and "
                                                          "report.html.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print qc.json to stdout.")] = False,
    config_file: ConfigFile = None,
) -> None:
    """Check a course (CT geometry, references, contours, dose, auto-segmentation) and write
    qc.json and report.html. Exit code 1 when a check failed."""
    import json

    from rtnode.qc.course import folder_course
    from rtnode.qc.run import REPORT_HTML, write_qc

    config = config_or_exit(config_file).qc
    try:
        course = folder_course(path)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    doc = write_qc(course, out, config)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
    else:
        for c in doc["checks"]:
            typer.echo(f"{c['status'].upper():5} {c['id']:22} {c['reason']}")
        typer.echo(f"{doc['status'].upper()}: report in {out / REPORT_HTML}")
    if doc["status"] == "fail":
        raise typer.Exit(code=1)
