# Sourced by .ci/openapi.sh and .ci/schemathesis.sh: runs auth-server for them, on a port of its
# own, and makes sure it never outlives them.
#
# - The server is started with PORT=0 and its port read back from its "auth-server listening"
#   log line: no port is probed beforehand (and none can be taken in between).
# - From the moment it is spawned it is owned: its pid is recorded at once, and the EXIT trap
#   (which INT, TERM and HUP lead to) stops it and runs the rest of the cleanup.
# - It runs under `setpriv --pdeathsig KILL` (util-linux) where that exists: the kernel kills it
#   when this script dies, SIGKILL included, which no trap can catch.
#
# Use: `guarded CMD...` runs CMD under the same guard; `on_exit 'command'` adds a cleanup step
# (run last added, first); `start_server DIR VAR=value...` sets SERVER_PID and SERVER_URL.

CLEANUP=()
on_exit() { CLEANUP+=("$1"); }

run_cleanup() {
    local status=$?
    trap - EXIT INT TERM HUP
    local i
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUP[$i]}" || true
    done
    exit "$status"
}
trap run_cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

if command -v setpriv >/dev/null 2>&1 && setpriv --pdeathsig KILL true 2>/dev/null; then
    ORPHAN_GUARD=(setpriv --pdeathsig KILL)
else
    echo "note: setpriv (util-linux) is missing: a server started here is stopped by this script's" \
        "traps, but would outlive a SIGKILL of the script" >&2
    ORPHAN_GUARD=()
fi

guarded() { "${ORPHAN_GUARD[@]}" "$@"; }

# Runs a command in the background, under the guard, and waits for it; a trapped signal ends the
# wait at once (a foreground command would hold the traps until it finished) and the cleanup
# stops the command. Returns the command's status.
run_owned() {
    "${ORPHAN_GUARD[@]}" "$@" &
    local pid=$!
    on_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
    wait "$pid"
}

stop_server() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

# start_server DIR VAR=value...: the server ($BIN) in DIR with only the given settings (and
# PATH), on 127.0.0.1 and a port of the kernel's choosing; its log is DIR/server.log.
start_server() {
    local dir=$1
    shift
    (
        cd "$dir"
        exec env -i PATH="$PATH" "$@" HOST=127.0.0.1 PORT=0 "${ORPHAN_GUARD[@]}" "$BIN" >server.log 2>&1
    ) &
    SERVER_PID=$!
    on_exit stop_server
    local address=
    for _ in $(seq 1 600); do
        address=$(sed -nE 's/.*auth-server listening.* address=([^ ]+).*/\1/p' "$dir/server.log" 2>/dev/null | head -n 1)
        [ -n "$address" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    if [ -z "$address" ]; then
        echo "auth-server did not start:" >&2
        cat "$dir/server.log" >&2
        return 1
    fi
    SERVER_URL="http://127.0.0.1:${address##*:}"
}
