"""Who may call the HTTP endpoints of the worker and of `driftline serve`.

- **Bearer tokens** (``worker.auth_tokens``): every request needs ``Authorization: Bearer <token>``
  except ``GET /healthz``, ``GET /ping``, ``GET /replicas_status`` (and ``GET /metrics`` with
  ``worker.metrics_open``); otherwise 401 with ``WWW-Authenticate: Bearer``. ClickHouse clients
  of the interface at ``/`` present the token as their password instead (basic auth or
  ``X-ClickHouse-Key``; any user name) and get ClickHouse's errors (REQUIRED_PASSWORD,
  AUTHENTICATION_FAILED). Tokens are compared as SHA-256 digests with
  ``hmac.compare_digest`` against every configured token, so the time taken says nothing about
  how much of a token matched, nor which one. Tokens are never logged.
- **Bind rule**: without tokens only a loopback address may be bound, unless ``--insecure`` (or
  ``worker.insecure``) says otherwise.
- **TLS** (``worker.tls_certfile`` / ``tls_keyfile``): the server's ``ssl.SSLContext``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from driftline.config import WorkerSettings
from driftline.streams.clickhouse_http import (
    AUTHENTICATION_FAILED,
    REQUIRED_PASSWORD,
    STATUS_PATHS,
    exception_response,
    is_clickhouse_request,
)

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"}) | STATUS_PATHS  # no data: liveness only
METRICS_PATH = "/metrics"
REALM = "driftline"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TLSConfigError(ValueError):
    """The certificate or key cannot be loaded; the message names the files."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback addresses only.

    >>> [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")]
    [True, True, True, True, True]
    >>> [is_loopback(h) for h in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.7")]
    [False, False, False, False, False]
    """
    if host in WILDCARD_HOSTS:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it resolves to is
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback
                               for info in infos)


def bind_refusal(host: str, worker: WorkerSettings) -> str | None:
    """Why serving on ``host`` is refused (one line), or None when it is allowed."""
    if worker.auth_tokens or worker.insecure or is_loopback(host):
        return None
    where = host or "all interfaces"
    return (f"refusing to serve on {where} without authentication: set DRIFTLINE_WORKER_AUTH_TOKENS "
            "(README: Authentication), bind 127.0.0.1, or pass --insecure to serve without tokens")


def server_ssl_context(worker: WorkerSettings) -> ssl.SSLContext | None:
    """The HTTPS context of the endpoints, or None without ``tls_certfile``; raises TLSConfigError."""
    if worker.tls_certfile is None or worker.tls_keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(worker.tls_certfile, worker.tls_keyfile)
    except (OSError, ssl.SSLError) as err:
        raise TLSConfigError(
            f"cannot load the TLS certificate {worker.tls_certfile} with key {worker.tls_keyfile}: "
            f"{getattr(err, 'strerror', None) or err}"
        ) from None
    return context


def serving_problem(host: str, worker: WorkerSettings) -> str | None:
    """What stops a server from starting on ``host`` with these settings (one line), or None.
    Serving a non-loopback address without tokens (``--insecure``) is allowed, with a warning."""
    refusal = bind_refusal(host, worker)
    if refusal:
        return refusal
    if not worker.auth_tokens and not is_loopback(host):
        log.warning("serving on %s WITHOUT authentication (--insecure): anyone who reaches it can "
                    "write events and read ClickHouse", host or "all interfaces")
    try:
        server_ssl_context(worker)
    except TLSConfigError as err:
        return str(err)
    return None


def token_matcher(tokens: Sequence[SecretStr]) -> Callable[[str], bool]:
    """A constant-time test of a presented token against every configured one.

    >>> matches = token_matcher([SecretStr("s3cret-token-0123456789")])
    >>> matches("s3cret-token-0123456789"), matches("s3cret-token-0123456788"), matches("")
    (True, False, False)
    """
    digests = [hashlib.sha256(t.get_secret_value().encode()).digest() for t in tokens]

    def matches(presented: str) -> bool:
        digest = hashlib.sha256(presented.encode()).digest()
        found = False
        for expected in digests:  # no early exit: every token is compared
            found |= hmac.compare_digest(digest, expected)
        return found

    return matches


def _unauthorized(error: str, description: str) -> web.Response:
    challenge = f'Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}"'
    return web.Response(status=401, body=orjson.dumps({"error": description}),
                        content_type="application/json", headers={"WWW-Authenticate": challenge})


def presented_token(headers: Mapping[str, str]) -> str:
    """The token a request presents: a bearer token, the password of basic auth (as ClickHouse
    clients send it) or ``X-ClickHouse-Key``; "" when none.

    >>> presented_token({"Authorization": "Basic " + base64.b64encode(b"grafana:tok").decode()})
    'tok'
    >>> presented_token({"Authorization": "Bearer tok"}), presented_token({"X-ClickHouse-Key": "tok"})
    ('tok', 'tok')
    """
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return headers.get("X-ClickHouse-Key", "").strip()


def _clickhouse_unauthorized(missing: bool) -> web.Response:
    if missing:
        return exception_response(REQUIRED_PASSWORD, "a password is required: the worker's token "
                                  "(DRIFTLINE_WORKER_AUTH_TOKENS)",
                                  headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})
    return exception_response(AUTHENTICATION_FAILED, "Authentication failed: the password is not one of "
                              "the worker's tokens")


def auth_middleware(worker: WorkerSettings) -> Middleware:
    """aiohttp middleware enforcing ``worker.auth_tokens`` on every path but the open ones."""
    matches = token_matcher(worker.auth_tokens)
    open_paths = OPEN_PATHS | ({METRICS_PATH} if worker.metrics_open else frozenset())

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths and request.method in ("GET", "HEAD"):
            return await handler(request)
        presented = presented_token(request.headers)
        clickhouse = is_clickhouse_request(request)
        if not presented:
            if clickhouse:
                return _clickhouse_unauthorized(missing=True)
            return _unauthorized("", "missing bearer token: send Authorization: Bearer <token>")
        if not matches(presented):
            if clickhouse:
                return _clickhouse_unauthorized(missing=False)
            return _unauthorized("invalid_token", "invalid bearer token")
        return await handler(request)

    return authenticate


def secure_app(app: web.Application, worker: WorkerSettings) -> None:
    """Require the bearer tokens on ``app`` (before it starts); no-op without tokens."""
    if worker.auth_tokens:
        app.middlewares.insert(0, auth_middleware(worker))  # before any other middleware
