"""Keeping the listener open for real callers: bounded reads, bounded memory, an answer to
every C-STORE request.

pynetdicom reads a PDU with blocking ``recv`` calls on a socket without a timeout, counts a TCP
connection that never sent an A-ASSOCIATE-RQ as an association, buffers any P-DATA PDU whatever
length it declares, and drops a C-STORE request it cannot route without answering. A handful of
silent sockets therefore shut a node off for everyone. This module wraps pynetdicom's server,
socket, DIMSE provider and association classes (no fork, same wire behaviour for honest peers):

- **Pending connections** (accepted, A-ASSOCIATE-RQ not yet complete; for TLS, the handshake
  too) are tracked by the ``Gate``. They have ``dicom.request_timeout`` seconds to complete
  their request; each address may hold ``dicom.max_pending_per_address`` of them and the node
  ``dicom.max_pending`` in all. Over a limit the *oldest* pending connection is dropped, never
  the newcomer, so a flood cannot lock out a real caller whose request takes milliseconds. They
  do not count against ``dicom.max_associations``: only requested associations do.
- **Every read is bounded**: before the request completes by ``request_timeout``, after it by
  ``dicom.read_timeout`` between bytes of a PDU (an idle association is ended by pynetdicom's
  ``network_timeout`` as before).
- **PDU lengths are checked from the header** before any byte of the body is buffered: a P-DATA
  PDU may not exceed ``dicom.max_pdu`` (when set) nor the largest instance, other PDUs 1 MiB.
  A PDU over the limit is answered with A-ABORT and the connection is closed.
- **Data set bytes are counted while they arrive**: past ``dicom.max_instance_mb`` the rest of
  the message is discarded and the request is answered 0xA700.
- **Every C-STORE request is answered**: requests pynetdicom would drop or misroute (missing or
  malformed UIDs, empty data set, a SOP class that is not a storage class or differs from its
  presentation context) get a failure status with an ErrorComment.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any, Callable

from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, C_STORE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

from rtnode.dicom.prompt import PromptDUL, wait_for_message
from rtnode.dicom.status import StoreStatus
from rtnode.dicom.uid import is_valid_uid

log = logging.getLogger("rtnode.dicom")

#: ErrorComment is LO: at most 64 characters
ERROR_COMMENT_MAX = 64
#: A-ASSOCIATE, A-RELEASE, A-ABORT PDUs are a few kB; this is generous
CONTROL_PDU_MAX = 1 << 20
#: PDU types of PS3.8 Table 9-1; P-DATA-TF is 0x04
PDU_TYPES = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07}
P_DATA_TF = 0x04
A_ASSOCIATE_RQ = 0x01
#: A-ABORT (source: service provider, reason: invalid PDU parameter value)
ABORT_INVALID_PARAMETER = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])
#: how often the same address's dropped connections are logged while a flood lasts
ABUSE_LOG_EVERY_S = 10.0
VERIFICATION = "1.2.840.10008.1.1"
#: a pending connection younger than this is not evicted by the per-address limit
PENDING_GRACE_S = 1.0


@dataclass(frozen=True)
class ListenerLimits:
    """What one connection may cost the node (from DicomConfig)."""

    request_timeout: float = 10.0
    read_timeout: float = 30.0
    max_pending: int = 32
    max_pending_per_address: int = 8
    max_pdu: int = 0
    max_instance_bytes: int = 512 * 1024 * 1024

    @property
    def p_data_max(self) -> int:
        """Largest P-DATA-TF body accepted: our advertised maximum (with slack for peers that
        count the PDV headers), or with no maximum, one whole instance and its headers."""
        if self.max_pdu:
            return self.max_pdu + 256
        return self.max_instance_bytes + 64 * 1024


@dataclass
class _Pending:
    sock: socket.socket
    address: str
    since: float


class Gate:
    """The connections that have not yet completed their A-ASSOCIATE-RQ."""

    def __init__(self, limits: ListenerLimits,
                 on_abuse: Callable[[str, str], None] | None = None):
        self.limits = limits
        self.on_abuse = on_abuse
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._lock = threading.Lock()
        self._last_log: dict[str, tuple[float, int]] = {}  # 'address kind' -> (time, count)
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="rtnode-gate", daemon=True)
        self._reaper.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def admit(self, sock: socket.socket, address: str) -> None:
        """Track a new connection; drop the oldest pending ones over either limit."""
        dropped: list[tuple[_Pending, str]] = []
        now = time.monotonic()
        with self._lock:
            same = [p for p in self._pending.values() if p.address == address]
            # a burst of honest parallel connections completes its requests in milliseconds:
            # only connections pending longer than the grace period are evicted for it
            while len(same) >= self.limits.max_pending_per_address \
                    and now - same[0].since > PENDING_GRACE_S:
                old = same.pop(0)
                self._pending.pop(id(old.sock), None)
                dropped.append((old, f"more than dicom.max_pending_per_address="
                                     f"{self.limits.max_pending_per_address} incomplete "
                                     "associations from one address"))
            while len(self._pending) >= self.limits.max_pending:
                _, old = self._pending.popitem(last=False)
                dropped.append((old, f"more than dicom.max_pending={self.limits.max_pending} "
                                     "incomplete associations"))
            self._pending[id(sock)] = _Pending(sock, address, now)
        for p, why in dropped:
            self._drop(p, why)

    def promote(self, sock: socket.socket) -> None:
        """The A-ASSOCIATE-RQ is complete: no longer pending, reads get the data-phase bound."""
        with self._lock:
            self._pending.pop(id(sock), None)
        try:
            sock.settimeout(self.limits.read_timeout)
        except OSError:
            pass

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._pending.pop(id(sock), None)

    def close(self) -> None:
        self._stop.set()

    def _reap(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            stale: list[_Pending] = []
            with self._lock:
                for key, p in list(self._pending.items()):
                    if p.sock.fileno() == -1:
                        del self._pending[key]
                    elif now - p.since > self.limits.request_timeout:
                        del self._pending[key]
                        stale.append(p)
            for p in stale:
                self._drop(p, f"no complete A-ASSOCIATE-RQ within dicom.request_timeout="
                              f"{self.limits.request_timeout:g} s")

    def _drop(self, p: _Pending, why: str) -> None:
        shut(p.sock)
        self.report(p.address, why)

    def report(self, address: str, why: str) -> None:
        """Log abuse once per address and kind per ABUSE_LOG_EVERY_S, with the count in
        between."""
        now = time.monotonic()
        key = f"{address} {why[:24]}"
        with self._lock:
            last, count = self._last_log.get(key, (0.0, 0))
            if now - last < ABUSE_LOG_EVERY_S:
                self._last_log[key] = (last, count + 1)
                return
            self._last_log[key] = (now, 0)
            if len(self._last_log) > 4096:
                self._last_log.clear()
        more = f" (and {count} more since the last report)" if count else ""
        log.warning("dropped connection from %s: %s%s", address, why, more)
        if self.on_abuse is not None:
            try:
                self.on_abuse(address, why)
            except Exception:
                log.exception("could not record the dropped connection")


def shut(sock: socket.socket) -> None:
    """Wake any thread blocked reading sock and close the connection (TLS too: the plain
    socket's shutdown, so that the TLS layer sees end-of-file rather than a vanished object)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class GuardedSocket(AssociationSocket):
    """An AssociationSocket that checks each PDU header before reading its body.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type, reserved, length) then
    ``recv(length)``; this class sees both calls in that order.
    """

    def __init__(self, assoc: Association, client_socket: socket.socket, gate: Gate,
                 address: str):
        super().__init__(assoc, client_socket=client_socket)
        self.gate = gate
        self.address = address
        self._body: tuple[int, int] | None = None  # (type, length) of the PDU being read
        self._refuse_body = False

    def recv(self, nr_bytes: int) -> bytearray:
        if self._refuse_body:
            self._refuse_body = False
            return bytearray()
        if self._body is None:
            data = super().recv(nr_bytes)
            if nr_bytes == 6 and len(data) == 6:
                pdu_type, _, length = struct.unpack(">BBL", bytes(data))
                if pdu_type in PDU_TYPES:
                    limit = self.gate.limits.p_data_max if pdu_type == P_DATA_TF \
                        else CONTROL_PDU_MAX
                    if length > limit:
                        self._refuse(pdu_type, length, limit)
                    else:
                        self._body = (pdu_type, length)
            return data
        pdu_type, length = self._body
        self._body = None
        data = super().recv(nr_bytes)
        if pdu_type == A_ASSOCIATE_RQ and len(data) == length and self.socket is not None:
            self.gate.promote(self.socket)
        return data

    def _refuse(self, pdu_type: int, length: int, limit: int) -> None:
        self.gate.report(self.address, f"PDU type 0x{pdu_type:02X} declares {length} bytes, "
                         f"more than the {limit} accepted (dicom.max_pdu / "
                         "dicom.max_instance_mb); aborted")
        try:
            if self.socket is not None:
                self.socket.sendall(ABORT_INVALID_PARAMETER)
        except OSError:
            pass
        if self.socket is not None:
            shut(self.socket)
        self._refuse_body = True

    def close(self) -> None:
        if self.socket is not None:
            self.gate.forget(self.socket)
        super().close()


class GuardedDIMSE(DIMSEServiceProvider):
    """Counts a message's data set bytes as they arrive; past the instance limit the rest is
    discarded and the message is remembered as oversize (answered 0xA700 when complete)."""

    def __init__(self, assoc: Association, max_bytes: int):
        super().__init__(assoc)
        self.max_bytes = max_bytes
        self._bytes = 0
        self._oversize = False
        self.oversize_ids: set[int] = set()

    def get_msg(self, block: bool = False) -> tuple[Any, Any]:
        if block:
            return super().get_msg(block=True)
        return wait_for_message(self.msg_queue)  # the reactor's look: wakes on a message

    def receive_primitive(self, primitive: Any) -> None:
        if self.message is None:
            self.message = DIMSEMessage()
        pdvs = primitive.presentation_data_value_list
        for i, (context_id, data) in enumerate(pdvs):
            if data and not data[0] & 1:  # a data set fragment
                self._bytes += len(data) - 1
                if self._bytes > self.max_bytes:
                    if not self._oversize:
                        self._oversize = True
                        self.message.data_set = BytesIO()  # free what was buffered
                    pdvs[i] = (context_id, bytes(data[:1]))
        message = self.message
        if not message.decode_msg(primitive, self.assoc):
            return
        # pynetdicom's own handling of a complete message, except that a request whose
        # command set does not convert (a malformed field) is salvaged to be answered instead
        # of aborting the association without a word
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": message})
        context_id = int(message.context_id or 0)
        try:
            d_primitive = message.message_to_primitive()
        except Exception as exc:
            d_primitive = _salvage_store(message, exc)
            if d_primitive is None:
                log.warning("undecodable DIMSE message from %s: %s",
                            self.assoc.requestor.ae_title, exc)
                self.dul.event_queue.put("Evt19")
                return
        if self._oversize:
            self.oversize_ids.add(int(getattr(message.command_set, "MessageID", 0) or 0))
        self._bytes = 0
        self._oversize = False
        if isinstance(d_primitive, C_CANCEL) and len(self.cancel_req) < 10:
            self.cancel_req[int(d_primitive.MessageIDBeingRespondedTo or 0)] = d_primitive
        else:
            self.msg_queue.put((context_id, d_primitive))
        message.encoded_command_set = BytesIO()
        message.data_set = BytesIO()
        message._data_set_file = None
        message._data_set_path = None
        self.message = None


def _salvage_store(message: DIMSEMessage, exc: Exception) -> C_STORE | None:
    """A C-STORE-RQ whose command set pynetdicom refused to convert, carried field by field
    (bad fields left out), marked with the reason so that it is answered with a failure."""
    cs = getattr(message, "command_set", None)
    if cs is None or cs.get("CommandField") != 0x0001:
        return None
    rq = C_STORE()
    for keyword in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority"):
        try:
            setattr(rq, keyword, cs.get(keyword))
        except Exception:
            pass
    if rq.MessageID is None:
        rq.MessageID = 0
    rq.DataSet = message.data_set if isinstance(message.data_set, BytesIO) else BytesIO()
    rq._context_id = message.context_id
    rq._rtnode_error = f"{type(exc).__name__}: {exc}"
    return rq


class GuardedAssociation(Association):
    """An acceptor that answers every C-STORE request, judging the request itself first; its
    DUL and reactor hand messages over as they come (``dicom/prompt.py``)."""

    listener: Any = None  # set by the handler: has .refuse_request(assoc, status, reason, uid)

    def __init__(self, ae: AE, mode: str):
        super().__init__(ae, mode)
        self.dul = PromptDUL(self)
        # the timeouts live on the DUL: given again to the new one
        self.acse_timeout = self.ae.acse_timeout
        self.connection_timeout = self.ae.connection_timeout
        self.dimse_timeout = self.ae.dimse_timeout
        self.network_timeout = self.ae.network_timeout

    def _serve_request(self, msg: Any, context_id: int) -> None:
        if isinstance(msg, C_STORE) and not self._sent_release \
                and context_id in self._accepted_cx:
            problem = self._judge_store(msg, context_id)
            if problem is not None:
                self._answer_store(msg, context_id, *problem)
                return
        super()._serve_request(msg, context_id)

    def _judge_store(self, msg: C_STORE, context_id: int) -> tuple[int, str] | None:
        dimse = self.dimse
        mid = msg.MessageID
        if isinstance(dimse, GuardedDIMSE) and int(mid or 0) in dimse.oversize_ids:
            dimse.oversize_ids.discard(int(mid or 0))
            return (StoreStatus.OUT_OF_RESOURCES,
                    f"instance over dicom.max_instance_mb ({dimse.max_bytes >> 20} MB)")
        if getattr(msg, "_rtnode_error", ""):
            return StoreStatus.CANNOT_UNDERSTAND, f"bad request: {msg._rtnode_error}"
        if mid is None:
            return StoreStatus.CANNOT_UNDERSTAND, "request has no Message ID"
        sop_class = str(msg.AffectedSOPClassUID or "")
        context = self._accepted_cx[context_id]
        if not is_valid_uid(sop_class):
            return (StoreStatus.INVALID_UID,
                    f"request SOP Class UID {sop_class[:24]!r} is not a UID")
        if sop_class == VERIFICATION:
            return StoreStatus.SOP_CLASS_NOT_SUPPORTED, "C-STORE of the Verification SOP Class"
        if sop_class != str(context.abstract_syntax):
            return (StoreStatus.SOP_CLASS_NOT_SUPPORTED,
                    f"request SOP class {sop_class} differs from its context's")
        sop_uid = str(msg.AffectedSOPInstanceUID or "")
        if not is_valid_uid(sop_uid):
            return (StoreStatus.INVALID_UID,
                    f"request SOP Instance UID {sop_uid[:24]!r} is not a UID")
        data = msg.DataSet
        if data is None or not data.getbuffer().nbytes:
            return StoreStatus.CANNOT_UNDERSTAND, "empty data set"
        if msg.Priority is None:
            msg.Priority = 0
        return None

    def _answer_store(self, msg: C_STORE, context_id: int, status: int, reason: str) -> None:
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = msg.MessageID if msg.MessageID is not None else 0
        for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
            value = str(getattr(msg, keyword) or "")
            if is_valid_uid(value):
                setattr(rsp, keyword, value)
        rsp.Status = int(status)
        rsp.ErrorComment = reason[:ERROR_COMMENT_MAX]
        uid = str(msg.AffectedSOPInstanceUID or "")
        if self.listener is not None:
            self.listener.refuse_request(self, int(status), reason, uid)
        self.dimse.send_msg(rsp, context_id)


class ListenerAE(AE):
    """An AE whose association count leaves out connections that have not yet requested an
    association, so that they cannot take the slots of ``dicom.max_associations``."""

    @property
    def active_associations(self) -> list[Association]:
        return [a for a in super().active_associations
                if not (a.is_acceptor and a.requestor.primitive is None)]


class GuardedHandler(RequestHandler):
    """Finishes the TLS handshake on the connection's own thread, then starts an association
    built from the guarded classes."""

    server: "GuardedServer"

    def handle(self) -> None:
        sock = self.request
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.do_handshake()
            except (OSError, ValueError) as exc:
                self.server.gate.forget(sock)
                self.server.gate.report(str(self.client_address[0]),
                                        f"TLS handshake failed: {exc}")
                shut(sock)
                sock.close()
                return
        super().handle()

    def _create_association(self) -> Association:
        server = self.server
        assoc = GuardedAssociation(self.ae, "acceptor")
        assoc.listener = server.listener
        assoc.dimse = GuardedDIMSE(assoc, server.gate.limits.max_instance_bytes)
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        sock = GuardedSocket(assoc, self.request, server.gate, str(self.client_address[0]))
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        from copy import deepcopy
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event in server._handlers:
            if event.is_intervention and server._handlers[event]:
                assoc.bind(event, *server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the Gate in front of every accepted connection."""

    gate: Gate
    listener: Any

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.settimeout(self.gate.limits.request_timeout)
        if self.ssl_context:
            # the handshake happens on the connection's thread (GuardedHandler), never here:
            # a silent client would otherwise stop the accept loop for everyone
            client = self.ssl_context.wrap_socket(client, server_side=True,
                                                  do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.gate.admit(request, str(client_address[0]))
        return True

    def shutdown(self) -> None:
        self.gate.close()
        super().shutdown()


def _any_uid(value: Any) -> tuple[bool, str]:
    return True, ""


def start_guarded_server(ae: AE, address: tuple[str, int], limits: ListenerLimits,
                         listener: Any, evt_handlers: list, ssl_context: ssl.SSLContext | None,
                         on_abuse: Callable[[str, str], None] | None = None) -> GuardedServer:
    """Like ``AE.start_server(block=False)``, with the guarded classes."""
    # UIDs in requests are judged by _judge_store (with a status); pynetdicom's own check
    # would raise while decoding and abort the association unanswered
    _config.VALIDATORS["UI"] = _any_uid
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=evt_handlers,
                            server_class=GuardedServer, request_handler=GuardedHandler)
    server.gate = Gate(limits, on_abuse)
    server.listener = listener
    thread = threading.Thread(target=make_target(server.serve_forever),
                              name=f"AcceptorServer@{datetime.now():%Y%m%d%H%M%S}", daemon=True)
    thread.start()
    ae._servers.append(server)
    return server
