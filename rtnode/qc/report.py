"""report.html: one self-contained page (PNG images inlined as data URIs, no external links)
that tells a physicist at a glance whether the course is fit for analysis."""

from __future__ import annotations

import base64
import datetime as dt
import html
from typing import Any

from rtnode.qc.checks import ORDER, Check

COLOURS = {"pass": "#1e8e3e", "warn": "#e37400", "fail": "#d93025", "skip": "#80868b"}
VERDICT = {"pass": "Fit for analysis", "warn": "Usable, with warnings to review",
           "fail": "NOT fit for analysis until the failures are resolved"}


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return f"<p class='none'>{html.escape(alt)}: not available</p>"
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def render_html(checks: list[Check], status: str, ids: dict[str, Any],
                overlays: bytes | None, dvh: bytes | None) -> str:
    e = html.escape
    counts = {s: sum(c.status == s for c in checks) for s in ("fail", "warn", "pass", "skip")}
    rows = "\n".join(
        f"<tr class='{c.status}'><td><span class='badge' style='background:{COLOURS[c.status]}'>"
        f"{c.status.upper()}</span></td><td>{e(c.title)}<br><code>{e(c.id)}</code></td>"
        f"<td>{e(c.reason)}</td></tr>"
        for c in sorted(checks, key=lambda c: ORDER[c.status]))
    ident = " · ".join(f"{e(str(k))}: {e(str(v))}" for k, v in ids.items() if v not in (None, ""))
    summary = " · ".join(f"{n} {s}" for s, n in counts.items() if n)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>QC report {e(str(ids.get('patient_id', '')))}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #202124; background: #fff; }}
.verdict {{ font-size: 22px; font-weight: bold; padding: 14px 18px; color: #fff;
           background: {COLOURS[status]}; border-radius: 6px; }}
table {{ border-collapse: collapse; width: 100%; margin: 16px 0; }}
td, th {{ border-bottom: 1px solid #dadce0; padding: 6px 8px; text-align: left;
          vertical-align: top; }}
.badge {{ color: #fff; padding: 2px 8px; border-radius: 4px; font-size: 12px; }}
img {{ max-width: 100%; border: 1px solid #dadce0; margin: 8px 0; }}
code {{ color: #5f6368; font-size: 11px; }}
</style></head><body>
<h1>Course QC report</h1>
<p>{ident}<br>generated {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>
<div class="verdict">{e(VERDICT[status])} — {e(summary)}</div>
<h2>Checks</h2>
<table><tr><th>Status</th><th>Check</th><th>Reason</th></tr>
{rows}
</table>
<h2>Contours and dose</h2>
{_img(overlays, "contour overlays")}
<h2>Dose-volume histograms</h2>
{_img(dvh, "DVH plot")}
</body></html>
"""
