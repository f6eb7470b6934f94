"""Prompt hand-overs inside an association: wake on work instead of sleeping between looks.

pynetdicom moves every message between two polling loops: the DUL thread sleeps 1 ms whenever
a pass found nothing to do (no PDU to read, no primitive to send), and the association thread
sleeps 1 ms before each look at the DIMSE queue. A C-STORE crosses both loops twice on its way
(request in, response out), and the sender waits for each response before sending the next
instance, so each instance pays up to a few milliseconds of sleeping: a large share of a
receiver's time per CT slice on loopback.

Here both loops wait on what they are waiting for: the DUL thread in ``select()`` on its socket
and on a wake pipe written when a primitive is queued for sending, the association thread on
the DIMSE queue. The old delay stays the bound of every wait, so a wake that is missed costs no
more than pynetdicom's own loop did, and an idle association uses no more CPU than before.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from typing import Any

from pynetdicom.dul import DULServiceProvider

#: longest wait of the association thread on its DIMSE queue between its other checks
#: (release, abort, network timeout); a message arriving meanwhile ends the wait at once
DIMSE_WAIT_S = 0.005


class PromptDUL(DULServiceProvider):
    """A DUL reactor that waits for its socket or for a primitive to send, not for a timer."""

    def __init__(self, assoc: Any):
        super().__init__(assoc)
        #: the bound of each wait; pynetdicom's own blind sleep between passes is then skipped
        self._wait_s = self._run_loop_delay
        self._run_loop_delay = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pipe_lock = threading.Lock()  # a closed pipe's number may name another file

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        with self._pipe_lock:
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"\0")
                except OSError:
                    pass  # already woken: the pipe is full

    def _is_transport_event(self) -> bool:
        if super()._is_transport_event():
            return True
        if self._idle_wait():
            return super()._is_transport_event()
        return False

    def _idle_wait(self) -> bool:
        """Nothing to read and nothing queued: wait for either, at most the loop delay.
        True when the socket may have become readable."""
        if not (self.event_queue.empty() and self.to_provider_queue.empty()):
            return False
        sock = getattr(self.socket, "socket", None)
        if sock is None or self._kill_thread or self._wake_r < 0:
            time.sleep(self._wait_s)  # nothing to wait on: pynetdicom's own pace
            return False
        try:
            readable, _, _ = select.select([sock, self._wake_r], [], [], self._wait_s)
        except (OSError, ValueError):
            time.sleep(self._wait_s)  # closed meanwhile: the next pass of the loop notices
            return False
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except (BlockingIOError, OSError):
                pass
        return sock in readable

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            with self._pipe_lock:
                for fd in (self._wake_r, self._wake_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                self._wake_r = self._wake_w = -1


def wait_for_message(msg_queue: "queue.Queue[Any]") -> tuple[Any, Any]:
    """The association reactor's look at its DIMSE queue, waiting up to DIMSE_WAIT_S."""
    try:
        return msg_queue.get(timeout=DIMSE_WAIT_S)
    except queue.Empty:
        return None, None
