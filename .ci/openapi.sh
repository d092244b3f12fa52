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

WORK=$(mktemp -d)
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(
    cd "$WORK"
    exec env -i PATH="$PATH" DATABASE_URL="sqlite://auth.db" PORT="$PORT" \
        SECRET_KEY=openapi-validation-secret-key-of-32-bytes RUST_LOG=warn \
        "$BIN" > server.log 2>&1
) &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

fetched=false
for _ in $(seq 1 100); do
    if "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
        "http://127.0.0.1:$PORT/openapi.json" "$WORK/openapi.json" 2>/dev/null; then
        fetched=true
        break
    fi
    sleep 0.1
done
if ! $fetched; then
    echo "the server did not serve /openapi.json:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi

"$VENV/bin/openapi-spec-validator" --schema 3.1 --validation-errors all "$WORK/openapi.json"
