"""Settings: env names, config file, secrets, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftline.config import ConfigError, load_settings


def test_env_vars_of_the_interface_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", "https://ch.example:8443")
    monkeypatch.setenv("DRIFTLINE_WINDOWS_SIZES_S", "[3600, 300, 300]")
    s = load_settings()
    assert s.bootstrap_servers() == "k1:9092,k2:9092"
    assert s.clickhouse_url() == "https://ch.example:8443"
    assert s.windows.sizes_s == [300, 3600]


def test_config_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "d.toml"
    cfg.write_text('[topics]\npredictions = "from-file"\npartitions = 8\n[drift]\npsi_threshold = 0.3\n')
    monkeypatch.setenv("DRIFTLINE_TOPICS_PARTITIONS", "2")
    s = load_settings(cfg)
    assert s.topics.predictions == "from-file"
    assert s.topics.partitions == 2  # env beats file
    assert s.drift.psi_threshold == 0.3


def test_secrets_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_CLICKHOUSE_URL", "http://bi:s3cret-pw@ch:8123")
    monkeypatch.setenv("DRIFTLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFTLINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DRIFTLINE_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("DRIFTLINE_KAFKA_SASL_PASSWORD", "kafka-pw")
    s = load_settings()
    text = repr(s) + str(s) + s.model_dump_json()
    assert "s3cret-pw" not in text and "kafka-pw" not in text
    assert s.clickhouse.password.get_secret_value() == "s3cret-pw"
    assert s.clickhouse.username == "bi"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DRIFTLINE_TOPICS_PARTITIONS": "many"}, "topics.partitions"),
        ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka.security_protocol"),
        ({"DRIFTLINE_CLICKHOUSE_URL": "mysql://x"}, "clickhouse.url"),
        ({"DRIFTLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "kafka"),
    ],
)
def test_bad_value_is_one_line_exit_2(env: dict[str, str], field: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "driftline.cli.main", "local", "status"],
        env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
