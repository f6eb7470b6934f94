"""Deadlines for work running in a worker process's main thread.

A stage run has one (its timeout), and work inside it may set a shorter one of its own (one
ROI of a radiomics part). The inner deadline arms the shorter of the two and re-arms what is
left of the outer one afterwards, so both hold. SIGALRM fires only when Python regains control,
so C code that never returns is ended by the scheduler's watchdog instead.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator


class DeadlineExceeded(Exception):
    """The work ran past its deadline."""


@contextlib.contextmanager
def deadline(seconds: float, what: str = "") -> Iterator[None]:
    """Raise DeadlineExceeded('<what> timed out after N s') in this thread after seconds
    (main thread only; elsewhere, or for seconds <= 0, a no-op)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    if 0 < outer_left <= seconds:  # the outer deadline comes first: it stays in charge
        yield
        return
    start = time.monotonic()
    message = f"{what} timed out after {seconds:g} s" if what else \
        f"timed out after {seconds:g} s"

    def fire(signum, frame):
        raise DeadlineExceeded(message)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL,
                             max(outer_left - (time.monotonic() - start), 0.001))
