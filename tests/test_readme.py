"""The README: its configuration reference lists every setting, and its "Using it" walk runs as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from driftline.config import Settings
from driftline.local.broker import free_port

README = Path(__file__).resolve().parents[1] / "README.md"


def env_names() -> list[str]:
    names = []
    for section, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names += [f"DRIFTLINE_{section.upper()}_{sub.upper()}" for sub in ann.model_fields]
        else:
            names.append(f"DRIFTLINE_{section.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    missing = [name for name in env_names() if f"`{name}`" not in text]
    assert missing == []


def test_readme_gives_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text


# -- the "Using it" walk, as written ---------------------------------------------------------------

DRIFTED_ROW = re.compile(r"│\s*(x1|x3)\s*│[^│\n]*│\s*1\s*│")


def using_it_commands() -> list[str]:
    """The lines of the first bash block under "## Using it", comments dropped."""
    section = README.read_text().split("## Using it", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _driftline(argv: list[str]) -> list[str]:
    assert argv[0] == "driftline", argv
    return [sys.executable, "-m", "driftline.cli.main", *argv[1:]]


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_using_it_walk_runs_as_written_in_a_fresh_directory(tmp_path: Path) -> None:
    """Each command of the walk in an empty directory, with no DRIFTLINE_* settings but the web
    port (6066 may be taken on a test machine): every one exits 0, the worker runs in the
    background (`&`), and the query, repeated until a deadline, shows x1 or x3 drifted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_WORKER_WEB_PORT"] = str(free_port())
    commands = using_it_commands()
    assert [shlex.split(c, comments=True)[:2] for c in commands] == [
        ["driftline", "local"], ["driftline", "db"], ["driftline", "simulate"], ["driftline", "profile"],
        ["driftline", "worker"], ["driftline", "simulate"], ["driftline", "query"]]
    worker: subprocess.Popen[bytes] | None = None
    log = tmp_path / "worker.log"
    try:
        for line in commands:
            argv = shlex.split(line, comments=True)
            if argv[-1] == "&":
                with log.open("wb") as out:
                    worker = subprocess.Popen(_driftline(argv[:-1]), cwd=tmp_path, env=env, stdout=out,
                                              stderr=subprocess.STDOUT)
                continue
            if argv[1] == "query":
                _query_until_drifted(argv, tmp_path, env, worker, log)
                continue
            done = subprocess.run(_driftline(argv), cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            assert worker is None or worker.poll() is None, log.read_text()[-3000:]
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        subprocess.run(_driftline(["driftline", "local", "down"]), cwd=tmp_path, env=env,
                       capture_output=True, timeout=60)
    assert worker is not None and worker.returncode == 0, log.read_text()[-3000:]
    worker_log = log.read_text()
    # Kafka/Faust chatter stays below WARNING by default; driftline's own INFO lines remain (its
    # app's and runners' start and stop among them).
    chatter = [line for line in worker_log.splitlines()
               if "[INFO]" in line and ("[^" in line or "woke up too late" in line)
               and not any(own in line for own in ("[^-DriftlineApp]", "[^--Runners]"))]
    assert chatter == [], worker_log[-3000:]
    assert "[INFO] stage shard: shards" in worker_log, worker_log[-3000:]


def _query_until_drifted(argv: list[str], cwd: Path, env: dict[str, str],
                         worker: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + 900  # the worker catches up with an hour of traffic (busy machine)
    last = ""
    while time.monotonic() < deadline:
        assert worker is not None and worker.poll() is None, log.read_text()[-3000:]
        done = subprocess.run(_driftline(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        last = done.stdout
        if DRIFTED_ROW.search(last):
            return
        time.sleep(2)
    raise AssertionError(f"the query never showed x1 or x3 drifted:\n{last}")
