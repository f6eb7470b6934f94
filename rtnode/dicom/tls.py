"""DICOM TLS (PS3.15 Annex B): the SSL contexts of the listener and of outgoing associations.

One certificate and key serve both directions; the configured CA is what peers' certificates
must chain to. ``configure`` records the process's TLS settings once (the CLI does it for every
command, so ``serve``, ``worker``, ``echo`` and ``retrieve`` agree); the SCUs in ``send.py``,
``qr.py`` and ``scu.py`` then ask ``client_context()`` and need no new arguments.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtnode.config import Config, TLSConfig


class TLSConfigError(ValueError):
    """A TLS file that is missing or unreadable, named by its config key."""


_lock = threading.Lock()
_settings: tuple["TLSConfig", Path] | None = None
_client: ssl.SSLContext | None = None


def resolve(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _files(tls: "TLSConfig", base: Path) -> tuple[Path, Path, Path | None]:
    cert, key = resolve(tls.certificate, base), resolve(tls.private_key, base)
    ca = resolve(tls.ca_certificates, base)
    for name, p in (("certificate", cert), ("private_key", key), ("ca_certificates", ca)):
        if p is None and name != "ca_certificates":
            raise TLSConfigError(f"dicom.tls.{name}: required when dicom.tls.enabled is true")
        if p is not None and not p.is_file():
            raise TLSConfigError(f"dicom.tls.{name}: {p} not found")
    assert cert is not None and key is not None
    return cert, key, ca


def server_context(tls: "TLSConfig", base: Path) -> ssl.SSLContext:
    """The listener's context: our certificate; with require_client_certificate, callers must
    present one that chains to ca_certificates."""
    cert, key, ca = _files(tls, base)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(ca)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"dicom.tls: cannot load {cert} / {key} / {ca}: {exc}") from None
    if tls.require_client_certificate:
        if ca is None:
            raise TLSConfigError("dicom.tls.ca_certificates: required with "
                                 "require_client_certificate")
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def make_client_context(tls: "TLSConfig", base: Path) -> ssl.SSLContext:
    """Outgoing associations: verify the server against ca_certificates (the system store when
    none is given) and present our certificate for servers that require one. Host names are not
    checked: DICOM peers are configured by address, and the CA is the site's own."""
    cert, key, ca = _files(tls, base)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(ca)
        else:
            ctx.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"dicom.tls: cannot load {cert} / {key} / {ca}: {exc}") from None
    return ctx


def configure(config: "Config") -> None:
    """Remember this process's TLS settings; contexts are built when first needed."""
    global _settings, _client
    with _lock:
        _settings = (config.dicom.tls, config.base_dir)
        _client = None


def client_context() -> ssl.SSLContext | None:
    """The context for an outgoing association, or None when TLS is off (or not configured)."""
    global _client
    with _lock:
        if _settings is None or not _settings[0].enabled:
            return None
        if _client is None:
            _client = make_client_context(*_settings)
        return _client


def tls_args(host: str) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom's ``AE.associate(tls_args=...)`` for a call to host: (context, host name),
    or None when TLS is off."""
    ctx = client_context()
    return None if ctx is None else (ctx, host)
