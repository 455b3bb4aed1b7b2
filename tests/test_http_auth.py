"""Authentication of the HTTP endpoints: bearer tokens, the bind rule, TLS, and the clients that send them.

The worker runs as `driftline worker` would be run by a user (a subprocess, HTTPS with a
self-signed certificate made here, two tokens); `driftline query` runs as a second process in the
same environment. Everything listens on and talks to loopback only: the non-loopback cases are
refused before anything binds, except the one `--insecure` bind, which is reached through
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from harness import wait_for
from pydantic import SecretStr

from driftline.client.http import auth_headers, client_ssl_context, worker_url
from driftline.config import ConfigError, Settings, TopicSettings, WorkerSettings, load_settings
from driftline.local.broker import free_port
from driftline.streams.http_security import bind_refusal, secure_app

TOKEN = "tok-9f2e7c1a-DO-NOT-LOG-first"
OTHER_TOKEN = "tok-33b8d0e4-DO-NOT-LOG-second"
WRONG_TOKEN = "tok-00000000-DO-NOT-LOG-wrong"
MAX_ROWS = 50
CLI = [sys.executable, "-m", "driftline.cli.main"]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost and its unencrypted key (openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def call(url: str, *, token: str | None = None, data: bytes | None = None, method: str = "GET",
         context: ssl.SSLContext | None = None) -> Reply:
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())




# -- settings and the bind rule (no server) --------------------------------------------------------


def test_tokens_load_from_env_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_WORKER_AUTH_TOKENS", f"{TOKEN}, {OTHER_TOKEN}")
    settings = load_settings()
    assert [t.get_secret_value() for t in settings.worker.auth_tokens] == [TOKEN, OTHER_TOKEN]
    assert TOKEN not in repr(settings) and TOKEN not in settings.model_dump_json()
    assert auth_headers(settings) == {"Authorization": f"Bearer {TOKEN}"}  # clients send the first
    monkeypatch.setenv("DRIFTLINE_WORKER_AUTH_TOKENS", orjson.dumps([OTHER_TOKEN]).decode())
    assert [t.get_secret_value() for t in load_settings().worker.auth_tokens] == [OTHER_TOKEN]
    monkeypatch.setenv("DRIFTLINE_WORKER_AUTH_TOKENS", "short-tok")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "DRIFTLINE_WORKER_AUTH_TOKENS" in str(info.value) and "short-tok" not in str(info.value)


def test_bind_rule() -> None:
    open_worker = WorkerSettings()
    for host in ("127.0.0.1", "::1", "localhost"):
        assert bind_refusal(host, open_worker) is None
    for host in ("0.0.0.0", "::", "10.0.0.8"):
        refusal = bind_refusal(host, open_worker)
        assert refusal is not None and "DRIFTLINE_WORKER_AUTH_TOKENS" in refusal and "--insecure" in refusal
    assert bind_refusal("0.0.0.0", WorkerSettings(auth_tokens=[TOKEN])) is None
    assert bind_refusal("0.0.0.0", WorkerSettings(insecure=True)) is None


def test_client_urls_reach_a_wildcard_bind_through_loopback(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    s = Settings(worker={"web_host": "0.0.0.0", "web_port": 7001, "tls_certfile": cert, "tls_keyfile": key})
    assert worker_url(s, "/query") == "https://127.0.0.1:7001/query"
    assert worker_url(s.model_copy(update={"worker": WorkerSettings(web_host="::")}), "/x") == "http://[::1]:6066/x"
    with pytest.raises(ConfigError, match="go together"):
        load_settings(worker={"tls_certfile": cert})


@pytest.mark.integration
@pytest.mark.parametrize("command", [["worker", "--web-host", "0.0.0.0"], ["serve", "--host", "0.0.0.0"]])
def test_non_loopback_bind_without_tokens_is_refused(command: list[str], kafka_bootstrap: str,
                                                     tmp_path: Path) -> None:
    """Refused before anything binds or starts (a broker runs, so that is not the reason)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_HOME"] = str(tmp_path / "home")
    env["DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    port = free_port()
    done = subprocess.run([*CLI, *command, "--port" if command[0] == "serve" else "--web-port", str(port)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("driftline: refusing to serve on 0.0.0.0"), done.stderr
    assert "DRIFTLINE_WORKER_AUTH_TOKENS" in lines[0] and "--insecure" in lines[0]


# -- the middleware on an aiohttp server -----------------------------------------------------------


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _answers(worker: WorkerSettings, requests: list[tuple[str, str, str | None]]) -> list[Reply]:
    async def scenario() -> list[Reply]:
        app = web.Application()
        secure_app(app, worker)
        for path in ("/healthz", "/metrics", "/other"):
            app.router.add_get(path, _ok)
        app.router.add_post("/query", _ok)
        replies = []
        async with TestClient(TestServer(app, host="127.0.0.1")) as http:
            for method, path, header in requests:
                headers = {"Authorization": header} if header is not None else {}
                response = await http.request(method, path, headers=headers)
                replies.append(Reply(response.status, dict(response.headers), await response.read()))
        return replies

    return asyncio.run(scenario())


def test_middleware_challenges_and_metrics_open() -> None:
    closed = WorkerSettings(auth_tokens=[TOKEN, OTHER_TOKEN])
    replies = _answers(closed, [
        ("GET", "/healthz", None), ("GET", "/metrics", None), ("POST", "/query", None),
        ("GET", "/other", f"Bearer {WRONG_TOKEN}"), ("GET", "/other", f"Basic {TOKEN}"),
        ("GET", "/other", "Bearer "), ("GET", "/other", f"bearer {OTHER_TOKEN}"),
        ("POST", "/query", f"Bearer {TOKEN}"), ("GET", "/nowhere", None), ("POST", "/healthz", None),
    ])
    assert [r.status for r in replies] == [200, 401, 401, 401, 401, 401, 200, 200, 401, 401]
    assert replies[1].headers["WWW-Authenticate"] == 'Bearer realm="driftline"'
    assert replies[3].headers["WWW-Authenticate"] == 'Bearer realm="driftline", error="invalid_token"'
    assert orjson.loads(replies[3].body) == {"error": "invalid bearer token"}
    assert all(WRONG_TOKEN.encode() not in r.body for r in replies)

    scraped = _answers(WorkerSettings(auth_tokens=[TOKEN], metrics_open=True),
                       [("GET", "/metrics", None), ("POST", "/query", None), ("GET", "/other", None)])
    assert [r.status for r in scraped] == [200, 401, 401]
    unauthenticated = _answers(WorkerSettings(), [("POST", "/query", None)])
    assert unauthenticated[0].status == 200  # no tokens: open (and loopback only, by the bind rule)


# -- the real worker: HTTPS, tokens, `driftline query` from another process ------------------------


@dataclass
class Worker:
    base: str
    env: dict[str, str]
    context: ssl.SSLContext
    log: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, _session_clickhouse_url: str, _containers: dict[str, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    directory = tmp_path_factory.mktemp("auth-worker")
    cert, key = make_certificate(directory)
    tag = uuid.uuid4().hex[:10]
    port = free_port()
    clickhouse = (f"chdb://{directory / 'chdb'}" if _session_clickhouse_url.startswith("chdb://")
                  else _session_clickhouse_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({
        "DRIFTLINE_HOME": str(directory / "home"),
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLINE_CLICKHOUSE_URL": clickhouse,
        "DRIFTLINE_CLICKHOUSE_DATABASE": f"a_{tag}",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "DRIFTLINE_WORKER_WEB_PORT": str(port),
        "DRIFTLINE_WORKER_AUTH_TOKENS": orjson.dumps([TOKEN, OTHER_TOKEN]).decode(),
        "DRIFTLINE_WORKER_TLS_CERTFILE": str(cert),
        "DRIFTLINE_WORKER_TLS_KEYFILE": str(key),
        "DRIFTLINE_WORKER_QUERY_MAX_RESULT_ROWS": str(MAX_ROWS),
    })
    if _containers.get("clickhouse_user"):
        env["DRIFTLINE_CLICKHOUSE_USERNAME"] = _containers["clickhouse_user"]
        env["DRIFTLINE_CLICKHOUSE_PASSWORD"] = _containers["clickhouse_password"]
    for name in TopicSettings.topic_fields():
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = f"a{tag}.{name}"
    log = directory / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "worker", "--loglevel", "debug", "--run-seconds", "600"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(cert))
    handle = Worker(f"https://127.0.0.1:{port}", env, context, log, proc)
    try:
        wait_for(lambda: call(f"{handle.base}/healthz", context=context).status == 200, 120, "/healthz",
                 proc, log)
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _cli(worker: Worker, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`driftline ARGS` in the worker's environment, while the worker owns the engine (else the
    command would open it directly and prove nothing about the route through the worker)."""
    assert worker.proc.poll() is None, worker.log.read_text(errors="replace")[-3000:]
    done = subprocess.run([*CLI, *args], env={**worker.env, **env}, capture_output=True, text=True,
                          timeout=120)
    assert worker.proc.poll() is None, worker.log.read_text(errors="replace")[-3000:]
    return done


PREDICTION = {"prediction_id": "auth-1", "model_id": "m", "features": {"x": 1.0}, "prediction": 0.5}
ENDPOINTS = [
    ("GET", "/metrics", None, 200),
    ("POST", "/query?format=json", b"SELECT 1 AS one", 200),
    ("POST", "/predictions", orjson.dumps(PREDICTION), 202),
    ("POST", "/feedback", orjson.dumps({"prediction_id": "auth-1", "label": 1}), 202),
    ("GET", "/router/", None, None),  # Faust's own pages are behind the token too
]


@pytest.mark.integration
@pytest.mark.parametrize(("method", "path", "body", "expected"), ENDPOINTS)
def test_every_endpoint_needs_the_token(worker: Worker, method: str, path: str, body: bytes | None,
                                        expected: int | None) -> None:
    url = f"{worker.base}{path}"
    missing = call(url, method=method, data=body, context=worker.context)
    wrong = call(url, method=method, data=body, token=WRONG_TOKEN, context=worker.context)
    assert (missing.status, wrong.status) == (401, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    for token in (TOKEN, OTHER_TOKEN):
        right = call(url, method=method, data=body, token=token, context=worker.context)
        assert right.status != 401
        if expected is not None:
            assert right.status == expected, right.body


@pytest.mark.integration
def test_clickhouse_interface_takes_the_token_as_its_password(worker: Worker) -> None:
    """ClickHouse clients send credentials as user and password; the token is the password."""
    url = f"{worker.base}/?query=SELECT%2042"

    def ask(**headers: str) -> Reply:
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10, context=worker.context) as response:
                return Reply(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, dict(err.headers), err.read())

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    missing, wrong = ask(), ask(Authorization=basic("grafana", WRONG_TOKEN))
    assert (missing.status, missing.headers["X-ClickHouse-Exception-Code"]) == (401, "194")
    assert (wrong.status, wrong.headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    assert missing.body.startswith(b"Code: 194. DB::Exception: ") and b"(REQUIRED_PASSWORD)" in missing.body
    assert wrong.body.startswith(b"Code: 516. DB::Exception: ") and WRONG_TOKEN.encode() not in wrong.body
    for credentials in ({"Authorization": basic("grafana", TOKEN)},
                        {"X-ClickHouse-User": "superset", "X-ClickHouse-Key": OTHER_TOKEN},
                        {"Authorization": f"Bearer {TOKEN}"}):
        right = ask(**credentials)
        assert (right.status, right.body) == (200, b"42\n"), right.body
    for path in ("/ping", "/replicas_status"):  # liveness, as on a ClickHouse server: no credentials
        status = call(f"{worker.base}{path}", context=worker.context)
        assert (status.status, status.body) == (200, b"Ok.\n")


@pytest.mark.integration
def test_healthz_is_open_and_plain_http_or_untrusted_tls_is_refused(worker: Worker) -> None:
    assert call(f"{worker.base}/healthz", context=worker.context).status == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        call(f"{worker.base}/healthz", context=ssl.create_default_context())
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(worker.base.replace("https://", "http://") + "/healthz")


@pytest.mark.integration
def test_query_cli_sends_the_token_to_the_owner(worker: Worker) -> None:
    owner = orjson.loads((Path(worker.env["DRIFTLINE_HOME"]) / "clickhouse-owner.json").read_bytes())
    assert owner["query_url"] == f"{worker.base}/query"
    shown = _cli(worker, "query", "SELECT 41 + 1 AS answer", "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == '"answer"\n42\n'

    refused = _cli(worker, "query", "SELECT 1", DRIFTLINE_WORKER_AUTH_TOKENS=WRONG_TOKEN)
    assert refused.returncode == 1
    assert "requires a token" in refused.stderr and "a wrong token" in refused.stderr
    assert WRONG_TOKEN not in refused.stderr + refused.stdout


@pytest.mark.integration
def test_query_limits_hold_on_the_worker(worker: Worker) -> None:
    over = _cli(worker, "query", f"SELECT number FROM numbers({MAX_ROWS + 1})", "--format", "csv")
    assert over.returncode == 1
    assert f"more than {MAX_ROWS} rows" in over.stderr
    assert "DRIFTLINE_WORKER_QUERY_MAX_RESULT_ROWS" in over.stderr
    lifted = _cli(worker, "query", f"SELECT number FROM numbers({MAX_ROWS + 1}) SETTINGS max_result_rows = 0")
    assert lifted.returncode == 1 and "readonly" in lifted.stderr
    after = _cli(worker, "query", f"SELECT count() AS n FROM numbers({MAX_ROWS + 1})", "--format", "csv")
    assert (after.returncode, after.stdout) == (0, '"n"\n51\n'), after.stderr  # the next answer is clean

    # the failed query's session was replaced; the sink still writes beside it
    prediction_id = f"after-limit-{uuid.uuid4().hex[:8]}"
    for path, event in (("/predictions", {**PREDICTION, "prediction_id": prediction_id}),
                        ("/feedback", {"prediction_id": prediction_id, "label": 1})):
        reply = call(f"{worker.base}{path}", method="POST", data=orjson.dumps(event), token=TOKEN,
                     context=worker.context)
        assert reply.status == 202, reply.body
    sql = f"SELECT count() AS n FROM outcomes FINAL WHERE prediction_id = '{prediction_id}'"

    def written() -> bool:
        done = _cli(worker, "query", sql, "--format", "csv")
        return done.returncode == 0 and done.stdout == '"n"\n1\n'

    wait_for(written, 90, "the outcome written by the sink", worker.proc, worker.log)


@pytest.mark.integration
def test_worker_logs_never_show_tokens(worker: Worker) -> None:
    for token in (TOKEN, WRONG_TOKEN, None):  # answered: whatever the worker logs about them is written
        call(f"{worker.base}/metrics", token=token, context=worker.context)
        call(f"{worker.base}/query", method="POST", data=b"SELECT 1", token=token, context=worker.context)
    text = worker.log.read_text(errors="replace")
    assert "[DEBUG]" in text  # the worker logs at debug level
    for token in (TOKEN, OTHER_TOKEN, WRONG_TOKEN):
        assert token not in text, [line for line in text.splitlines() if token in line][:3]


@pytest.mark.integration
def test_serve_with_insecure_binds_every_interface(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`driftline serve --insecure` on 0.0.0.0 serves without a token (reached through 127.0.0.1 only)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(DRIFTLINE_HOME=str(tmp_path / "home"), DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    tag = uuid.uuid4().hex[:10]
    for name in TopicSettings.topic_fields():
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = f"s{tag}.{name}"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "serve", "--host", "0.0.0.0", "--port", str(port), "--insecure"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: call(f"http://127.0.0.1:{port}/healthz").status == 200, 120, "serve", proc, log)
        invalid = call(f"http://127.0.0.1:{port}/predictions", method="POST", data=b"{")
        assert invalid.status == 400  # served without a token; nothing produced
        assert "serving on 0.0.0.0 WITHOUT authentication" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_client_context_trusts_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    settings = Settings(worker={"tls_certfile": cert, "tls_keyfile": key, "auth_tokens": [SecretStr(TOKEN)]})
    context = client_ssl_context(settings)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any(c["subject"] == ((("commonName", "localhost"),),) for c in context.get_ca_certs())
