#!/usr/bin/env bash
# A local three-node parley cluster in one command: PostgreSQL (the shared ledger) and Redis
# (the broker) on loopback with throwaway data, and NODES parley nodes on ports BASE_PORT,
# BASE_PORT+1, …, all stopped and their data removed on Ctrl-C or exit.
#
# Settings (environment): NODES (3), BASE_PORT (8081), PG_PORT (55432), REDIS_PORT (56379),
# PARLEY_SECRET (random), PARLEY_BIN (else target/release/parley, built when needed),
# DEMO=1 (lets the web page sign anyone in by picking a handle). Other arguments are
# passed to every `parley serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

NODES=${NODES:-3}
BASE_PORT=${BASE_PORT:-8081}
PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}

# shellcheck source=scripts/install-missing.sh
source scripts/install-missing.sh
pg_found=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)
install_missing "${pg_found:-/usr/lib/postgresql/none}=postgresql" redis-server=redis-server
pg_bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)")

if [ -n "${PARLEY_BIN:-}" ]; then
    parley=$(realpath "$PARLEY_BIN")
else
    echo "building parley (release)…"
    cargo build --release --quiet -p parley
    parley=$repo/target/release/parley
fi

secret=${PARLEY_SECRET:-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')}
export PARLEY_SECRET=$secret

for port in "$PG_PORT" "$REDIS_PORT" $(seq "$BASE_PORT" $((BASE_PORT + NODES - 1))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port on 127.0.0.1 is taken: set PG_PORT, REDIS_PORT or BASE_PORT" >&2
        exit 1
    fi
done

dir=$(mktemp -d -t parley-cluster-XXXXXX)
pids=()
pg_pid=
cleanup() {
    trap - EXIT INT TERM
    echo
    echo "stopping…"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # SIGINT is PostgreSQL's fast shutdown: it closes its backends and exits cleanly.
    if [ -n "$pg_pid" ]; then
        kill -INT "$pg_pid" 2>/dev/null || true
        wait "$pg_pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PostgreSQL refuses to run as root: run its programs as the user its package made
# (setpriv execs in place, so signals reach postgres itself).
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
# From the throwaway directory: the postgres user may not enter this one.
cd "$dir"

echo "PostgreSQL on 127.0.0.1:$PG_PORT, data in $dir (removed on exit)"
"${as_pg[@]}" "$pg_bin/initdb" -D "$dir/pg" -U parley --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$pg_bin/postgres" -D "$dir/pg" -p "$PG_PORT" -k "$dir" \
    -c listen_addresses=127.0.0.1 >"$dir/postgres.log" 2>&1 &
pg_pid=$!
for _ in $(seq 100); do
    "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
    kill -0 "$pg_pid" 2>/dev/null || { cat "$dir/postgres.log" >&2; exit 1; }
    sleep 0.2
done
"$pg_bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U parley parley

echo "Redis on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    >"$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
    sleep 0.1
done

demo=()
[ "${DEMO:-0}" = 1 ] && demo=(--demo)
database_url="postgres://parley@127.0.0.1:$PG_PORT/parley"
broker_url="redis://127.0.0.1:$REDIS_PORT"
for i in $(seq 0 $((NODES - 1))); do
    port=$((BASE_PORT + i))
    "$parley" serve --listen "127.0.0.1:$port" --data "$dir/node-$i" \
        --store postgres --database-url "$database_url" \
        --broker-url "$broker_url" --broker-channel parley \
        "${demo[@]}" "$@" >"$dir/node-$i.out" 2>"$dir/node-$i.log" &
    pids+=($!)
done
for i in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 150); do
        grep -q '^listening on' "$dir/node-$i.out" 2>/dev/null && break
        kill -0 "${pids[$((i + 1))]}" 2>/dev/null || break
        sleep 0.2
    done
    if ! grep -q '^listening on' "$dir/node-$i.out" 2>/dev/null; then
        echo "node $i did not start; its log:" >&2
        cat "$dir/node-$i.log" >&2
        exit 1
    fi
done

echo
echo "parley: $NODES nodes sharing $database_url and $broker_url"
for i in $(seq 0 $((NODES - 1))); do
    echo "  node $i: ws://127.0.0.1:$((BASE_PORT + i))/ws   (web page http://127.0.0.1:$((BASE_PORT + i))/)"
done
echo
echo "a token for user alice (connect with ws://…/ws?token=TOKEN to any node):"
echo "  PARLEY_SECRET=$secret $parley token alice"
echo "the load harness against all nodes at once (cargo build --release -p parley-load):"
urls=""
for i in $(seq 0 $((NODES - 1))); do urls+=" --url ws://127.0.0.1:$((BASE_PORT + i))/ws"; done
echo "  PARLEY_SECRET=$secret $repo/target/release/parley-load fanout$urls --connections 300 --groups 30 --duration 10s"
echo "logs: $dir/node-N.log; Ctrl-C stops everything"

# Stay up until Ctrl-C, or until a node or Redis exits on its own.
wait -n "${pids[@]}" "$pg_pid" || true
echo "a server exited; see the logs above" >&2
for i in $(seq 0 $((NODES - 1))); do tail -n 5 "$dir/node-$i.log" >&2; done
exit 1
