"""Addressing a peer and C-ECHO; C-STORE is in send.py, C-FIND/C-MOVE in qr.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from rtnode.dicom.tls import tls_args

_ADDRESS = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


class AddressError(ValueError):
    """An AE@HOST:PORT string that does not parse."""


@dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """'PACS@10.0.0.5:104' → Peer; the error says what the form must be."""
    m = _ADDRESS.match(text.strip())
    if not m or not (1 <= int(m["port"]) <= 65535):
        raise AddressError(f"{text!r} is not AE@HOST:PORT (for example ORTHANC@127.0.0.1:4242)")
    return Peer(m["ae"], m["host"], int(m["port"]))


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    status: int | None
    detail: str


def echo(peer: Peer, calling_ae: str = "RTNODE", timeout: float = 10.0) -> EchoResult:
    """One association, one C-ECHO, released; never raises for network trouble."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                         tls_args=tls_args(peer.host))
    if assoc.is_rejected:
        return EchoResult(False, None, f"association rejected by {peer}")
    if not assoc.is_established:
        return EchoResult(False, None, f"no association with {peer} (down or unreachable)")
    try:
        rsp = assoc.send_c_echo()
    finally:
        assoc.release()
    status = int(rsp.Status) if rsp and "Status" in rsp else None
    if status == 0:
        return EchoResult(True, 0, f"{peer} answered C-ECHO")
    return EchoResult(False, status, f"C-ECHO to {peer} got no success status")
