"""report.html: one self-contained page (PNG images inlined as data URIs, no external links)
that tells a physicist at a glance whether the course is fit for analysis, and gives the
numbers behind it: who and what (patient, study, plan, prescription, fractions), every check,
the pictures, a DVH metrics table keyed by the same colours as the pictures, auto-vs-manual
agreement per pair and a radiomics summary. Times are local, with their UTC offset."""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from typing import Any

import pandas as pd

from rtnode.qc.checks import ORDER, Check
from rtnode.qc.dvh_source import value

COLOURS = {"pass": "#1e8e3e", "warn": "#e37400", "fail": "#d93025", "skip": "#80868b"}
VERDICT = {"pass": "Fit for analysis", "warn": "Usable, with warnings to review",
           "fail": "NOT fit for analysis until the failures are resolved"}
#: (report name, header) of the DVH metrics table; doses in Gy, volumes in cc or %
METRIC_HEADERS = [("volume_cc", "Volume (cc)"), ("dmean_gy", "Dmean"), ("d98_gy", "D98%"),
                  ("d95_gy", "D95%"), ("d50_gy", "D50%"), ("d2_gy", "D2%"),
                  ("d_0.03cc_gy", "D0.03cc"), ("dmax_gy", "Dmax")]
TARGET_HEADERS = [("v95_rx_pct", "V95%Rx (%)"), ("v100_rx_pct", "V100%Rx (%)"),
                  ("v107_rx_pct", "V107%Rx (%)")]
e = html.escape


def _img(png: bytes | None, alt: str, cls: str) -> str:
    if not png:
        return f"<p class='none'>{e(alt)}: not available</p>"
    data = base64.b64encode(png).decode("ascii")
    return f"<img class='{cls}' alt='{e(alt)}' src='data:image/png;base64,{data}'>"


def _num(v: Any, digits: int = 2) -> str:
    if v is None or isinstance(v, str):
        return e(v or "")
    try:
        f = float(v)
    except (TypeError, ValueError):
        return e(str(v))
    return "" if not math.isfinite(f) else f"{f:.{digits}f}"


def _date(v: Any) -> str:
    s = str(v or "")
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}" if len(s) == 8 and s.isdigit() else s


def header_facts(course) -> list[tuple[str, str]]:
    """(label, value) pairs for the top of the report, from the course's own datasets."""
    from rtnode.dvh.metrics import plan_prescription

    first = (course.images or course.doses or course.plans
             or [d for s in course.structure_sets.values() for d in s] or [None])[0]
    facts: list[tuple[str, str]] = []
    if first is not None:
        facts += [("Patient", f"{getattr(first, 'PatientName', '') or ''} "
                              f"({getattr(first, 'PatientID', '') or '?'})"),
                  ("Study date", _date(getattr(first, "StudyDate", ""))),
                  ("Study", str(getattr(first, "StudyDescription", "") or ""))]
    if course.images:
        d = course.images[0]
        facts.append(("Image series", f"{course.modality} {len(course.images)} slices, "
                                      f"{getattr(d, 'SeriesDescription', '') or ''} "
                                      f"({getattr(d, 'PatientPosition', '') or '?'})"))
    for plan in course.plans:
        rx, _ = plan_prescription(plan)
        fractions = [int(g.NumberOfFractionsPlanned)
                     for g in getattr(plan, "FractionGroupSequence", None) or []
                     if getattr(g, "NumberOfFractionsPlanned", None) not in (None, "")]
        n = sum(fractions) if fractions else None
        per = f", {rx / n:.2f} Gy per fraction" if rx and n else ""
        facts.append(("Plan", f"{getattr(plan, 'RTPlanLabel', '') or '?'}: prescription "
                              f"{f'{rx:g} Gy' if rx else 'unknown'}, "
                              f"{n if n else '?'} fraction(s){per}, "
                              f"{getattr(plan, 'ApprovalStatus', '') or ''}"))
    for d in course.doses:
        facts.append(("Dose", f"{getattr(d, 'DoseSummationType', '') or '?'} "
                              f"{getattr(d, 'DoseType', '') or ''} "
                              f"in {getattr(d, 'DoseUnits', '') or '?'}"))
    for k in ("course_id", "revision"):
        if course.ids.get(k) not in (None, ""):
            facts.append((k.replace("_", " ").capitalize(), str(course.ids[k])))
    return facts


