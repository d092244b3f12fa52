#!/usr/bin/env bash
# Runs schemathesis (every check, every operation) against the server's own /openapi.json, on a
# fresh database: SQLite (a file in a temporary directory) or PostgreSQL (a new database, dropped
# at the end). Every test case that needs a bearer token gets a fresh account of its own
# (.ci/schemathesis_hooks.py); the few failures no schema can prevent are dropped there, narrowly,
# each with its reason. Installs schemathesis from PyPI into a virtualenv under target/.
#
# Usage: .ci/schemathesis.sh [path/to/auth-server] [sqlite|postgres]
#   SCHEMATHESIS_EXAMPLES  --max-examples: test cases per operation in the fuzzing phase (default 50)
#   SCHEMATHESIS_PG_URL    the PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/auth-server}
BACKEND=${2:-sqlite}
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
VERSION=4.32.5
PG_URL=${SCHEMATHESIS_PG_URL:-postgres://postgres@127.0.0.1:5432}

if [ ! -x "$BIN" ]; then
    cargo build --quiet
fi
BIN=$(realpath "$BIN")
if [ "$("$VENV/bin/st" --version 2>/dev/null || true)" != "st, version $VERSION" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

. .ci/server.sh
WORK=$(mktemp -d)
on_exit 'rm -rf "$WORK"'
case "$BACKEND" in
sqlite)
    DATABASE_URL="sqlite://auth.db"
    ;;
postgres)
    DB_NAME="auth_st_$(date +%s)_$$_$RANDOM"
    on_exit 'psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null'
    psql "$PG_URL/postgres" -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
    DATABASE_URL="$PG_URL/$DB_NAME"
    ;;
*)
    echo "usage: $0 [path/to/auth-server] [sqlite|postgres]" >&2
    exit 2
    ;;
esac

# The server's settings, which the hooks' create-superuser reads too: cheap hashing, and no
# per-client limits or lockout (every request comes from 127.0.0.1).
cat >"$WORK/server.env" <<SETTINGS
DATABASE_URL=$DATABASE_URL
SECRET_KEY=schemathesis-secret-key-of-at-least-32-bytes
ARGON2_MEMORY_KIB=256
ARGON2_ITERATIONS=1
RATE_LIMIT_LOGIN_PER_MINUTE=0
RATE_LIMIT_REGISTER_PER_MINUTE=0
RATE_LIMIT_REFRESH_PER_MINUTE=0
RATE_LIMIT_MAIL_PER_MINUTE=0
LOGIN_FREE_ATTEMPTS=1000
SHUTDOWN_GRACE_SECONDS=2
LOG_FORMAT=text
RUST_LOG=warn,auth_server=info
SETTINGS
mapfile -t SETTINGS <"$WORK/server.env"
start_server "$WORK" "${SETTINGS[@]}"

echo "schemathesis $VERSION, $BACKEND, $SERVER_URL"
FILTERED="$PWD/target/schemathesis-$BACKEND-filtered.log"
rm -f "$FILTERED"
status=0
SCHEMATHESIS_HOOKS=.ci/schemathesis_hooks.py \
    ST_BASE_URL="$SERVER_URL" ST_AUTH_SERVER="$BIN" ST_SERVER_DIR="$WORK" \
    ST_SERVER_ENV="$WORK/server.env" ST_ORPHAN_GUARD="${ORPHAN_GUARD[*]}" ST_FILTERED_LOG="$FILTERED" \
    run_owned "$VENV/bin/st" run "$SERVER_URL/openapi.json" \
    --checks all \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" \
    --workers 2 --no-color --generation-database none --seed 1 || status=$?
if [ "$status" -ne 0 ] && cp "$WORK/server.log" "target/schemathesis-$BACKEND-server.log" 2>/dev/null; then
    echo "the server's log is in target/schemathesis-$BACKEND-server.log" >&2
fi
if [ -s "$FILTERED" ]; then
    echo "failures dropped as documented exceptions (.ci/schemathesis_hooks.py), by operation and status:"
    cut -d' ' -f1-3 "$FILTERED" | sort | uniq -c
fi
exit "$status"
