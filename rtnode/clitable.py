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


#: columns that share the width left by the others (free text, lists)
FLEXIBLE = {"patient_name", "series_description", "study_description", "description",
            "modalities", "stages_summary", "reason", "writes", "needs", "after", "uses",
            "action", "missing"}
#: the most a fixed column claims
FIXED_CAP = 20


def make_table(rows: list[dict[str, Any]], columns: list[str], title: str,
               wrap: Iterable[str] = (), width: int = 80) -> Table:
    """Fixed columns (ids, UIDs, counts, times) keep their natural width (up to FIXED_CAP);
    free-text columns share what is left of ``width``; nothing is cut at the right edge."""
    wrap = set(wrap)
    cells = [[cell(row.get(c), c) for c in columns] for row in rows]
    headers = [HEADERS.get(c, c) for c in columns]
    natural = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    flexible = [i for i, c in enumerate(columns) if c in FLEXIBLE or c in wrap]
    widths = {i: min(natural[i], FIXED_CAP) for i in range(len(columns)) if i not in flexible}
    # one space of padding and a one-space rule between columns, none at the edges
    overhead = 2 * len(columns) - 2
    budget = width - 1 - overhead - sum(widths.values())
    for n, i in enumerate(sorted(flexible, key=lambda i: natural[i])):
        share = max(6, budget // (len(flexible) - n))
        widths[i] = min(natural[i], share)
        budget -= widths[i]
    table = Table(title=f"{title} ({len(rows)})", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1, 0, 0), show_edge=False)
    for i, col in enumerate(columns):
        if col in wrap:
            table.add_column(headers[i], overflow="fold", width=widths[i])
        else:
            table.add_column(headers[i], no_wrap=True, overflow="ellipsis", width=widths[i])
    for r in cells:
        table.add_row(*r)
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
