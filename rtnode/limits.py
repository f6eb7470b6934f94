"""The bounds every stage runs under: deadlines, and recognising a memory error.

Deadlines are for work in a worker process's main thread. A stage run has one (its timeout), and work inside it may set a shorter one of its own (one
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


#: how allocators, CUDA and NumPy word "memory ran out"
MEMORY_ERROR_TEXT = ("out of memory", "cannot allocate memory", "std::bad_alloc",
                     "unable to allocate")


def is_memory_error(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, or an error whose text says memory ran out:
    the failures worth one retry with a smaller footprint."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(t in text for t in MEMORY_ERROR_TEXT)
