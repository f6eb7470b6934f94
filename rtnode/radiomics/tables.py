"""radiomics.csv: one row per ROI and source, identifiers first, pyradiomics features after."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from rtnode.radiomics.extract import RoiResult

RADIOMICS_CSV = "radiomics.csv"
STATUS_CSV = "radiomics_status.csv"
ID_COLUMNS = ("course_id", "patient_id", "revision", "roi_name", "source", "voxels")


def features_frame(results: Iterable[RoiResult], ids: dict[str, Any]) -> pd.DataFrame:
    rows = [{**ids, **r.row()} for r in results if r.state == "done"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[c for c in ID_COLUMNS if c in ids or c not in
                                     ("course_id", "patient_id", "revision")])
    first = [c for c in ID_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]].sort_values(
        ["source", "roi_name"], kind="stable").reset_index(drop=True)


def status_frame(results: Iterable[RoiResult]) -> pd.DataFrame:
    return pd.DataFrame([r.status() for r in results],
                        columns=["roi_name", "source", "state", "reason", "voxels", "seconds"])


def write_atomic(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
