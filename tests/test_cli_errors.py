"""Errors a user can act on: one line naming what is wrong and what to do, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.cli.common import broker_reachable
from driftline.cli.main import main
from driftline.config import Settings
from driftline.local.broker import free_port
from driftline.local.state import LocalBrokerState, write_local_state


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    return {**clean, "DRIFTLINE_HOME": str(tmp_path / "home"), **extra}


def test_worker_without_a_broker_is_one_line_naming_the_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    proc = _run(["worker", "--web-port", str(free_port())],
                _env(tmp_path, DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS=address))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"driftline worker: no Kafka broker reachable at {address} ")
    assert "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS" in lines[0] and "`driftline local up`" in lines[0]


@pytest.mark.parametrize("command", [
    ["simulate", "--duration", "5"],
    ["replay", "--run-id", "r"],
    ["jobs", "retrain-listener", "--idle-exit", "1"],
    ["trigger", "--model", "m", "--version", "1", "--reason", "test"],
])
def test_every_kafka_command_without_a_broker_says_so(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded broker a `driftline local up` recorded has stopped, none is configured."""
    if broker_reachable(Settings(home=tmp_path)):
        pytest.skip("something listens on the default Kafka address")
    for name in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("DRIFTLINE_HOME", str(home))
    write_local_state(home, LocalBrokerState(pid=2**22 + 17, bootstrap_servers=f"127.0.0.1:{free_port()}",
                                             started_at=0.0, log_path="", binary="tansu"))
    assert main(command) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"driftline {command[0]}: no Kafka broker reachable at 127.0.0.1:9092 (the default address; the "
        f"embedded broker `driftline local up` started in {home} has stopped): start the embedded broker "
        "with `driftline local up`, or set DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS=host:port"]


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("DRIFTLINE_WINDOWS_SIZES_S", "abc",
     "DRIFTLINE_WINDOWS_SIZES_S='abc' is not valid JSON: expected a JSON list, e.g. '[300,3600]'"),
    ("DRIFTLINE_WINDOWS_SEGMENT_KEYS", "region",
     "DRIFTLINE_WINDOWS_SEGMENT_KEYS='region' is not valid JSON: expected a JSON list"),
    ("DRIFTLINE_WINDOWS_SIZES_S", '{"a": 1}',
     "windows.sizes_s [env DRIFTLINE_WINDOWS_SIZES_S]: Input should be a valid list (expected a JSON list"),
])
def test_bad_env_value_names_the_variable_and_the_expected_form(
    name: str, value: str, expected: str, tmp_path: Path
) -> None:
    proc = _run(["db", "status"], _env(tmp_path, **{name: value}))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expected in lines[0], lines[0]


def test_simulate_rate_zero_is_one_line(tmp_path: Path) -> None:
    proc = _run(["simulate", "--rate", "0", "--out", str(tmp_path)], _env(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "driftline simulate: invalid scenario: rate: Input should be greater than 0"


def test_an_unexpected_error_is_not_mistaken_for_an_unreachable_broker() -> None:
    """The classifier of client errors works with the installed kafka-python (3.x has no
    NoBrokersAvailable; importing it turned every unexpected CLI error into an ImportError)."""
    from aiokafka.errors import KafkaConnectionError

    from driftline.cli.main import _broker_unreachable

    assert not _broker_unreachable(ValueError("boom"))
    assert _broker_unreachable(KafkaConnectionError("no broker"))


@pytest.mark.parametrize(("command", "option"), [
    (["worker", "--web-port"], "--web-port PORT (or DRIFTLINE_WORKER_WEB_PORT)"),
    (["serve", "--port"], "--port PORT"),
])
def test_a_web_port_in_use_is_one_line_naming_the_option(
    command: list[str], option: str, tmp_path: Path
) -> None:
    """Checked before the server starts: the bind error came as a traceback (the worker's after
    Faust had started). The listener on the port also stands in for a reachable broker."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        proc = _run([*command, str(port)],
                    _env(tmp_path, DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"driftline {command[0]}: port {port} on 127.0.0.1 is in use (another driftline worker or serve?): "
        f"stop it, or choose a free port with {option}")


@pytest.mark.parametrize("how", ["option", "env"])
def test_a_malformed_config_file_is_one_line_naming_the_file(how: str, tmp_path: Path) -> None:
    config = tmp_path / "strict.toml"
    config.write_text("[drift\npsi_threshold = 0.1\n")
    if how == "option":
        proc = _run(["--config", str(config), "db", "status"], _env(tmp_path))
    else:
        proc = _run(["db", "status"], _env(tmp_path, DRIFTLINE_CONFIG=str(config)))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"driftline: invalid configuration: config file {str(config)!r}: Expected "
                                   "']' at the end of a table declaration (at line 1, column 7)")


@pytest.mark.parametrize(("toml", "expected"), [
    ("[drift]\npsi_treshold = 0.1\n",
     "drift.psi_treshold [env DRIFTLINE_DRIFT_PSI_TRESHOLD]: no such setting "
     "(did you mean drift.psi_threshold?)"),
    ("psi_threshold = 0.1\n",  # outside its [drift] table
     "psi_threshold [env DRIFTLINE_PSI_THRESHOLD]: no such setting (did you mean drift.psi_threshold?)"),
    ("[drfit]\npsi_threshold = 0.1\n", "drfit [env DRIFTLINE_DRFIT]: no such setting (did you mean drift?)"),
])
def test_a_misspelt_setting_names_the_nearest_one(toml: str, expected: str, tmp_path: Path) -> None:
    """pydantic said "Extra inputs are not permitted", which does not say the name is wrong."""
    config = tmp_path / "strict.toml"
    config.write_text(toml)
    proc = _run(["--config", str(config), "db", "status"], _env(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"driftline: invalid configuration: {expected}"


def test_profile_show_of_a_model_without_one_says_how_to_get_one(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _run(["db", "migrate"], env).returncode == 0
    proc = _run(["profile", "show", "--model", "nobody"], env)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "driftline: no reference profile of model 'nobody' in ClickHouse: build one with `driftline profile "
        "build --model nobody --version VERSION --data FILE`, or let a worker take the model's first full "
        "window")


def test_a_misspelt_section_in_an_env_var_is_a_warning_naming_the_setting(tmp_path: Path) -> None:
    """pydantic-settings ignores a DRIFTLINE_ variable of no section: the value was dropped silently."""
    env = _env(tmp_path, DRIFTLINE_DRFIT_PSI_THRESHOLD="0.5", DRIFTLINE_TRIGGER_ID="t")
    proc = _run(["db", "status"], env)
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warnings == ["driftline: warning: DRIFTLINE_DRFIT_PSI_THRESHOLD: not a setting, ignored "
                        "(did you mean DRIFTLINE_DRIFT_PSI_THRESHOLD?)"], proc.stderr
