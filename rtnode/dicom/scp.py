"""The DICOM listener: Verification and Storage SCP over pynetdicom.

Each C-STORE hands the encoded data set, untouched, to the archive — no decode and re-encode on
the hot path — and answers with whatever status the archive decided. Association-level policy
(allowed callers, association limit, PDU size, timeouts) is pynetdicom's own, configured here;
what keeps a hostile or broken peer from holding the node (pending connections, bounded reads,
PDU and instance size, an answer to every request) is in ``guard.py``, TLS in ``tls.py``.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from rtnode.config import DicomConfig
from rtnode.dicom.guard import ListenerAE, ListenerLimits, start_guarded_server
from rtnode.dicom.status import StoreStatus
from rtnode.dicom.tls import server_context
from rtnode.store.archive import Archive

log = logging.getLogger("rtnode.dicom")

#: ErrorComment is LO: at most 64 characters
ERROR_COMMENT_MAX = 64


def _store_status(status: int, reason: str) -> Dataset:
    rsp = Dataset()
    rsp.Status = status
    if reason:
        rsp.ErrorComment = reason[:ERROR_COMMENT_MAX]
    return rsp


class StorageSCP:
    """One listening socket; ``start`` returns at once, ``stop`` drains in-flight associations."""

    def __init__(self, dicom: DicomConfig, archive: Archive, base_dir: Path | None = None,
                 qr: Any = None):
        self.config = dicom
        self.archive = archive
        self.base_dir = base_dir or Path.cwd()
        self.qr = qr  # dicom/qrscp.QueryRetrieveSCP: C-FIND/C-MOVE/C-GET over what we hold
        self.ae = self._build_ae()
        self._server: Any = None
        self.stored = 0
        self._count_lock = threading.Lock()
        self._pinned = self._resolve_pins()

    def _resolve_pins(self) -> dict[str, set[str]]:
        """caller_hosts as sets of addresses (host names resolved once, at start)."""
        pins: dict[str, set[str]] = {}
        for ae_title, hosts in self.config.caller_hosts.items():
            addresses: set[str] = set()
            for host in hosts:
                addresses.add(host)
                try:
                    addresses.update(socket.gethostbyname_ex(host)[2])
                except OSError:
                    log.warning("dicom.caller_hosts.%s: cannot resolve %r", ae_title, host)
            pins[ae_title] = addresses
        return pins

    def _build_ae(self) -> ListenerAE:
        c = self.config
        ae = ListenerAE(ae_title=c.ae_title)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.maximum_pdu_size = c.max_pdu
        ae.maximum_associations = c.max_associations
        ae.acse_timeout = c.acse_timeout
        ae.dimse_timeout = c.dimse_timeout
        ae.network_timeout = c.network_timeout
        ae.require_calling_aet = list(c.allowed_callers)
        # A peer that addresses another AE title is talking to the wrong node: reject it.
        ae.require_called_aet = True
        if self.qr is not None:
            self.qr.add_contexts(ae)
        return ae

    # -- event handlers ------------------------------------------------------------------------

    def _on_echo(self, event: evt.Event) -> int:
        log.debug("C-ECHO from %s", event.assoc.requestor.ae_title)
        return 0x0000

    def _on_store(self, event: evt.Event) -> Dataset:
        assoc = event.assoc
        request = event.request
        try:
            # A C-STORE sub-operation of a C-MOVE we asked for names us as its move originator:
            # that instance was retrieved for a cohort, not sent to us for clinical work.
            originator = str(request.MoveOriginatorApplicationEntityTitle or "").strip()
            origin = "retrieved" if originator == self.config.ae_title else "received"
            outcome = self.archive.file_instance(
                event.file_meta, request.DataSet.getvalue(),
                calling_ae=assoc.requestor.ae_title, called_ae=assoc.acceptor.ae_title,
                origin=origin, expected_sop_uid=str(request.AffectedSOPInstanceUID or ""),
                expected_sop_class=str(request.AffectedSOPClassUID or ""))
        except Exception as exc:  # the archive answers everything; this is the last guard
            log.exception("filing failed unexpectedly")
            return _store_status(StoreStatus.OUT_OF_RESOURCES,
                                 f"internal error: {type(exc).__name__}")
        if outcome.ok:
            with self._count_lock:
                self.stored += 1
        return _store_status(outcome.status, outcome.reason)

    def refuse_request(self, assoc: Any, status: int, reason: str, sop_uid: str) -> None:
        """A C-STORE request refused before its data set reached the archive (guard.py)."""
        self.archive.refuse(status, reason, sop_uid, assoc.requestor.ae_title)

    def _on_abuse(self, address: str, why: str) -> None:
        self.archive.record_event("connection_dropped", detail=f"{address}: {why}")

    def _on_requested(self, event: evt.Event) -> None:
        """Pin AE titles to hosts (dicom.caller_hosts) before the association is negotiated."""
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        allowed = self._pinned.get(calling)
        if allowed is None or assoc.requestor.address in allowed:
            return
        assoc._rtnode_why = (f"calling AE {calling} may only call from "
                             f"{', '.join(sorted(self.config.caller_hosts[calling]))}")
        assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, calling AE title not recognised
        assoc.is_rejected = True
        self._on_rejected(event)
        assoc.kill()

    def _on_rejected(self, event: evt.Event) -> None:
        assoc = event.assoc
        rq = assoc.requestor
        calling = rq.ae_title
        called = str(getattr(rq.primitive, "called_ae_title", "") or "").strip()
        if getattr(assoc, "_rtnode_why", ""):
            why = assoc._rtnode_why
        elif self.config.allowed_callers and calling not in self.config.allowed_callers:
            why = "calling AE title not in dicom.allowed_callers"
        elif called != self.config.ae_title:
            why = f"called AE title {called!r} is not ours ({self.config.ae_title!r})"
        else:
            why = f"association limit reached (dicom.max_associations={self.config.max_associations})"
        log.warning("rejected association from %s at %s:%s calling %s: %s", calling, rq.address,
                    rq.port, called or "?", why)
        self.archive.record_event("association_rejected", calling_ae=calling, detail=why)

    def _on_established(self, event: evt.Event) -> None:
        rq = event.assoc.requestor
        log.info("association from %s at %s:%s", rq.ae_title, rq.address, rq.port)

    def _on_released(self, event: evt.Event) -> None:
        log.debug("association from %s released", event.assoc.requestor.ae_title)

    def _on_aborted(self, event: evt.Event) -> None:
        if event.assoc.is_established:
            log.warning("association from %s aborted", event.assoc.requestor.ae_title)

    def handlers(self) -> list[tuple]:
        return [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            *(self.qr.handlers() if self.qr is not None else []),
        ]

    # -- lifecycle -----------------------------------------------------------------------------

    def limits(self) -> ListenerLimits:
        c = self.config
        return ListenerLimits(request_timeout=c.request_timeout, read_timeout=c.read_timeout,
                              max_pending=c.max_pending,
                              max_pending_per_address=c.max_pending_per_address,
                              max_pdu=c.max_pdu, max_instance_bytes=c.max_instance_bytes)

    def ssl_context(self) -> ssl.SSLContext | None:
        return server_context(self.config.tls, self.base_dir) if self.config.tls.enabled \
            else None

    def start(self, bind: str | None = None, port: int | None = None) -> None:
        address = (bind or self.config.bind, port or self.config.port)
        context = self.ssl_context()
        self._server = start_guarded_server(self.ae, address, self.limits(), self,
                                            self.handlers(), context, self._on_abuse)
        tls = "" if context is None else (
            " with TLS" + (" (client certificate required)"
                           if self.config.tls.require_client_certificate else ""))
        log.info("listening as %s on %s:%d%s", self.ae.ae_title, *address, tls)

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.config.port

    def stop(self, drain_seconds: float = 60.0) -> bool:
        """Stop accepting, let in-flight associations finish, then close.

        Returns False when associations were still open after drain_seconds and were aborted.
        """
        if self._server is None:
            return True
        server = self._server
        # Stop the accept loop only; the socket and the open associations stay alive.
        socketserver.BaseServer.shutdown(server)
        # Only established associations can have stores in flight; a connection that never sent
        # an A-ASSOCIATE-RQ would otherwise hold shutdown until the ACSE timeout.
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and any(
                a.is_established for a in server.active_associations):
            time.sleep(0.05)
        drained = not any(a.is_established for a in server.active_associations)
        for assoc in list(server.active_associations):
            if assoc.is_established:
                log.warning("aborting association from %s still open at shutdown",
                            assoc.requestor.ae_title)
            assoc.abort()
        server.shutdown()  # the loop is already stopped: this closes and deregisters
        self._server = None
        return drained
