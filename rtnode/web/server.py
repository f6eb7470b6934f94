"""The HTTP server inside ``rtnode serve``: uvicorn in one thread of the node's process.

The socket is bound in the caller's thread, so a port already in use (or a TLS key that does not
load) stops the node at start-up with a sentence naming the http.* key, before any worker is
spawned. Stopping asks uvicorn to finish the requests in flight and closes the index it read.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from rtnode.config import Config

log = logging.getLogger("rtnode.web")


class HttpStartError(RuntimeError):
    """The dashboard could not start; the message names the config key to look at."""


class WebServer:
    def __init__(self, cfg: Config, scp: Any = None):
        self.cfg = cfg
        self.scp = scp
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.sock: socket.socket | None = None
        self.app: Any = None

    @property
    def scheme(self) -> str:
        return "https" if self.cfg.http.tls_cert else "http"

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1] if self.sock else self.cfg.http.port

    @property
    def url(self) -> str:
        host = self.cfg.http.bind
        host = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self, timeout: float = 20.0) -> "WebServer":
        import uvicorn

        from rtnode.web.app import create_app

        http = self.cfg.http
        cert, key = self.cfg.http_path(http.tls_cert), self.cfg.http_path(http.tls_key)
        for name, path in (("http.tls_cert", cert), ("http.tls_key", key)):
            if path is not None and not path.is_file():
                raise HttpStartError(f"{name}: {path} does not exist")
        family = socket.AF_INET6 if ":" in http.bind else socket.AF_INET
        try:
            self.sock = socket.create_server((http.bind, http.port), family=family)
        except OSError as exc:
            raise HttpStartError(f"cannot serve HTTP on {http.bind}:{http.port} (http.bind, "
                                 f"http.port): {exc.strerror or exc}") from None
        self.app = create_app(self.cfg, self.scp)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False,
                                lifespan="off", ssl_certfile=cert, ssl_keyfile=key,
                                timeout_graceful_shutdown=5, server_header=False)
        try:
            config.load()  # here, not in the thread: a bad certificate or key stops the start
        except Exception as exc:
            self.sock.close()
            raise HttpStartError(f"http.tls_cert/http.tls_key: cannot load ({exc})") from None
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="rtnode-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and \
                time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.stop()
            raise HttpStartError(f"the HTTP server on {http.bind}:{self.port} did not start")
        log.info("dashboard and API on %s (login %s)", self.url,
                 "required" if http.auth_configured else "not configured: read-only")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        if self.sock is not None:
            self.sock.close()
        if self.app is not None:
            self.app.state.ctx.close()


def start_web(cfg: Config, scp: Any = None) -> WebServer | None:
    """The node's HTTP server, started; None when http.enabled is false."""
    if not cfg.http.enabled:
        return None
    return WebServer(cfg, scp).start()
