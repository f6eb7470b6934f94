"""Who may read and who may act.

Credentials come from the config (``http.token``, ``http.username``/``http.password``): a script
sends ``Authorization: Bearer <token>`` or HTTP basic auth; a browser logs in once through a form
and then carries a session cookie (HttpOnly, SameSite=Strict, Secure under TLS). Sessions live in
the serving process only: a restart logs everyone out, which is the safe direction.

Rules: with no credentials configured, pages and API reads are open (bind to 127.0.0.1, the
default) and every state change is refused with 403 — nobody can requeue or send without a
login that someone configured. With credentials, everything that shows patient data needs them
too; /healthz, /metrics and static files never do (they hold no patient data).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from rtnode.config import HttpConfig

SESSION_COOKIE = "rtnode_session"
#: a browser session ends after this long without a request
SESSION_IDLE_S = 8 * 3600


class LoginRequired(Exception):
    """A page (not the API) needs a login: the app answers with a redirect to /login."""

    def __init__(self, next_url: str):
        self.next_url = next_url


class Auth:
    def __init__(self, http: HttpConfig):
        self.http = http
        self._sessions: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return self.http.auth_configured

    # -- credentials ---------------------------------------------------------------------------

    def valid_token(self, token: str | None) -> bool:
        return bool(token) and self.http.token is not None and hmac.compare_digest(
            token.encode(), self.http.token.encode())

    def valid_user(self, username: str | None, password: str | None) -> bool:
        if self.http.username is None or username is None or password is None:
            return False
        return (hmac.compare_digest(username.encode(), self.http.username.encode())
                & hmac.compare_digest(password.encode(), (self.http.password or "").encode()))

    def _header_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return self.valid_token(value.strip())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return self.valid_user(user, password)
        return False

    # -- sessions ------------------------------------------------------------------------------

    def new_session(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = time.monotonic() + SESSION_IDLE_S
        return sid

    def end_session(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _session_ok(self, request: Request) -> bool:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid:
            return False
        now = time.monotonic()
        with self._lock:
            expiry = self._sessions.get(sid)
            if expiry is None or expiry < now:
                self._sessions.pop(sid, None)
                return False
            self._sessions[sid] = now + SESSION_IDLE_S
        return True

    def authenticated(self, request: Request) -> bool:
        return self.configured and (self._header_ok(request) or self._session_ok(request))

    # -- the two gates -------------------------------------------------------------------------

    def reader(self, request: Request, page: bool) -> None:
        """Patient data: open without credentials configured, else a login."""
        if not self.configured or self.authenticated(request):
            return
        if page:
            raise LoginRequired(str(request.url.path) + (f"?{request.url.query}"
                                                         if request.url.query else ""))
        raise self._unauthorized()

    def writer(self, request: Request, page: bool) -> None:
        """State changes: always a login; refused outright when none is configured."""
        if not self.configured:
            raise HTTPException(403, "actions are switched off: configure http.token or "
                                     "http.username/http.password to enable them")
        if not self.authenticated(request):
            if page and request.method == "GET":
                raise LoginRequired(str(request.url.path) + (f"?{request.url.query}"
                                                             if request.url.query else ""))
            raise self._unauthorized()
        if request.cookies.get(SESSION_COOKIE) and not self._same_origin(request):
            raise HTTPException(403, "cross-site request refused")

    def _unauthorized(self) -> HTTPException:
        challenge = 'Basic realm="rtnode"' if self.http.username else "Bearer"
        return HTTPException(401, "login required", headers={"WWW-Authenticate": challenge})

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """A form post from another site carrying our cookie (SameSite=Strict already stops
        it in current browsers; this is the second lock)."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin:
            return True  # not a browser form (scripts send no Origin)
        return urlsplit(origin).netloc == request.headers.get("host", "")
