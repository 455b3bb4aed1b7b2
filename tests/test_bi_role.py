"""infra/clickhouse/roles/bi_readonly.sql: read-only BI access, parsed by ClickHouse itself.

Every statement goes through ClickHouse's parser (``formatQuery``) on the test backend. Applying
it needs access management: chDB has no writable access storage (``CREATE ROLE`` is refused even
with access_management enabled), so on the embedded backend the apply test is skipped; on a
ClickHouse server (testcontainers/external backends) it creates the role and user under unique
names, checks that the user can read and cannot write, and drops them again.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from driftline.config import Settings
from driftline.store.client import connect
from driftline.store.migrate import discover, migrate

REPO = Path(__file__).resolve().parents[1]
ROLE_FILE = REPO / "infra" / "clickhouse" / "roles" / "bi_readonly.sql"
PASSWORD_PLACEHOLDER = "CHANGE_ME_BI_PASSWORD"
NAMES = ("driftline_bi_profile", "driftline_bi_quota", "driftline_bi_reader", "driftline_bi")


def statements(text: str) -> list[str]:
    """The file's statements, split the way clickhouse-client --multiquery does for this file."""
    code = re.sub(r"^\s*--.*$", "", text, flags=re.M)
    return [s.strip() for s in re.split(r";[ \t]*$", code, flags=re.M) if s.strip()]


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    client = connect(settings)
    try:
        yield client
    finally:
        client.close()


def test_is_not_a_migration() -> None:
    assert ROLE_FILE.is_file()
    assert ROLE_FILE not in {m.path for m in discover()}
    assert not re.match(r"^\d+_", ROLE_FILE.name)


def test_grants_select_only_and_makes_the_user_read_only() -> None:
    text = ROLE_FILE.read_text()
    header = text.split("CREATE", 1)[0]
    assert "clickhouse-client" in header and PASSWORD_PLACEHOLDER in header  # documented how to apply
    stmts = statements(text)
    normalized = [" ".join(s.split()) for s in stmts]
    for s in normalized:
        assert s.startswith(("CREATE ROLE IF NOT EXISTS", "CREATE SETTINGS PROFILE IF NOT EXISTS",
                             "CREATE QUOTA IF NOT EXISTS", "CREATE USER IF NOT EXISTS", "GRANT ")), s
    grants = [s for s in normalized if s.startswith("GRANT ")]
    assert grants == ["GRANT SELECT ON driftline.* TO driftline_bi",
                      "GRANT driftline_bi TO driftline_bi_reader"]

    (user,) = [s for s in normalized if s.startswith("CREATE USER")]
    assert f"IDENTIFIED WITH sha256_password BY '{PASSWORD_PLACEHOLDER}'" in user
    assert "DEFAULT ROLE driftline_bi" in user and "DEFAULT DATABASE driftline" in user
    assert re.search(r"SETTINGS PROFILE 'driftline_bi_profile', readonly = 1$", user)
    (profile,) = [s for s in normalized if s.startswith("CREATE SETTINGS PROFILE")]
    assert "readonly = 1" in profile and profile.endswith("TO driftline_bi")
    # Grafana's plugin sets max_execution_time on every query; readonly = 1 must still allow it.
    assert re.search(r"max_execution_time = \d+ MIN \d+ MAX \d+ CHANGEABLE_IN_READONLY", profile)
    (quota,) = [s for s in normalized if s.startswith("CREATE QUOTA")]
    assert "FOR INTERVAL 1 hour MAX queries" in quota and quota.endswith("TO driftline_bi")


def test_every_statement_parses(client: Client) -> None:
    for statement in statements(ROLE_FILE.read_text()):
        result = client.query("SELECT formatQuery({q:String})", parameters={"q": statement})
        formatted = result.result_rows[0][0]
        assert formatted.split()[:2] == statement.split()[:2]


def test_applies_and_the_user_reads_but_cannot_write(client: Client, settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    database = settings.clickhouse.database
    password = f"Bi-{uuid.uuid4().hex}"
    text = ROLE_FILE.read_text().replace(PASSWORD_PLACEHOLDER, password)
    text = re.sub(r"\bdriftline(?=\.\*| *;|\n)", database, text)  # GRANT ... ON <db>.*, DEFAULT DATABASE <db>
    for name in NAMES:
        text = re.sub(rf"\b{name}\b", f"{name}_{tag}", text)
    try:
        client.command(statements(text)[0])
    except DatabaseError as err:
        if "ACCESS_DENIED" in str(err) or "ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND" in str(err):
            pytest.skip(f"this ClickHouse has no writable access storage (chDB): {str(err).splitlines()[0]}")
        raise
    try:
        for statement in statements(text)[1:]:
            client.command(statement)
        migrate(client, settings)
        grants = [r[0] for r in client.query(f"SHOW GRANTS FOR driftline_bi_{tag}").result_rows]
        assert grants == [f"GRANT SELECT ON {database}.* TO driftline_bi_{tag}"]
        url = settings.clickhouse_url()
        reader = clickhouse_connect.get_client(dsn=url, username=f"driftline_bi_reader_{tag}",
                                               password=password)
        try:
            assert reader.query("SELECT count() FROM drift_scores").result_rows == [(0,)]
            with pytest.raises(DatabaseError):
                reader.command("INSERT INTO model_drift (model_id) VALUES ('x')")
            with pytest.raises(DatabaseError):
                reader.command("SELECT count() FROM system.users")
        finally:
            reader.close()
    finally:
        for kind, name in (("USER", "driftline_bi_reader"), ("QUOTA", "driftline_bi_quota"),
                           ("SETTINGS PROFILE", "driftline_bi_profile"), ("ROLE", "driftline_bi")):
            client.command(f"DROP {kind} IF EXISTS {name}_{tag}")
