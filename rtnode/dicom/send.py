"""Send-back: C-STORE SCU with retries, recording every attempt and the remote's status.

One attempt is one association carrying every file not yet stored. Network trouble (peer down,
association aborted) and "try later" statuses (0xA7xx Out of Resources, 0x0110 Processing
Failure) are retried after a growing pause; a permanent refusal (association rejected
permanently, SOP Class not supported, data set does not match, cannot understand, not
authorised) stops at once, because sending the same bytes again cannot change the answer.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pydicom
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ

from rtnode.dicom.scu import Peer
from rtnode.dicom.tls import tls_args

log = logging.getLogger(__name__)

#: success and warning statuses (PS3.4 B.2.3): the instance is stored
STORED = {0x0000, 0x0001, 0xB000, 0xB006, 0xB007}
#: failure statuses worth another attempt later
TRANSIENT = {0x0110, 0x0212, 0x0213}


def is_stored(status: int | None) -> bool:
    return status is not None and status in STORED


def is_transient(status: int | None) -> bool:
    """None (no response: network) and 0xA7xx (Out of Resources) are transient too."""
    return status is None or status in TRANSIENT or 0xA700 <= status <= 0xA7FF


@dataclass
class FileResult:
    path: str
    status: int | None
    comment: str = ""


@dataclass
class SendAttempt:
    """One association: when, the worst status seen (0 = all stored, None = no DICOM answer),
    the remote's ErrorComment or our network error, and each file's status."""

    number: int
    time: str
    status: int | None
    comment: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return sum(is_stored(f.status) for f in self.files)


@dataclass
class SendReport:
    """Everything about one send: the destination, every attempt, and the final word."""

    peer: str
    attempts: list[SendAttempt] = field(default_factory=list)
    ok: bool = False
    permanent: bool = False
    failed: list[FileResult] = field(default_factory=list)

    @property
    def status(self) -> int | None:
        """The last attempt's status (0 when everything was stored)."""
        return self.attempts[-1].status if self.attempts else None

    @property
    def reason(self) -> str:
        if self.ok:
            return f"stored at {self.peer}"
        last = self.attempts[-1] if self.attempts else None
        status = "no DICOM status" if last is None or last.status is None \
            else f"status 0x{last.status:04X}"
        kind = "refused permanently" if self.permanent else \
            f"failed after {len(self.attempts)} attempt(s)"
        return f"send to {self.peer} {kind}: {status}; {last.comment if last else ''}".strip()

    def raise_for_status(self) -> "SendReport":
        if not self.ok:
            raise SendError(self.reason, self)
        return self

    def to_json_dict(self) -> dict:
        return {"peer": self.peer, "ok": self.ok, "permanent": self.permanent,
                "status": self.status, "reason": self.reason,
                "attempts": [{"number": a.number, "time": a.time, "status": a.status,
                              "comment": a.comment, "stored": a.stored,
                              "files": [f.__dict__ for f in a.files]} for a in self.attempts]}


class SendError(ConnectionError):
    """A send that did not store everything; ``report`` holds every attempt."""

    def __init__(self, message: str, report: SendReport):
        super().__init__(message)
        self.report = report


def _contexts(paths: list[Path]) -> list[tuple[str, str]]:
    out = set()
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if "SOPClassUID" not in ds or "TransferSyntaxUID" not in ds.file_meta:
            raise ValueError(f"{p} is not a DICOM Part 10 file with a SOP Class")
        out.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    return sorted(out)


def _attempt(number: int, paths: list[Path], contexts: list[tuple[str, str]], peer: Peer,
             calling_ae: str, timeout: float) -> tuple[SendAttempt, bool]:
    """One association; returns the attempt and whether its failure is permanent."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    rejection: dict[str, object] = {}

    def on_pdu(event) -> None:  # keep the A-ASSOCIATE-RJ result, source and reason as read
        pdu = event.pdu
        if isinstance(pdu, A_ASSOCIATE_RJ) and pdu.result in (0x01, 0x02):
            rejection.update(result=pdu.result, text=f"{pdu.result_str}, source "
                             f"{pdu.source_str}, reason {pdu.reason_str}")

    try:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                             evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)],
                             tls_args=tls_args(peer.host))
    except Exception as exc:  # noqa: BLE001 - a failed connect must become a recorded attempt
        return SendAttempt(number, now, None, f"no association: {exc}"), False
    # an A-ASSOCIATE-RJ arrived: a peer that closes the connection right after it can leave
    # pynetdicom reporting an abort instead (the PDU read, never handed to its ACSE), which
    # must not turn a permanent refusal into retries
    if assoc.is_rejected or rejection:
        permanent = rejection.get("result") == 0x01
        return SendAttempt(number, now, None, f"association rejected by {peer}: "
                           f"{rejection.get('text', 'no reason given')}"), permanent
    if not assoc.is_established:
        return SendAttempt(number, now, None,
                           f"no association with {peer} (down or unreachable)"), False
    files: list[FileResult] = []
    try:
        for p in paths:
            try:
                rsp = assoc.send_c_store(p)
            except (ValueError, AttributeError) as exc:  # e.g. no accepted presentation context
                files.append(FileResult(str(p), 0x0122, f"not sent: {exc}"))
                continue
            if not rsp or "Status" not in rsp:  # aborted or timed out
                files.append(FileResult(str(p), None, "no C-STORE response (association lost)"))
                if not assoc.is_established:
                    break
                continue
            files.append(FileResult(str(p), int(rsp.Status), str(rsp.get("ErrorComment", ""))))
    finally:
        if assoc.is_established:
            assoc.release()
    failures = [f for f in files if not is_stored(f.status)]
    if len(files) < len(paths) and not failures:
        failures = [FileResult(str(paths[len(files)]), None, "association lost")]
    if not failures:
        return SendAttempt(number, now, 0, "", files), False
    worst = failures[0]
    permanent = all(not is_transient(f.status) for f in failures)
    return SendAttempt(number, now, worst.status,
                       worst.comment or f"{len(failures)} of {len(paths)} not stored",
                       files), permanent


def send_files(paths: Iterable[Path | str], peer: Peer, calling_ae: str = "RTNODE",
               retries: int = 3, backoff: float = 5.0, timeout: float = 30.0,
               sleep: Callable[[float], None] = time.sleep) -> SendReport:
    """C-STORE every file to peer; up to ``retries`` more attempts after the first, waiting
    backoff, 2·backoff, 4·backoff... seconds between them, each retry sending only what is not
    yet stored. Never raises for network trouble: read ``ok``/``reason`` or call
    ``raise_for_status()``."""
    pending = [Path(p) for p in paths]
    report = SendReport(peer=str(peer))
    if not pending:
        report.ok = True
        return report
    contexts = _contexts(pending)
    for number in range(1, retries + 2):
        attempt, permanent = _attempt(number, pending, contexts, peer, calling_ae, timeout)
        report.attempts.append(attempt)
        log.info("send %s attempt %d: status %s %s", peer, number,
                 "none" if attempt.status is None else f"0x{attempt.status:04X}",
                 attempt.comment)
        stored = {f.path for f in attempt.files if is_stored(f.status)}
        pending = [p for p in pending if str(p) not in stored]
        if not pending:
            report.ok = True
            return report
        if permanent:
            report.permanent = True
            break
        if number <= retries:
            sleep(backoff * 2 ** (number - 1))
    last = {f.path: f for f in report.attempts[-1].files}
    report.failed = [last.get(str(p), FileResult(str(p), report.status,
                                                 report.attempts[-1].comment)) for p in pending]
    return report
