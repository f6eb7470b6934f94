"""``rtnode segment``: auto-segment a CT folder into NIfTI masks and an RTSTRUCT, no node needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rtnode.cliconfig import ConfigFile, config_or_exit


def segment_command(
    ct_folder: Annotated[Path, typer.Argument(help="Folder holding one CT series (searched "
                                                   "recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: seg/*.nii.gz, "
                                                          "seg/labels.json, rtstruct_auto.dcm.")],
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="builtin:body, totalsegmentator:<task> or nnunet:<model folder>; "
                              "default segmentation.default_model.")] = None,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="cpu, cuda, cuda:N or mps; default the first of "
                         "segmentation.devices.")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="TotalSegmentator 3 mm models.")] = False,
    roi_subset: Annotated[Optional[list[str]], typer.Option(
        "--roi", help="TotalSegmentator: only this ROI (repeat for several).")] = None,
    totalseg_home: Annotated[Optional[Path], typer.Option(
        "--totalseg-home", help="TotalSegmentator weights/home folder.")] = None,
    config_file: ConfigFile = None,
) -> None:
    """Segment one CT series and write masks and an RTSTRUCT."""
    from rtnode.rtstruct.geometry import CTGeometryError
    from rtnode.segmentation.base import SegmentationError
    from rtnode.segmentation.ct import CTSeriesError
    from rtnode.segmentation.pipeline import segment_series
    from rtnode.segmentation.registry import ModelSpecError

    config = config_or_exit(config_file).segmentation
    updates = {"fast": fast or config.fast, "roi_subset": roi_subset or config.roi_subset,
               "totalseg_home": totalseg_home or config.totalseg_home}
    config = config.model_copy(update=updates)
    try:
        outputs = segment_series(ct_folder, out, spec=model, config=config, device=device)
    except (CTSeriesError, CTGeometryError, ModelSpecError, SegmentationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    result = outputs.result
    assert result is not None
    import numpy as np

    counts = np.bincount(result.labels.ravel(), minlength=max(result.names, default=0) + 1)
    for value, name in sorted(result.names.items()):
        typer.echo(f"{name:<32} {int(counts[value]):>10} voxels  {outputs.masks[name]}")
    typer.echo(f"{result.model}: {len(outputs.masks)} ROIs in {outputs.seconds:.1f} s; "
               f"RTSTRUCT {outputs.rtstruct}")
