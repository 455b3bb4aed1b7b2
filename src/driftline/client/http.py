"""Calling the worker's HTTP endpoints from driftline's own processes (``driftline query``, the demo).

They read the same settings as the worker: the first of ``worker.auth_tokens`` goes in the
``Authorization`` header (never into a redirect), and with ``worker.tls_certfile`` the URL is
``https`` and that certificate is trusted besides the system's CAs (a self-signed one works).
"""

from __future__ import annotations

import ssl
import urllib.request
from http.client import HTTPResponse
from typing import cast

from driftline.config import Settings

# A server bound to every interface is reached through loopback from the same machine.
_WILDCARD_TO_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def worker_url(settings: Settings, path: str, *, host: str | None = None, port: int | None = None) -> str:
    """URL of ``path`` on the worker's web server as configured, from this machine.

    >>> worker_url(Settings(worker={"web_host": "0.0.0.0", "web_port": 6066}), "/query")
    'http://127.0.0.1:6066/query'
    """
    w = settings.worker
    scheme = "https" if w.tls_certfile else "http"
    name = host if host is not None else w.web_host
    name = _WILDCARD_TO_LOOPBACK.get(name, name)
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"{scheme}://{name}:{port if port is not None else w.web_port}{path}"


def auth_headers(settings: Settings) -> dict[str, str]:
    """``{"Authorization": "Bearer <first token>"}``, or ``{}`` without tokens."""
    tokens = settings.worker.auth_tokens
    return {"Authorization": f"Bearer {tokens[0].get_secret_value()}"} if tokens else {}


def client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifying TLS context: the system's CAs plus the worker's own certificate, if configured."""
    context = ssl.create_default_context()
    certfile = settings.worker.tls_certfile
    if certfile is not None:
        context.load_verify_locations(cafile=str(certfile))
        # Trust that certificate itself even when it is not a CA (self-signed, or a leaf of a chain).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def open_worker(settings: Settings, request: urllib.request.Request, timeout: float) -> HTTPResponse:
    """``urllib.request.urlopen`` with the token and TLS trust of ``settings``."""
    for name, value in auth_headers(settings).items():
        request.add_unredirected_header(name, value)
    return cast(HTTPResponse, urllib.request.urlopen(request, timeout=timeout,
                                                     context=client_ssl_context(settings)))
