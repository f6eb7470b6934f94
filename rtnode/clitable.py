"""Human tables for the CLI: one line per row at 80 columns, values as a person reads them.

UIDs are shortened to their distinguishing tail (``…0.1.2.3456``; ``--json`` keeps them whole),
times to minutes, lists joined with commas, booleans as yes/no — never a Python repr such as
``['CT']`` or ``True``. Cells that do not fit end in an ellipsis instead of wrapping, except
columns named in ``wrap`` (a failure reason is worth its lines).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from rich import box
from rich.table import Table

#: characters of a UID kept (its tail: UIDs of one site share their head)
UID_TAIL = 12

HEADERS = {
    "patient_id": "patient", "patient_name": "name", "study_date": "date",
    "study_uid": "study", "series_uid": "series", "sop_instance_uid": "instance",
    "series_number": "#", "instance_number": "#", "series_description": "description",
    "study_description": "description", "series_count": "series", "instance_count": "inst",
    "modality": "mod", "modalities": "mods", "last_received": "last received",
    "received_at": "received", "calling_ae": "from", "revision": "rev",
    "stages_summary": "stages", "started_at": "started", "finished_at": "finished",
    "created_at": "created", "timeout_s": "timeout", "attempts": "tries",
}


def short_uid(uid: str, keep: int = UID_TAIL) -> str:
    uid = str(uid)
    return uid if len(uid) <= keep + 1 else "…" + uid[-keep:]


def short_time(value: str) -> str:
    """ISO timestamp → 'YYYY-MM-DD HH:MM' (as stored, UTC); anything else unchanged."""
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return t.strftime("%Y-%m-%d %H:%M")


def cell(value: Any, column: str = "") -> str:
    """One value as a person reads it."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    if column.endswith("_uid") or column == "uid":
        return short_uid(text)
    if column.endswith("_at") or column == "last_received":
        return short_time(text)
    return text


def make_table(rows: list[dict[str, Any]], columns: list[str], title: str,
               wrap: Iterable[str] = ()) -> Table:
    wrap = set(wrap)
    table = Table(title=f"{title} ({len(rows)})", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1))
    for col in columns:
        if col in wrap:
            table.add_column(HEADERS.get(col, col), overflow="fold", ratio=1)
        else:
            table.add_column(HEADERS.get(col, col), no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*[cell(row.get(c), c) for c in columns])
    return table


def stage_summary(stages: list[dict[str, Any]]) -> str:
    """'5 done, 1 skipped, 1 failed' for a course's whole-stage runs."""
    counts: dict[str, int] = {}
    for s in stages:
        if not s.get("part"):
            counts[s["state"]] = counts.get(s["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "-"


def retention_line(r: dict[str, Any]) -> str:
    """The retention line of ``rtnode status``: the policy, the last pass, the last removal."""
    if not r.get("active"):
        text = "off (no rule set under retention:)"
    else:
        text = ", ".join(f"{k}={v:g}" for k, v in r["policy"].items() if v is not None)
    last, removal = r.get("last"), r.get("last_removal")
    if last:
        text += f"; last pass {short_time(last['at'])}"
        if last.get("pressure"):
            text += f" ({last['pressure']})"
    if removal:
        text += (f"; last removal {short_time(removal['at'])}: {removal['instances']} "
                 f"instance(s), {removal['bytes'] / 1024**2:.1f} MB, from "
                 f"{len(removal['removed'])} course(s)")
    return text
