"""What every request handler shares: the config, the login rules, one open index."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from rtnode.config import Config
from rtnode.web.auth import Auth


@dataclass
class WebContext:
    cfg: Config
    auth: Auth
    #: the node's StorageSCP when served by ``rtnode serve`` (health, open associations)
    scp: Any = None
    _index: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def index(self):
        """The index, opened once (it is created by the node at start-up); None before."""
        if self._index is None:
            from rtnode.views import open_index

            with self._lock:
                if self._index is None:
                    self._index = open_index(self.cfg)
        return self._index

    def book(self):
        """A CourseBook; NotFound (404) when nothing was ever received."""
        from rtnode.courses.book import CourseBook
        from rtnode.views import NotFound

        index = self.index()
        if index is None:
            raise NotFound(f"no index under {self.cfg.storage_root}: nothing received yet")
        return CourseBook(index)

    def book_or_none(self):
        return None if self.index() is None else self.book()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None


def web_context(request: Request) -> WebContext:
    return request.app.state.ctx