def metrics_table(course, styles) -> str:
    """Every ROI of every source, one row each, keyed by its contour/DVH colour; DVH columns
    when the course has DVH tables. This table is also the legend of both figures."""
    tables = course.dvh_tables
    rows_by_key: dict[tuple[str, str], pd.Series] = {}
    dose_source = False
    if tables is not None and not tables.metrics.empty:
        for _, row in tables.metrics.iterrows():
            rows_by_key[(str(row.get("source", "manual")), str(row["roi_name"]))] = row
        dose_source = "dose_source" in tables.metrics.columns
    keys = list(styles) + [k for k in rows_by_key if k not in styles]
    is_target = {k: value(r, "prescription_gy") is not None for k, r in rows_by_key.items()}
    any_target = any(is_target.values())
    head = ["Colour", "ROI", "Source"] + [h for _, h in METRIC_HEADERS]
    if any_target:
        head += [h for _, h in TARGET_HEADERS]
    if dose_source:
        head.append("Dose source")
    out = ["<table id='roi-table' class='metrics'><tr>" +
           "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for key in keys:
        st = styles.get(key)
        row = rows_by_key.get(key)
        swatch = (f"<span class='swatch' style='background:{st.hex};"
                  f"{'border-style:dashed' if key[0] == 'auto' else ''}'></span>") if st else ""
        cells = [swatch, e(key[1]), e(key[0])]
        cells += [_num(value(row, k)) if row is not None else "" for k, _ in METRIC_HEADERS]
        if any_target:
            cells += [_num(value(row, k), 1) if row is not None and is_target.get(key) else ""
                      for k, _ in TARGET_HEADERS]
        if dose_source:
            cells.append(e(str(value(row, "dose_source") or "")) if row is not None else "")
        out.append(f"<tr class='roi' data-roi='{e(key[1])}' data-source='{e(key[0])}'>" +
                   "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    origin = tables.origin if tables is not None else "no DVH (no RTDOSE or no RTSTRUCT)"
    note = (f"<p class='note'>Doses in Gy; DVH numbers {e(origin)}. Dashed swatch: "
            "auto-segmentation. Colours are the RTSTRUCT's ROIDisplayColor where it has one.</p>")
    return "\n".join(out) + note


def agreement_table(checks: list[Check]) -> str:
    c = next((c for c in checks if c.id == "auto_vs_manual"), None)
    if c is None or not c.details:
        return f"<p class='none'>{e(c.reason if c else 'not checked')}</p>"
    rows = "".join(f"<tr><td>{e(str(d['auto']))}</td><td>{e(str(d['manual']))}</td>"
                   f"<td>{_num(d.get('dice'), 3)}</td><td>{_num(d.get('hd95_mm'), 1)}</td>"
                   f"<td>{_num(d.get('msd_mm'), 1)}</td></tr>" for d in c.details)
    return ("<table id='agreement'><tr><th>Auto ROI</th><th>Manual ROI</th><th>Dice</th>"
            f"<th>HD95 (mm)</th><th>Mean surface distance (mm)</th></tr>{rows}</table>")


def radiomics_summary(course) -> str:
    from rtnode.radiomics.tables import RADIOMICS_CSV, STATUS_CSV

    folder = getattr(course, "radiomics_dir", None)
    if folder is None or not (folder / STATUS_CSV).is_file():
        return "<p class='none'>No radiomics for this course (stage not run here).</p>"
    status = pd.read_csv(folder / STATUS_CSV)
    counts = status["state"].value_counts().to_dict() if "state" in status else {}
    n_features = 0
    if (folder / RADIOMICS_CSV).is_file():
        feats = pd.read_csv(folder / RADIOMICS_CSV, nrows=1)
        n_features = sum(c.startswith(("original_", "wavelet", "log-")) for c in feats.columns)
    lines = [f"<p id='radiomics'>{n_features} features per ROI; "
             + ", ".join(f"{n} {e(str(s))}" for s, n in sorted(counts.items())) + "</p>"]
    bad = status[status["state"] != "done"] if "state" in status else status.iloc[0:0]
    if len(bad):
        lines.append("<table><tr><th>ROI</th><th>Source</th><th>State</th><th>Reason</th></tr>"
                     + "".join(f"<tr><td>{e(str(r.roi_name))}</td><td>{e(str(r.source))}</td>"
                               f"<td>{e(str(r.state))}</td><td>{e(str(r.reason))}</td></tr>"
                               for r in bad.itertuples()) + "</table>")
    return "\n".join(lines)


def render_html(checks: list[Check], status: str, course, overlays: bytes | None,
                dvh: bytes | None, styles: dict) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in ("fail", "warn", "pass", "skip")}
    rows = "\n".join(
        f"<tr class='{c.status}'><td><span class='badge' style='background:{COLOURS[c.status]}'>"
        f"{c.status.upper()}</span></td><td>{e(c.title)}<br><code>{e(c.id)}</code></td>"
        f"<td>{e(c.reason)}</td></tr>"
        for c in sorted(checks, key=lambda c: ORDER[c.status]))
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in header_facts(course))
    summary = " · ".join(f"{n} {s}" for s, n in counts.items() if n)
    now = dt.datetime.now().astimezone()
    generated = now.strftime("%Y-%m-%d %H:%M %Z (UTC%z)")
    title_id = str(course.ids.get("patient_id", "") or "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>QC report {e(title_id)}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #202124; background: #fff; }}
.verdict {{ font-size: 22px; font-weight: bold; padding: 14px 18px; color: #fff;
           background: {COLOURS[status]}; border-radius: 6px; }}
table {{ border-collapse: collapse; width: 100%; margin: 16px 0; }}
td, th {{ border-bottom: 1px solid #dadce0; padding: 4px 8px; text-align: left;
          vertical-align: top; }}
table.facts {{ width: auto; }} table.facts th {{ padding-right: 24px; }}
table.metrics td {{ font-variant-numeric: tabular-nums; }}
.swatch {{ display: inline-block; width: 28px; height: 12px; border: 2px solid #5f6368; }}
.badge {{ color: #fff; padding: 2px 8px; border-radius: 4px; font-size: 12px; }}
img {{ max-width: 100%; border: 1px solid #dadce0; margin: 8px 0; }}
code {{ color: #5f6368; font-size: 11px; }}
.note, .none {{ color: #5f6368; font-size: 13px; }}
</style></head><body>
<h1>Course QC report</h1>
<table class="facts">{facts}</table>
<div class="verdict" id="verdict">{e(VERDICT[status])} — {e(summary)}</div>
<p class="note">Generated {e(generated)}</p>
<h2>Checks</h2>
<table id="checks"><tr><th>Status</th><th>Check</th><th>Reason</th></tr>
{rows}
</table>
<h2>Contours and dose</h2>
{_img(overlays, "contour overlays", "overlays")}
<h2>Dose-volume histograms</h2>
{_img(dvh, "DVH plot", "dvh")}
<h2>ROIs and DVH metrics</h2>
{metrics_table(course, styles)}
<h2>Auto vs manual contours</h2>
{agreement_table(checks)}
<h2>Radiomics</h2>
{radiomics_summary(course)}
</body></html>
"""
