"""ClickHouse's HTTP interface on a real worker (embedded broker and chDB), driven by real clients:
clickhouse-connect from PyPI as BI code uses it, plain HTTP as any other client sends it, and
`driftline query` / `driftline serve --clickhouse-http` from other processes."""

from __future__ import annotations

import base64
import gzip
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import clickhouse_connect
import lz4.frame
import orjson
import pytest
from backports import zstd
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from harness import wait_for

from driftline.config import TopicSettings
from driftline.local.broker import free_port

pytestmark = pytest.mark.integration

TOKEN = "tok-5d1c0b7e-DO-NOT-LOG-bi"
# Above the ~1,900 rows of system.settings, which clickhouse-connect reads when it connects.
MAX_ROWS = 5000
CLI = [sys.executable, "-m", "driftline.cli.main"]


@dataclass
class Worker:
    port: int
    database: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def ask(base: str, sql: str | None = None, *, method: str | None = None, password: str = TOKEN,
        headers: dict[str, str] | None = None, **query: str) -> Reply:
    """One request as a ClickHouse HTTP client sends it (basic auth; SQL in the body when given)."""
    url = f"{base}/" + (f"?{urlencode(query)}" if query else "")
    data = sql.encode() if sql is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                     headers={"Authorization": _basic("bi", password), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, _session_clickhouse_url: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    if not _session_clickhouse_url.startswith("chdb://"):
        pytest.skip("the ClickHouse HTTP interface serves the embedded engine (a server speaks it itself)")
    directory = tmp_path_factory.mktemp("ch-http-worker")
    tag = uuid.uuid4().hex[:10]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update({
        "DRIFTLINE_HOME": str(directory / "home"),
        "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{directory / 'chdb'}",
        "DRIFTLINE_CLICKHOUSE_DATABASE": f"h_{tag}",
        "DRIFTLINE_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "DRIFTLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "DRIFTLINE_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
        "DRIFTLINE_WORKER_WEB_PORT": str(port),
        "DRIFTLINE_WORKER_AUTH_TOKENS": orjson.dumps([TOKEN]).decode(),
        "DRIFTLINE_WORKER_QUERY_MAX_RESULT_ROWS": str(MAX_ROWS),
    })
    for name in TopicSettings.topic_fields():
        env[f"DRIFTLINE_TOPICS_{name.upper()}"] = f"h{tag}.{name}"
    log = directory / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "worker", "--run-seconds", "600"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    handle = Worker(port, f"h_{tag}", env, log, proc)
    try:
        wait_for(lambda: ask(handle.base, "SELECT 1").status == 200, 120, "the ClickHouse interface",
                 proc, log)
        yield handle
    finally:
        _stop(proc)


@pytest.fixture
def client(worker: Worker) -> Iterator[Client]:
    """clickhouse-connect as a BI tool or a notebook opens it: host, port, user, password."""
    opened = clickhouse_connect.get_client(host="127.0.0.1", port=worker.port, username="bi", password=TOKEN)
    yield opened
    opened.close()


def test_clickhouse_connect_reads_through_the_worker(worker: Worker, client: Client) -> None:
    # the connect-time handshake (version, timezone, system.settings) went through the interface
    assert client.server_version == client.command("SELECT version()")
    assert client.command("SELECT currentDatabase()") == worker.database
    tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    assert {"outcomes", "drift_scores", "model_metrics", "dead_letters"} <= tables
    # what Superset's SQLAlchemy dialect (clickhouse-connect's) asks before it reads a table
    assert (client.command("EXISTS TABLE outcomes"), client.command("EXISTS DATABASE no_such_db")) == (1, 0)

    bound = client.query(
        "SELECT number, toString(number) AS s FROM numbers(6) "
        "WHERE number >= {low:UInt32} AND s != {skip:String}", parameters={"low": 1, "skip": "3"})
    assert bound.result_rows == [(1, "1"), (2, "2"), (4, "4"), (5, "5")]
    quoted = client.query("SELECT arrayJoin({names:Array(String)}) AS name",
                          parameters={"names": ["it's", "back\\slash", "x'); DROP TABLE outcomes --"]})
    assert [r[0] for r in quoted.result_rows] == ["it's", "back\\slash", "x'); DROP TABLE outcomes --"]

    frame = client.query_df("SELECT number AS n, number * 2 AS twice FROM numbers(4)")
    assert list(frame.columns) == ["n", "twice"] and frame["twice"].tolist() == [0, 2, 4, 6]
    table = client.query_arrow("SELECT number AS n, toString(number) AS s FROM numbers(3)")
    assert table.column("s").to_pylist() == ["0", "1", "2"]

    # rows the worker's own pipeline writes are readable while it writes them
    prediction_id = f"bi-{uuid.uuid4().hex[:8]}"
    for path, event in (("/predictions", {"prediction_id": prediction_id, "model_id": "m",
                                          "features": {"x": 1.0}, "prediction": 0.5}),
                        ("/feedback", {"prediction_id": prediction_id, "label": 1})):
        request = urllib.request.Request(f"{worker.base}{path}", data=orjson.dumps(event), method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
    count = "SELECT count() FROM outcomes FINAL WHERE prediction_id = {id:String}"
    wait_for(lambda: client.command(count, parameters={"id": prediction_id}) == 1, 180,
             "the outcome written by the sink", worker.proc, worker.log)


def test_writes_get_readonly_and_the_limits_hold(client: Client) -> None:
    for statement in ("INSERT INTO outcomes (prediction_id) VALUES ('x')", "DROP TABLE outcomes",
                      "CREATE TABLE t (x Int8) ENGINE = Memory", "SELECT 1 INTO OUTFILE '/tmp/leak.csv'"):
        with pytest.raises(DatabaseError, match=r"code: 164.*Code: 164\. DB::Exception: .*\(READONLY\)"):
            client.command(statement)
    with pytest.raises(DatabaseError, match=r"Code: 62\. DB::Exception: .*\(SYNTAX_ERROR\)"):
        client.command("SELECT 1; DROP TABLE outcomes")
    with pytest.raises(DatabaseError, match=r"Code: 396\..*TOO_MANY_ROWS_OR_BYTES"):
        client.query(f"SELECT number FROM numbers({MAX_ROWS + 1})")
    assert client.command(f"SELECT count() FROM numbers({MAX_ROWS + 1})") == MAX_ROWS + 1  # a clean answer


def test_the_protocol_as_plain_http_clients_send_it(worker: Worker) -> None:
    base = worker.base
    get = ask(base, query="SELECT 1")
    assert (get.status, get.body, get.headers["X-ClickHouse-Format"]) == (200, b"1\n", "TabSeparated")
    assert get.headers["Content-Type"].startswith("text/tab-separated-values")
    assert orjson.loads(ask(base, "SELECT 1 AS x FORMAT JSONCompact").body)["data"] == [[1]]
    assert ask(base, "SELECT 1 AS x", default_format="CSVWithNames").body == b'"x"\n1\n'
    assert ask(base, "SELECT 1 AS x", headers={"X-ClickHouse-Format": "JSONEachRow"}).body == b'{"x":1}\n'
    assert ask(base, " 2 AS y", query="SELECT").body == b"2\n"  # query parameter + body, concatenated
    assert ask(base, "SELECT currentDatabase()").body == f"{worker.database}\n".encode()
    assert ask(base, "SELECT currentDatabase()", database="system").body == b"system\n"
    in_system = ask(base, "SELECT currentDatabase()", headers={"X-ClickHouse-Database": "system"})
    assert in_system.body == b"system\n"
    escaped = ask(base, "SELECT {s:String} AS s, {n:UInt8} + 1 AS n FORMAT JSONEachRow",
                  param_s="it's\\ta", param_n="41")
    assert orjson.loads(escaped.body) == {"s": "it's\ta", "n": 42}  # ClickHouse's escaped text form
    assert ask(base, "SELECT 1", query_id="q-7").headers["X-ClickHouse-Query-Id"] == "q-7"

    # settings: as for a readonly user, the current value passes and a change is refused
    assert ask(base, "SELECT 1", max_result_rows=str(MAX_ROWS)).status == 200
    changed = ask(base, "SELECT 1", max_result_rows="0")
    assert (changed.status, changed.headers["X-ClickHouse-Exception-Code"]) == (500, "164")

    # errors: ClickHouse's body, header and HTTP status
    for sql, query, code, status in (("SELEC 1", {}, "62", 400),
                                     ("SELECT * FROM no_such_table", {}, "60", 404),
                                     ("SELECT 1", {"database": "no_such_db"}, "81", 404),
                                     ("INSERT INTO outcomes (prediction_id) VALUES ('x')", {}, "164", 500),
                                     ("SELECT 1", {"compress": "1"}, "1", 500)):
        error = ask(base, sql, **query)
        assert (error.status, error.headers["X-ClickHouse-Exception-Code"]) == (status, code), error.body
        assert error.body.startswith(f"Code: {code}. DB::Exception: ".encode()) and error.body.endswith(b"\n")

    # compression: whatever the client accepts, unless it turns it off
    plain = ask(base, "SELECT number FROM numbers(40) FORMAT TSV").body
    decoders = {"gzip": gzip.decompress, "deflate": zlib.decompress, "zstd": zstd.decompress,
                "lz4": lz4.frame.decompress}
    for encoding, decode in decoders.items():
        reply = ask(base, "SELECT number FROM numbers(40) FORMAT TSV",
                    headers={"Accept-Encoding": f"br, {encoding}"})
        assert reply.headers["Content-Encoding"] == encoding and decode(reply.body) == plain
    off = ask(base, "SELECT 1", enable_http_compression="0", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in off.headers and off.body == b"1\n"

    for path in ("/ping", "/replicas_status"):
        with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
            assert response.read() == b"Ok.\n"
    assert ask(base).body == b"Ok.\n"  # GET / without a query, as health checks send it


def test_driftline_query_reads_through_the_interface(worker: Worker) -> None:
    owner = orjson.loads((Path(worker.env["DRIFTLINE_HOME"]) / "clickhouse-owner.json").read_bytes())
    assert owner == {"pid": worker.proc.pid, "query_url": f"{worker.base}/query"}
    sql = "SELECT 41 + 1 AS answer, currentDatabase() AS db"
    shown = subprocess.run([*CLI, "query", sql, "--format", "csv"], env=worker.env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f'"answer","db"\n42,"{worker.database}"\n'
    missing = subprocess.run([*CLI, "query", "SELECT * FROM no_such_table"], env=worker.env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "Code: 60. DB::Exception: " in missing.stderr
    assert worker.proc.poll() is None


def test_serve_clickhouse_http_without_a_worker(worker: Worker, tmp_path: Path) -> None:
    port = free_port()
    busy = subprocess.run([*CLI, "serve", "--clickhouse-http", "--no-ingest", "--port", str(port)],
                          env=worker.env, capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and f"in use by process {worker.proc.pid}" in busy.stderr

    env = {**worker.env, "DRIFTLINE_HOME": str(tmp_path / "home"),
           "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}"}
    migrated = subprocess.run([*CLI, "db", "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    log = tmp_path / "serve.log"
    with log.open("wb") as out:  # no broker needed: --no-ingest
        proc = subprocess.Popen([*CLI, "serve", "--clickhouse-http", "--no-ingest", "--port", str(port)],
                                env={**env, "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"},
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: ask(base, "SELECT 1").status == 200, 120, "serve --clickhouse-http", proc, log)
        bi = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="bi", password=TOKEN)
        assert bi.command("SELECT count() FROM outcomes") == 0
        bi.close()
        shown = subprocess.run([*CLI, "query", "SELECT count() AS n FROM model_drift", "--format", "csv"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert (shown.returncode, shown.stdout) == (0, '"n"\n0\n'), shown.stderr
        assert ask(base, "DROP TABLE outcomes").headers["X-ClickHouse-Exception-Code"] == "164"
    finally:
        _stop(proc, signal.SIGINT)
    assert not (tmp_path / "home" / "clickhouse-owner.json").exists()
