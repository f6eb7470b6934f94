"""Files the ``dvh`` stage leaves in a course folder: metrics table, curves, picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rtnode.dvh.compute import DVHResults, merge_results

METRICS_CSV = "dvh_metrics.csv"
CURVES_PARQUET = "dvh_curves.parquet"
PLOT_PNG = "dvh.png"
DOSE_PLAN_JSON = "dose_plan.json"
#: ROIs beyond this many get no legend entry (an auto-segmentation has 100+)
LEGEND_LIMIT = 25


def _as_one(results: DVHResults | list[DVHResults]) -> DVHResults:
    return results if isinstance(results, DVHResults) else merge_results(list(results))


#: decimals kept in dvh_metrics.csv: 0.1 mGy, 0.1 mm³, 0.0001 % — below any clinical meaning,
#: above the engine's own noise
DECIMALS = 4
#: columns that lead the table, in this order; the metrics follow
LEADING = ("roi_number", "roi_name", "interpreted_type", "source", "dose_source", "course_dose")


def metrics_frame(results: DVHResults | list[DVHResults]) -> pd.DataFrame:
    """One row per ROI, structure set source (manual or auto) and dose source, rounded to
    ``DECIMALS``; every column name carries its unit (_gy, _cc, _pct) or is unitless."""
    frame = pd.DataFrame(_as_one(results).metrics)
    if frame.empty:
        return frame
    lead = [c for c in LEADING if c in frame.columns]
    frame = frame[lead + [c for c in frame.columns if c not in lead]]
    floats = frame.select_dtypes(include="float").columns
    frame[floats] = frame[floats].round(DECIMALS)
    return frame


def curves_frame(results: DVHResults | list[DVHResults]) -> pd.DataFrame:
    """Long table of cumulative DVHs: one row per ROI, source and dose bin edge (edges below
    the ROI's minimum dose, where the curve is flat at 100 %, are reduced to dose 0 and the last
    flat edge)."""
    parts = []
    for r in _as_one(results).rois:
        dvh = r.dvh
        volume, doses = dvh.volume_cc, dvh.doses
        # below Dmin the curve is flat at the full volume: keep dose 0 and the last flat edge
        flat = int(np.searchsorted(-volume, -volume[0], side="right"))
        keep = np.r_[0, np.arange(max(flat - 1, 1), volume.size)] if volume.size > 1 else \
            np.arange(volume.size)
        pct = (100.0 * volume[keep] / r.covered_cc if r.covered_cc > 0
               else np.zeros(keep.size))
        parts.append(pd.DataFrame({
            "roi_number": np.int32(r.roi_number), "roi_name": r.roi_name, "source": r.source,
            "dose_source": r.dose_source, "engine": r.engine, "dose_gy": doses[keep], "volume_cc": volume[keep],
            "volume_pct": pct}))
    if not parts:
        return pd.DataFrame(columns=["roi_number", "roi_name", "source", "dose_source",
                                     "engine", "dose_gy", "volume_cc", "volume_pct"])
    frame = pd.concat(parts, ignore_index=True)
    for col in ("roi_name", "source", "dose_source", "engine"):
        frame[col] = frame[col].astype("category")
    return frame


def dvh_figure(results: DVHResults | list[DVHResults]):
    """The figure of dvh.png: cumulative DVHs (volume % vs dose) of every non-empty ROI of the
    course dose (else of each dose), each ROI in its ROIDisplayColor (the QC report's colours;
    ROIs without one get a palette colour that does not repeat), auto ROIs dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rtnode.colours import distinct_colours

    one = _as_one(results)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=100)
    course = one.dose_plan.course if one.dose_plan is not None else None
    labels = list(dict.fromkeys(r.dose_source for r in one.rois))
    shown = [course.label] if course is not None else labels  # the course dose, else each
    drawn = [r for r in one.rois if r.covered_cc > 0 and (r.dose_source in shown
                                                           or not r.dose_source)]
    uncoloured = list(dict.fromkeys((r.source, r.roi_name) for r in drawn
                                    if r.display_color is None))
    palette = dict(zip(uncoloured, distinct_colours(len(uncoloured))))
    for r in drawn:
        style = "--" if r.source == "auto" else "-"
        suffix = f", {r.dose_source}" if len(shown) > 1 else ""
        colour = tuple(v / 255.0 for v in r.display_color) if r.display_color is not None \
            else palette[(r.source, r.roi_name)]
        ax.plot(r.dvh.doses, 100.0 * r.dvh.volume_cc / r.covered_cc, style, lw=1.0,
                color=colour, label=f"{r.roi_name} ({r.source}{suffix})")
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_ylim(0, 101)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    title = f"Cumulative DVH ({one.engine})" + (f", {shown[0]}" if len(shown) == 1 and shown[0]
                                                  else "")
    if one.prescription_gy:
        ax.axvline(one.prescription_gy, color="k", lw=0.8, ls=":")
        title += f", prescription {one.prescription_gy:g} Gy"
    ax.set_title(title)
    if 0 < len(drawn) <= LEGEND_LIMIT:
        ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig


def plot_dvhs(results: DVHResults | list[DVHResults], path: Path | str) -> Path:
    """dvh.png (``dvh_figure``) written to path."""
    import matplotlib.pyplot as plt

    fig = dvh_figure(results)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_course_outputs(results: DVHResults | list[DVHResults],
                         out_dir: Path | str) -> dict[str, Path]:
    """Write dvh_metrics.csv, dvh_curves.parquet, dvh.png and dose_plan.json (the dose plan,
    with its words) into out_dir; returns their paths.

    results: one DVHResults, or one per structure set (manual and auto) — rows carry ``source``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / METRICS_CSV, "curves": out / CURVES_PARQUET, "plot": out / PLOT_PNG,
             "dose_plan": out / DOSE_PLAN_JSON}
    one = _as_one(results)
    plan = one.dose_plan.as_json() if one.dose_plan is not None else {"words": "no dose plan"}
    paths["dose_plan"].write_text(json.dumps(plan, indent=2), encoding="utf-8")
    metrics_frame(results).to_csv(paths["metrics"], index=False)
    curves_frame(results).to_parquet(paths["curves"], index=False)
    plot_dvhs(results, paths["plot"])
    return paths
