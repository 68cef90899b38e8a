#!/bin/sh
# Least-privilege login for remodel on the source: REPLICATION (logical slot and walsender),
# read access to the published tables (backfill and verify copy them), nothing else.
# REMODEL_PASSWORD comes from docker-compose.yml (REMODEL_SOURCE_PASSWORD in .env).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v remodel_password="${REMODEL_PASSWORD:?REMODEL_PASSWORD is not set}" <<'SQL'
CREATE ROLE remodel LOGIN REPLICATION PASSWORD :'remodel_password';
GRANT CONNECT ON DATABASE :"DBNAME" TO remodel;
GRANT USAGE ON SCHEMA public TO remodel;
GRANT SELECT ON public.loans TO remodel;
SQL
