"""``send``: the auto-contoured RTSTRUCT back to the PACS/TPS by C-STORE.

Destinations are the rule's (names under ``destinations:`` in the config); with none named,
the destination whose AE title is the course's sender, so results go back where the CT came
from. Every attempt and its DICOM status is kept in send.json; a transient failure is retried
with back-off, a permanent one fails the stage with the remote's status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rtnode.config import Config
from rtnode.stages.base import Stage, StageContext, StageSkipped, register
from rtnode.stages.rtstruct import RTSTRUCT_AUTO

REPORT = "send.json"


def destinations_for(config: Config, rule: dict[str, Any], calling_ae: str) -> list[str]:
    named = list(rule.get("destinations") or [])
    unknown = [n for n in named if n not in config.destinations]
    if unknown:
        raise ValueError(f"destination(s) {', '.join(unknown)} not in the config's "
                         f"destinations ({', '.join(sorted(config.destinations)) or 'none'})")
    if named:
        return named
    return [n for n, d in config.destinations.items() if d.ae_title == calling_ae]


def send_to(config: Config, files: list[Path], names: list[str]) -> list[dict[str, Any]]:
    """C-STORE files to each named destination; raises on a failed destination after every
    destination has been tried."""
    from rtnode.dicom.scu import Peer
    from rtnode.dicom.send import send_files

    reports, failed = [], []
    for name in names:
        d = config.destinations[name]
        report = send_files(files, Peer(d.ae_title, d.host, d.port),
                            calling_ae=config.dicom.ae_title, retries=config.send.retries,
                            backoff=config.send.backoff_seconds)
        reports.append({"destination": name, **report.to_json_dict()})
        if not report.ok:
            failed.append(f"{name}: {report.reason}")
    if failed:
        raise SendFailed("; ".join(failed), reports)
    return reports


class SendFailed(RuntimeError):
    def __init__(self, message: str, reports: list[dict[str, Any]]):
        super().__init__(message)
        self.reports = reports


def send_course(ctx: StageContext) -> None:
    source = ctx.upstream.get("rtstruct")
    rtstruct = source / RTSTRUCT_AUTO if source is not None else None
    if rtstruct is None or not rtstruct.exists():
        raise StageSkipped("nothing to send (no auto-contoured RTSTRUCT)")
    calling = min(ctx.members, key=lambda m: m.received_at).calling_ae if ctx.members else ""
    names = destinations_for(ctx.config, ctx.rule, calling)
    if not names:
        raise StageSkipped(f"no destination: the rule names none and no destination in the "
                           f"config has the sender's AE title {calling!r}")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        reports = send_to(ctx.config, [rtstruct], names)
    except SendFailed as exc:
        (ctx.out_dir / REPORT).write_text(json.dumps(exc.reports, indent=2))
        raise
    (ctx.out_dir / REPORT).write_text(json.dumps(reports, indent=2))


STAGE = register(Stage(
    name="send", queue="cpu", run=send_course, after=("rtstruct",), inputs=("CT",),
    writes=(REPORT,), timeout=600,
    description="C-STORE the auto RTSTRUCT to the rule's (or the sender's) destination"))
