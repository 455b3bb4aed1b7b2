"""Read-only queries: the owner record, the /query handler, and routing while another process owns chDB
(through its ClickHouse HTTP interface)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from driftline.config import Settings
from driftline.store.client import StoreError, connect
from driftline.store.guard import QueryLimits
from driftline.store.migrate import discover, migrate
from driftline.store.owner import claim_owner, owner_path, read_owner, release_owner
from driftline.store.query import run_query
from driftline.streams.query_endpoint import make_query_handler

# A process that owns an embedded ClickHouse directory, as the worker does: it migrates, writes two
# rows, optionally serves /query and the ClickHouse HTTP interface and records itself as owner, then
# holds the engine until stdin closes.
OWNER_SCRIPT = """
import asyncio, sys, time
from aiohttp import web
from driftline.config import Settings
from driftline.store.client import connect
from driftline.store.migrate import discover, migrate
from driftline.store.embedded_reader import EmbeddedReader
from driftline.store.owner import claim_owner, release_owner
from driftline.store.writer import ClickHouseRowWriter
from driftline.streams.clickhouse_http import add_clickhouse_interface
from driftline.streams.query_endpoint import make_query_handler

async def main(serve):
    settings = Settings()
    client = connect(settings)
    migrate(client, settings)
    writer = ClickHouseRowWriter(client, settings.clickhouse.database, close_client=False)
    now = int(time.time() * 1000)  # recent: the tables' TTL drops old rows
    rows = [{"model_id": m, "window_start": now, "n_drifted": n} for m, n in (("a", 1), ("b", 2))]
    writer.write("model_drift", rows)
    writer.flush()
    runner = None
    if serve:
        app = web.Application()
        app.router.add_post("/query", make_query_handler(lambda: connect(settings, readonly=True)))
        if settings.clickhouse.embedded:
            add_clickhouse_interface(app, EmbeddedReader(settings))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        claim_owner(settings.home, f"http://127.0.0.1:{port}/query")
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    release_owner(settings.home)
    if runner:
        await runner.cleanup()

