"""``rtnode radiomics``: pyradiomics features of one course's files, without a running node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rtnode.cliconfig import ConfigFile, config_or_exit


def radiomics_command(
    path: Annotated[Path, typer.Argument(help="Folder of one course's DICOM files: the image "
                                              "series (CT, else MR) and RTSTRUCT(s).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file for the feature table "
                                                          "(one row per ROI and source).")],
    rtstruct: Annotated[Optional[list[Path]], typer.Option(
        "--rtstruct", help="RTSTRUCT file(s) to use instead of those found in PATH.")] = None,
    params: Annotated[Optional[Path], typer.Option(
        "--params", help="pyradiomics parameter file (default: the config's, else the shipped "
                         "one for the image modality).")] = None,
    config_file: ConfigFile = None,
) -> None:
    """Extract radiomics features of every ROI (ROIs one after the other in this process)."""
    from rtnode.radiomics.course import extract_course, folder_course
    from rtnode.radiomics.images import ImageSeriesError
    from rtnode.radiomics.params import ParamsError
    from rtnode.radiomics.tables import features_frame, status_frame, write_atomic

    config = config_or_exit(config_file).radiomics
    if params is not None:
        config = config.model_copy(update={"params_ct": params, "params_mr": params})
    try:
        course = folder_course(path, rtstruct or ())
        results = extract_course(course, config)
    except (FileNotFoundError, ImageSeriesError, ParamsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    patient = str(getattr(course.datasets[0], "PatientID", "") or "")
    frame = features_frame(results, {"patient_id": patient})
    write_atomic(frame, out)
    for r in results:
        if r.state != "done":
            typer.echo(f"{r.state}: {r.roi_name} ({r.source}): {r.reason}")
    status = out.with_name(out.stem + "_status.csv")
    write_atomic(status_frame(results), status)
    typer.echo(f"{len(frame)} ROI(s) written to {out}; status of every ROI in {status}")
    if any(r.state == "failed" for r in results):
        raise typer.Exit(code=1)
