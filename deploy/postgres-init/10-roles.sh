#!/bin/sh
# Runs once, when the app-db volume is first initialised (the postgres image runs /docker-entrypoint-initdb.d
# as its superuser). Creates the two roles of migration 0007 and the database:
#   HOUSING_OWNER_USER  owns the database and the schema; only `starter.py migrate` logs in as it.
#   HOUSING_APP_USER    the worker's and the web app's login: owns nothing, not superuser, cannot create
#                       databases or roles; the migrations grant it what the engine needs, table by table.
set -eu
# Passwords come as compose secrets (*_FILE) or, for a quick local try, as the variables themselves.
for v in HOUSING_OWNER_PASSWORD HOUSING_APP_PASSWORD; do
    eval "file=\${${v}_FILE:-}"
    if [ -n "$file" ]; then eval "$v=\$(cat \"\$file\")"; fi
done
: "${HOUSING_OWNER_USER:?}" "${HOUSING_OWNER_PASSWORD:?}" "${HOUSING_APP_USER:?}" "${HOUSING_APP_PASSWORD:?}"
: "${HOUSING_DB:=housing}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner="$HOUSING_OWNER_USER" -v owner_pw="$HOUSING_OWNER_PASSWORD" \
    -v app="$HOUSING_APP_USER" -v app_pw="$HOUSING_APP_PASSWORD" -v db="$HOUSING_DB" <<'SQL'
CREATE ROLE :"owner" LOGIN NOSUPERUSER NOCREATEROLE PASSWORD :'owner_pw';
CREATE ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'app_pw';
CREATE DATABASE :"db" OWNER :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app";
SQL