asyncio.run(main(sys.argv[1] == "serve"))
"""


def _env(settings: Settings, url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DRIFTLINE_HOME=str(settings.home), DRIFTLINE_CLICKHOUSE_URL=url,
               DRIFTLINE_CLICKHOUSE_DATABASE=settings.clickhouse.database,
               DRIFTLINE_CLICKHOUSE_USERNAME=settings.clickhouse.username,
               DRIFTLINE_CLICKHOUSE_PASSWORD=settings.clickhouse.password.get_secret_value(),
               DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers)
    return env


def _start_owner(env: dict[str, str], mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, mode], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise AssertionError(f"owner process failed: {proc.communicate()[1]}")
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    try:
        proc.communicate(timeout=20)  # closes stdin: the owner releases and exits
    finally:
        proc.kill()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


# -- owner record ----------------------------------------------------------------------------------


def test_owner_record_lifecycle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert read_owner(home) is None
    claim_owner(home, "http://127.0.0.1:6066/query")
    owner = read_owner(home)
    assert owner is not None and (owner.pid, owner.query_url) == (os.getpid(), "http://127.0.0.1:6066/query")
    release_owner(home)
    assert read_owner(home) is None and not owner_path(home).exists()

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    owner_path(home).write_bytes(orjson.dumps({"pid": int(finished.stdout), "query_url": "http://x/query"}))
    assert read_owner(home) is None  # a dead owner is ignored
    release_owner(home)
    assert owner_path(home).exists()  # ... and only its own record is removed by a process
    owner_path(home).write_text("{not json")
    assert read_owner(home) is None


# -- the /query handler ----------------------------------------------------------------------------


@pytest.fixture
def store(settings: Settings) -> Iterator[tuple[Settings, Client]]:
    client = connect(settings)
    migrate(client, settings)
    db = settings.clickhouse.database
    # window_start recent: the tables' TTL drops old rows
    client.command(f"INSERT INTO `{db}`.model_drift (model_id, window_start, n_drifted)"
                   " VALUES ('m', now64(), 3)")
    yield settings, client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse.database}`")
    client.close()


def _ask(client_factory: Callable[[], Client], requests: list[tuple[str, str]],
         limits: QueryLimits | None = None) -> list[tuple[int, str]]:
    """Answers of a /query handler to (sql, format) requests, served by a test server."""

    async def scenario() -> list[tuple[int, str]]:
        app = web.Application()
        app.router.add_post("/query", make_query_handler(client_factory, limits=limits))
        answers = []
        async with TestClient(TestServer(app)) as http:
            for sql, fmt in requests:
                response = await http.post(f"/query?format={fmt}", data=sql.encode())
                answers.append((response.status, await response.text()))
        return answers

    return asyncio.run(scenario())


@pytest.mark.integration
def test_query_handler_answers_reads_and_rejects_writes(store: tuple[Settings, Client]) -> None:
    settings, client = store
    writes = ["INSERT INTO model_drift (model_id) VALUES ('x')", "DROP TABLE model_drift",
              "SELECT 1; DROP TABLE model_drift", "SELECT 1 INTO OUTFILE 'leak.csv'"]
    answers = _ask(lambda: connect(settings, readonly=True), [
        ("SELECT model_id, n_drifted FROM model_drift FINAL", "json"),
        ("SELECT model_id FROM model_drift", "csv"),
        ("SELECT model_id FROM model_drift", "tsv"),
        *((sql, "json") for sql in writes),
        ("SELECT no_such_column FROM model_drift", "json"),
        ("SELECT 1", "xml"),
    ])
    status, body = answers[0]
    assert status == 200
    result = orjson.loads(body)
    assert [m["name"] for m in result["meta"]] == ["model_id", "n_drifted"]
    assert result["data"] == [{"model_id": "m", "n_drifted": 3}]
    assert answers[1:3] == [(200, '"model_id"\n"m"\n'), (200, "model_id\nm\n")]
    for (status, body), sql in zip(answers[3:7], writes, strict=True):
        assert status == 400 and body.startswith("rejected:"), sql
    assert answers[7][0] == 400 and "no_such_column" in answers[7][1]
    assert answers[8][0] == 400
    assert client.command(f"SELECT count() FROM `{settings.clickhouse.database}`.model_drift") == 1


@pytest.mark.integration
def test_read_only_client_is_enforced_by_the_engine(store: tuple[Settings, Client]) -> None:
    settings, _ = store
    reader = connect(settings, readonly=True)
    try:
        for statement in ("DROP TABLE model_drift", "INSERT INTO model_drift (model_id) VALUES ('x')",
                          "SET readonly = 0", "SELECT * FROM file('/etc/hostname', 'LineAsString')"):
            with pytest.raises(DatabaseError, match="readonly"):
                reader.command(statement)
        assert reader.command("SELECT count() FROM model_drift") == 1
    finally:
        reader.close()
    # a writable client is refused by the handler rather than trusted
    assert _ask(lambda: connect(settings), [("SELECT 1", "json")])[0][0] == 500


@pytest.mark.integration
def test_query_limits_fail_clearly_and_cannot_be_lifted(store: tuple[Settings, Client]) -> None:
    settings, _ = store
    limits = QueryLimits(max_execution_time_s=0.5, max_result_rows=5)
    limited = lambda: connect(settings, readonly=True, limits=limits.clickhouse_settings())  # noqa: E731
    answers = _ask(limited, [
        ("SELECT number FROM numbers(6)", "json"),
        ("SELECT number FROM numbers(5)", "csv"),  # exactly the limit passes; the answer is clean
        ("SELECT number FROM numbers(6) SETTINGS max_result_rows = 0", "csv"),
        ("SELECT count() FROM numbers(1000000000000)", "csv"),
        ("SELECT 7 AS x", "csv"),
    ], limits)
    assert answers[0] == (400, "the result has more than 5 rows, the /query limit "
                               "(DRIFTLINE_WORKER_QUERY_MAX_RESULT_ROWS): aggregate, filter or add a LIMIT")
    assert answers[1] == (200, '"number"\n0\n1\n2\n3\n4\n')
    assert answers[2][0] == 400 and "readonly" in answers[2][1]
    assert answers[3] == (400, "the query ran longer than 0.5 s, the /query limit "
                               "(DRIFTLINE_WORKER_QUERY_MAX_EXECUTION_TIME_S)")
    assert answers[4] == (200, '"x"\n7\n')
    # a client opened without the limits is refused rather than trusted
    assert _ask(lambda: connect(settings, readonly=True), [("SELECT 1", "json")], limits)[0][0] == 500


# -- routing while another process owns the engine -------------------------------------------------


@pytest.mark.integration
def test_query_while_another_process_owns_the_engine(settings: Settings, worker_clickhouse_url: str) -> None:
    env = _env(settings, worker_clickhouse_url)
    owner = _start_owner(env, "serve")
    try:
        recorded = read_owner(settings.home)
        assert recorded is not None and recorded.pid == owner.pid

        sql = "SELECT model_id, n_drifted FROM model_drift FINAL ORDER BY model_id"
        shown = _cli(env, "query", sql, "--format", "csv")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == '"model_id","n_drifted"\n"a",1\n"b",2\n'
        table = _cli(env, "query", sql)
        assert table.returncode == 0, table.stderr
        assert "n_drifted" in table.stdout and "2 row(s)" in table.stdout

        # in this process too (it never opens the owner's directory)
        worker_settings = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(
            update={"url": worker_clickhouse_url})})
        if worker_settings.clickhouse.embedded:
            assert orjson.loads(run_query(worker_settings, sql))["rows"] == 2
            # values travel as bound parameters through the owner too, quotes and arrays included
            bound = ("SELECT model_id FROM model_drift FINAL WHERE has({ids:Array(String)}, model_id) "
                     "OR model_id = {odd:String} ORDER BY model_id")
            answer = run_query(worker_settings, bound, parameters={"ids": ["b", "it's"], "odd": "x'); DROP"})
            assert [r["model_id"] for r in orjson.loads(answer)["data"]] == ["b"]

        # the owner's endpoint refuses writes even when the local guard is bypassed
        request = urllib.request.Request(recorded.query_url, data=b"DROP TABLE model_drift", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        if worker_settings.clickhouse.embedded:  # and so does its ClickHouse interface, as ClickHouse would
            request = urllib.request.Request(recorded.clickhouse_url, data=b"DROP TABLE model_drift",
                                             method="POST")
            with pytest.raises(urllib.error.HTTPError) as readonly:
                urllib.request.urlopen(request, timeout=10)
            assert readonly.value.headers["X-ClickHouse-Exception-Code"] == "164"
            assert readonly.value.read().startswith(b"Code: 164. DB::Exception: ")

        if worker_settings.clickhouse.embedded:
            busy = _cli(env, "db", "migrate")
            assert busy.returncode == 1
            assert f"in use by process {owner.pid}" in busy.stderr and recorded.query_url in busy.stderr
            # status only reads: the owner answers it (it told a user to stop the worker)
            shown = _cli(env, "db", "status")
            assert shown.returncode == 0, shown.stderr
            states = re.findall(r"^\W+(\d{3})\W+\w+\W+(applied|pending|changed)\W+\d{4}-", shown.stdout, re.M)
            assert len(states) == len(discover()) and {s for _, s in states} == {"applied"}, shown.stdout
    finally:
        _stop(owner)
    assert read_owner(settings.home) is None


@pytest.mark.integration
def test_busy_engine_without_owner_record(settings: Settings, worker_clickhouse_url: str) -> None:
    if not worker_clickhouse_url.startswith("chdb://"):
        pytest.skip("only an embedded engine can be held by one process")
    env = _env(settings, worker_clickhouse_url)
    holder = _start_owner(env, "hold")
    try:
        refused = _cli(env, "query", "SELECT 1")
        assert refused.returncode == 1
        assert f"in use by process {holder.pid}" in refused.stderr
        assert "does not serve queries" in refused.stderr
        for action in ("status", "migrate"):
            busy = _cli(env, "db", action)
            # driftline's line alone: chDB wrote its own "Cannot lock file" text to stderr before it
            assert busy.returncode == 1 and len(busy.stderr.splitlines()) == 1, busy.stderr
            assert busy.stderr.startswith("driftline: embedded ClickHouse at ")
            assert f"in use by process {holder.pid}" in busy.stderr
            assert f"stop process {holder.pid} to run `driftline db {action}`" in busy.stderr
        probe = subprocess.run(
            [sys.executable, "-c",
             "from driftline.config import Settings; from driftline.store.writer import open_row_writer;"
             "w = open_row_writer(Settings()); print(type(w).__name__); w.close()"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert probe.stdout.strip() == "KafkaSinkRowWriter", probe.stderr
    finally:
        _stop(holder)


def test_run_query_refuses_writes_before_connecting(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, clickhouse={"url": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="only"):
        run_query(settings, "DROP TABLE outcomes")
    with pytest.raises(StoreError, match="cannot reach"):
        run_query(settings, "SELECT 1")
