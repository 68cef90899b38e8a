#!/bin/sh
# Least-privilege login for remodel on the target: owns no user table; may read and write the
# mapped tables and create its state schema (CREATE on the database), nothing else.
# TRUNCATE is granted because remodel replays a source TRUNCATE on the mapped tables.
# REMODEL_PASSWORD comes from docker-compose.yml (REMODEL_TARGET_PASSWORD in .env).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v remodel_password="${REMODEL_PASSWORD:?REMODEL_PASSWORD is not set}" <<'SQL'
CREATE ROLE remodel LOGIN PASSWORD :'remodel_password';
GRANT CONNECT, CREATE ON DATABASE :"DBNAME" TO remodel;
GRANT USAGE ON SCHEMA public TO remodel;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON public.loans, public.guarantors TO remodel;
SQL
