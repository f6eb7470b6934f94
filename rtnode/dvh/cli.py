"""``rtnode dvh``: DVH metrics of one course folder, as a table, JSON, CSV or a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from rtnode.cliconfig import ConfigFile, config_or_exit
from rtnode.dvh.config import DVHConfig
from rtnode.dvh.errors import DVHInputError

SUMMARY_COLUMNS = ("roi_name", "source", "dose_source", "volume_cc", "dmean_gy", "dmin_gy", "dmax_gy",
                   "d98_gy", "d95_gy", "d50_gy", "d2_gy")


def dvh_command(
    path: Annotated[Path, typer.Argument(help="Folder of one course's DICOM files "
                                              "(found by modality).")],
    rtstruct: Annotated[Optional[Path], typer.Option(
        "--rtstruct", help="RTSTRUCT file to use instead of searching PATH.")] = None,
    rtdose: Annotated[Optional[list[Path]], typer.Option(
        "--rtdose", help="RTDOSE file; repeat for several (the dose plan decides what is "
                         "summed, docs/DVH.md).")] = None,
    rtplan: Annotated[Optional[list[Path]], typer.Option(
        "--rtplan", help="RTPLAN file (prescription, plan relationships) instead of searching "
                         "PATH; repeatable.")] = None,
    sum_roles: Annotated[Optional[list[str]], typer.Option(
        "--sum", help="Plan role added to the primary on a hint alone: boost (as a rule's "
                      "dose sum list does); repeatable.")] = None,
    engine: Annotated[Optional[str], typer.Option(
        "--engine", help="rtnode or dicompyler (dicompyler-core reference); default dvh.engine "
                         "of the config.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    csv: Annotated[Optional[Path], typer.Option(
        "--csv", help="Write the metrics table to this CSV file.")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Write the cumulative DVHs to this PNG file.")] = None,
    prescription: Annotated[Optional[float], typer.Option(
        "--prescription", help="Prescription dose in Gy (overrides the RTPLAN).")] = None,
    config_file: ConfigFile = None,
) -> None:
    """Compute DVHs and metrics for every ROI of a course."""
    from rtnode.dvh.compute import dvh_for_folder
    from rtnode.dvh.outputs import metrics_frame, plot_dvhs

    if engine not in (None, "rtnode", "dicompyler"):
        raise typer.BadParameter("engine must be rtnode or dicompyler", param_hint="--engine")
    if as_json and csv is not None:
        raise typer.BadParameter("use either --json or --csv", param_hint="--csv")
    config: DVHConfig = config_or_exit(config_file).dvh
    for role in sum_roles or []:
        if role != "boost":
            raise typer.BadParameter(f"{role!r}: the only role is boost", param_hint="--sum")
    overrides = {"engine": engine, "prescription_gy": prescription,
                 "sum": list(sum_roles) if sum_roles else None}
    config = config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    try:
        results = dvh_for_folder(path, rtstruct=rtstruct, rtdose=rtdose or None,
                                 rtplan=rtplan or None, config=config)
    except DVHInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    if plot is not None:
        plot_dvhs(results, plot)
    if as_json:
        typer.echo(json.dumps(results.to_json_dict(), indent=2))
        return
    frame = metrics_frame(results)
    if csv is not None:
        frame.to_csv(csv, index=False)
        typer.echo(f"{len(frame)} ROIs written to {csv} ({results.seconds:.2f} s)")
        return
    cols = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    typer.echo(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if results.dose_plan is not None and len(results.dose_plan.sources) > 1:
        typer.echo(f"dose plan: {results.dose_plan.describe()}")
    for note in results.notes:
        if results.dose_plan is None or note != results.dose_plan.describe():
            typer.echo(f"note: {note}")
    typer.echo(f"{results.engine}: {len(frame)} ROIs in {results.seconds:.2f} s")
