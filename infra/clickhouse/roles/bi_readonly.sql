-- Read-only access to the driftline database for BI tools (Grafana, notebooks, SQL clients).
--
-- Not a migration: `driftline db migrate` never applies this file (it lives outside the numbered
-- files). An administrator applies it once per ClickHouse server, with an account that has access
-- management (ACCESS MANAGEMENT grant, or CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT=1 in the compose
-- stack):
--
--   1. replace CHANGE_ME_BI_PASSWORD below with a real password (or change the IDENTIFIED clause
--      to `IDENTIFIED WITH sha256_hash BY '<hex sha256 of the password>'` to keep it out of the file);
--   2. if clickhouse.database is not `driftline`, replace `driftline` in the GRANT and the USER;
--   3. clickhouse-client --multiquery < infra/clickhouse/roles/bi_readonly.sql
--      (compose: docker compose -f infra/docker-compose.yml exec -T clickhouse clickhouse-client
--       --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery
--       --queries-file /opt/driftline/roles/bi_readonly.sql)
--   4. point Grafana at the user: GRAFANA_CLICKHOUSE_USER=driftline_bi_reader and
--      GRAFANA_CLICKHOUSE_PASSWORD=<the password>.
--
-- What it creates (every statement is IF NOT EXISTS, so re-running is harmless):
--   role     driftline_bi          SELECT on driftline.* and nothing else;
--   profile  driftline_bi_profile  readonly = 1 (no writes, no DDL, no setting changes) except
--                                  max_execution_time, which Grafana's ClickHouse plugin sets on every
--                                  query (changeable within bounds), plus result and memory limits;
--   quota    driftline_bi_quota    per-hour caps on queries, errors and rows read;
--   user     driftline_bi_reader   password login, default role driftline_bi, default database driftline.
-- Rotate the password with: ALTER USER driftline_bi_reader IDENTIFIED WITH sha256_password BY '...';

CREATE ROLE IF NOT EXISTS driftline_bi;

GRANT SELECT ON driftline.* TO driftline_bi;

CREATE SETTINGS PROFILE IF NOT EXISTS driftline_bi_profile
SETTINGS
    readonly = 1,
    max_execution_time = 60 MIN 1 MAX 300 CHANGEABLE_IN_READONLY,
    max_result_rows = 1000000,
    max_memory_usage = 4000000000
TO driftline_bi;

CREATE QUOTA IF NOT EXISTS driftline_bi_quota
FOR INTERVAL 1 hour MAX queries = 20000, errors = 2000, read_rows = 50000000000
TO driftline_bi;

CREATE USER IF NOT EXISTS driftline_bi_reader
IDENTIFIED WITH sha256_password BY 'CHANGE_ME_BI_PASSWORD'
DEFAULT ROLE driftline_bi
DEFAULT DATABASE driftline
SETTINGS PROFILE 'driftline_bi_profile', readonly = 1;

GRANT driftline_bi TO driftline_bi_reader;
