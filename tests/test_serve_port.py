"""`driftline serve --port 0`: the owner record and the line it prints name the port it got. Both
said port 0 (written before the port was bound, and aiohttp's banner), so `driftline query` could
not reach it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

CLI = [sys.executable, "-m", "driftline.cli.main"]


def _listening_port(log: Path, proc: subprocess.Popen[bytes], deadline_s: float = 120) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text())
        if found:
            return int(found.group(1))
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"serve printed no address in {deadline_s}s: {log.read_text()}")


def test_serve_on_port_0_records_and_prints_the_port_it_got(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")},
           "DRIFTLINE_HOME": str(tmp_path / "home"),
           "DRIFTLINE_CLICKHOUSE_URL": f"chdb://{tmp_path / 'chdb'}",
           "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}  # no broker needed: --no-ingest
    migrated = subprocess.run([*CLI, "db", "migrate"], env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "serve", "--clickhouse-http", "--no-ingest", "--port", "0"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    owner_file = tmp_path / "home" / "clickhouse-owner.json"
    try:
        port = _listening_port(log, proc)
        assert port != 0
        assert orjson.loads(owner_file.read_bytes()) == {
            "pid": proc.pid, "query_url": f"http://127.0.0.1:{port}/query"}
        shown = subprocess.run([*CLI, "query", "SELECT 41 + 1 AS answer", "--format", "csv"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert (shown.returncode, shown.stdout) == (0, '"answer"\n42\n'), shown.stderr
        # the line a user reads: where it listens, the URLs to use
        assert f"listening on 127.0.0.1:{port}: http://127.0.0.1:{port}/healthz, /query, " in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    assert not owner_file.exists()
