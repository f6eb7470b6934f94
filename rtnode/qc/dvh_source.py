"""The DVHs QC shows and judges: the dvh stage's own outputs when it wrote them, computed here
only when they are absent (``rtnode qc`` on a folder, or a rule without the dvh stage).

Reading dvh_metrics.csv / dvh_curves.parquet instead of recomputing keeps one source of truth
for the numbers (the report shows exactly what the stage exported) and saves the DVH time.
Column names are looked up through :data:`METRIC_COLUMNS`, so both the older names
(``d_0.03cc``) and the ``_gy``-suffixed ones (``d_0.03cc_gy``) are understood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from rtnode.dvh.outputs import CURVES_PARQUET, METRICS_CSV

#: what the report shows -> the column names it may have in dvh_metrics.csv, newest first
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "volume_cc": ("volume_cc",),
    "covered_cc": ("covered_cc",),
    "dose_coverage": ("dose_coverage",),
    "dmean_gy": ("dmean_gy",),
    "dmin_gy": ("dmin_gy",),
    "dmax_gy": ("dmax_gy",),
    "d98_gy": ("d98_gy",),
    "d95_gy": ("d95_gy",),
    "d50_gy": ("d50_gy",),
    "d2_gy": ("d2_gy",),
    "d_0.03cc_gy": ("d_0.03cc_gy", "d_0.03cc"),
    "d_1cc_gy": ("d_1cc_gy", "d_1cc"),
    "prescription_gy": ("prescription_gy",),
    "v95_rx_pct": ("v95_rx_pct",),
    "v100_rx_pct": ("v100_rx_pct",),
    "v107_rx_pct": ("v107_rx_pct",),
    "hi": ("hi",),
    "ci": ("ci",),
    "dose_source": ("dose_source",),
    "interpreted_type": ("interpreted_type",),
    "roi_number": ("roi_number",),
    "empty": ("empty",),
}


def column(frame: pd.DataFrame, key: str) -> str | None:
    """The column of ``frame`` holding metric ``key`` under any of its known names."""
    for name in METRIC_COLUMNS.get(key, (key,)):
        if name in frame.columns:
            return name
    return None


def value(row: pd.Series | dict[str, Any], key: str) -> Any:
    """A metric of one row by its report name (None when the table lacks it)."""
    for name in METRIC_COLUMNS.get(key, (key,)):
        if name in row and not _missing(row[name]):
            return row[name]
    return None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


@dataclass
class StoredCurve:
    """A cumulative DVH read back from dvh_curves.parquet (the shape tps.compare needs)."""

    doses: np.ndarray
    volume_cc: np.ndarray


@dataclass
class StoredRoi:
    """One ROI row of the dvh stage's outputs, with the attributes the dose checks read."""

    roi_number: int
    roi_name: str
    interpreted_type: str
    source: str
    volume_cc: float
    covered_cc: float
    dmean_gy: float
    dvh: StoredCurve
    dose_source: str = ""

    @property
    def coverage(self) -> float:
        return self.covered_cc / self.volume_cc if self.volume_cc > 0 else 0.0

    @property
    def is_empty(self) -> bool:
        return self.volume_cc <= 0


@dataclass
class StoredResults:
    """The manual-structure-set part of the dvh stage's outputs, shaped like DVHResults."""

    rois: list[StoredRoi] = field(default_factory=list)
    tps_comparison: list[dict[str, Any]] = field(default_factory=list)
    #: None: the dose checks decide the plan from the RTPLAN/RTDOSE headers themselves
    dose_plan: Any = None


@dataclass
class DVHTables:
    """Metrics (one row per ROI and source) and long-form cumulative curves, and where they
    came from ("dvh stage" or "computed by QC")."""

    metrics: pd.DataFrame
    curves: pd.DataFrame
    origin: str
    prescription_gy: float | None = None


def read_stage_outputs(folder: Path | None) -> DVHTables | None:
    """The dvh stage's tables in ``folder``; None when either file is absent."""
    if folder is None:
        return None
    metrics, curves = Path(folder) / METRICS_CSV, Path(folder) / CURVES_PARQUET
    if not metrics.is_file() or not curves.is_file():
        return None
    m = pd.read_csv(metrics)
    c = pd.read_parquet(curves)
    for col in ("roi_name", "source"):
        if col in c.columns:
            c[col] = c[col].astype(str)
    rx_col = column(m, "prescription_gy")
    rx = pd.to_numeric(m[rx_col], errors="coerce").dropna() if rx_col else pd.Series([])
    return DVHTables(m, c, "dvh stage", float(rx.max()) if len(rx) else None)


def stored_results(tables: DVHTables, doses: Iterable[Any]) -> list[StoredResults]:
    """The manual ROIs of the stage's tables for the dose checks; the TPS comparison is made
    against the RTDOSE's DVHSequence when the course has one RTDOSE (as the DVH engine does)."""
    from rtnode.dvh.tps import compare_with_tps

    m = tables.metrics
    if "source" in m.columns:
        m = m[m["source"].astype(str) == "manual"]
    if "course_dose" in m.columns:
        # the dvh stage reports every dose source; the checks judge the course's dose
        chosen = m["course_dose"].astype(str).str.lower().isin(("true", "1"))
        if chosen.any():
            m = m[chosen]
    c = tables.curves
    if "dose_source" in c.columns:
        c = c.assign(dose_source=c["dose_source"].astype(object).where(
            c["dose_source"].notna(), "").astype(str))
    by = ["roi_name", "source"] + (["dose_source"] if "dose_source" in c.columns else [])
    curves = {tuple(str(v) for v in (k if isinstance(k, tuple) else (k,))): g
              for k, g in c.groupby(by, observed=True)}
    rois = []
    for _, row in m.iterrows():
        name = str(row["roi_name"])
        source = str(value(row, "dose_source") or "")
        g = curves.get((name, "manual", source) if len(by) == 3 else (name, "manual"))
        curve = StoredCurve(np.asarray(g["dose_gy"], float), np.asarray(g["volume_cc"], float)) \
            if g is not None else StoredCurve(np.zeros(0), np.zeros(0))
        rois.append(StoredRoi(
            roi_number=int(value(row, "roi_number") or 0), roi_name=name,
            interpreted_type=str(value(row, "interpreted_type") or ""), source="manual",
            volume_cc=float(value(row, "volume_cc") or 0.0),
            covered_cc=float(value(row, "covered_cc") or 0.0),
            dmean_gy=float(value(row, "dmean_gy") or math.nan), dvh=curve, dose_source=source))
    doses = list(doses)
    sequence = list(getattr(doses[0], "DVHSequence", None) or []) if len(doses) == 1 else []
    return [StoredResults(rois, compare_with_tps(sequence, rois) if sequence else [])]


def computed_tables(results: list[Any]) -> DVHTables:
    """Tables in the dvh stage's form from DVHResults computed by QC itself."""
    from rtnode.dvh.outputs import curves_frame, metrics_frame

    c = curves_frame(results)
    for col in ("roi_name", "source"):
        if col in c.columns:
            c[col] = c[col].astype(str)
    rx = next((r.prescription_gy for r in results if r.prescription_gy), None)
    return DVHTables(metrics_frame(results), c, "computed by QC", rx)
