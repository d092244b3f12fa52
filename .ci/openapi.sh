#!/usr/bin/env bash
# Validates the document the server serves at /openapi.json as OpenAPI 3.1, with
# openapi-spec-validator (from PyPI, in a virtualenv under target/). Installs what it needs.
# Usage: .ci/openapi.sh [path/to/auth-server]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/debug/auth-server}
VENV=${OPENAPI_VALIDATOR_VENV:-target/openapi-validator-venv}

if [ ! -x "$BIN" ]; then
    cargo build --quiet
fi
BIN=$(realpath "$BIN")

# Python with venv: Debian and Ubuntu ship venv (ensurepip) as a package of its own.
make_venv() { python3 -m venv "$VENV" >/dev/null 2>&1; }
if [ ! -x "$VENV/bin/openapi-spec-validator" ]; then
    if ! command -v python3 >/dev/null 2>&1 || ! make_venv; then
        rm -rf "$VENV"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq python3 python3-venv >/dev/null
        make_venv
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'openapi-spec-validator>=0.9,<0.10'
fi

. .ci/server.sh
WORK=$(mktemp -d)
on_exit 'rm -rf "$WORK"'
start_server "$WORK" DATABASE_URL="sqlite://auth.db" \
    SECRET_KEY=openapi-validation-secret-key-of-32-bytes SHUTDOWN_GRACE_SECONDS=2 \
    LOG_FORMAT=text RUST_LOG=warn,auth_server=info

curl -fsS "$SERVER_URL/openapi.json" -o "$WORK/openapi.json"
run_owned "$VENV/bin/openapi-spec-validator" --schema 3.1 --validation-errors all "$WORK/openapi.json"
