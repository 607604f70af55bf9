#!/usr/bin/env bash
# scripts/demo.sh (`make demo`): walcast on a private Postgres cluster loaded with the Strapi 5.54
# fixture, and a terminal watcher that prints every event it receives.
#
#  1. starts the `demo` cluster (scripts/pg-cluster.sh start demo: port 54330, .walcast/pg-demo);
#  2. creates database `strapi` if absent and, only then, loads fixtures/strapi-5.54/schema.sql and
#     replay/00-boot.sql (the state right after Strapi's first boot);
#  3. cargo build; npm ci --prefix tests/js when tests/js/node_modules is missing or stale;
#  4. runs `target/debug/walcast --config config.toml demo` in the background
#     (DATABASE_URL=postgres://postgres@127.0.0.1:54330/strapi, log: .walcast/demo.log) and waits
#     for http://127.0.0.1:1338/healthz;
#  5. runs `node tests/js/watch.mjs` in the foreground until Ctrl-C.
# On exit (Ctrl-C, TERM or an error) it stops what it started: the watcher, walcast and the cluster.
#
# `scripts/demo.sh --fresh` (or WALCAST_DEMO_FRESH=1) first drops database strapi and its
# replication slots, so the fixture is loaded anew.
#
# For testing this script: WALCAST_BIN=<program> runs that program instead of target/debug/walcast
# (and skips cargo build); WALCAST_DEMO_WAIT (seconds, default 60) bounds the wait for /healthz;
# WALCAST_DEMO_HTTP (default http://127.0.0.1:1338) is where walcast listens.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ -t 1 ]]; then B=$'\033[1m'; D=$'\033[2m'; G=$'\033[32m'; R=$'\033[31m'; Z=$'\033[0m'; else B='' D='' G='' R='' Z=''; fi
say() { printf '%s==> %s%s\n' "$B" "$*" "$Z"; }
die() { printf '%sdemo: %s%s\n' "$R" "$*" "$Z" >&2; exit 1; }

FRESH="${WALCAST_DEMO_FRESH:-0}"
for arg in "$@"; do
    case "$arg" in
        --fresh) FRESH=1 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done
HTTP="${WALCAST_DEMO_HTTP:-http://127.0.0.1:1338}"
WAIT_SECS="${WALCAST_DEMO_WAIT:-60}"
FIXTURES="fixtures/strapi-5.54"
LOG=".walcast/demo.log"
CONFIG="config.toml"

WALCAST_PID=""
WATCH_PID=""
PG_STARTED=0

cleanup() {
    local rc=$?
    trap - INT TERM EXIT
    set +e
    echo
    if [[ -n "$WATCH_PID" ]] && kill -0 "$WATCH_PID" 2>/dev/null; then
        kill -TERM "$WATCH_PID" 2>/dev/null
        wait "$WATCH_PID" 2>/dev/null
    fi
    if [[ -n "$WALCAST_PID" ]] && kill -0 "$WALCAST_PID" 2>/dev/null; then
        say "stopping walcast (pid $WALCAST_PID)"
        kill -TERM "$WALCAST_PID" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$WALCAST_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$WALCAST_PID" 2>/dev/null; then
            say "walcast did not stop within 10 s: killing it"
            kill -KILL "$WALCAST_PID" 2>/dev/null
        fi
        wait "$WALCAST_PID" 2>/dev/null
    fi
    if (( PG_STARTED )); then
        say "stopping the demo Postgres cluster"
        scripts/pg-cluster.sh stop demo
    fi
    exit "$rc"
}
trap 'exit 130' INT
trap 'exit 143' TERM
trap cleanup EXIT

mkdir -p .walcast

# 1. Postgres.
say "starting the demo Postgres cluster (scripts/pg-cluster.sh start demo)"
PG_STARTED=1
PG_URL="$(scripts/pg-cluster.sh start demo | tail -n 1)"
DB_URL="${PG_URL%/postgres}/strapi"
PSQL="$(command -v psql || true)"
if [[ -z "$PSQL" ]]; then
    PSQL="$(printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)"
fi
[[ -x "$PSQL" ]] || die "psql not found"

# 2. The Strapi database.
if [[ "$FRESH" == 1 ]]; then
    say "--fresh: dropping database strapi and its replication slots"
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "$PG_URL" \
        -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'strapi'" \
        -c 'DROP DATABASE IF EXISTS strapi WITH (FORCE)' >/dev/null
fi
if [[ "$("$PSQL" -X -At -d "$PG_URL" -c "SELECT 1 FROM pg_database WHERE datname = 'strapi'")" == 1 ]]; then
    say "database strapi exists: keeping its data (make clean-pg starts over)"
else
    say "creating database strapi and loading the Strapi 5.54 fixture (schema.sql, replay/00-boot.sql)"
    "$PSQL" -X -q -d "$PG_URL" -c 'CREATE DATABASE strapi' >/dev/null
    for f in "$FIXTURES/schema.sql" "$FIXTURES/replay/00-boot.sql"; do
        if ! "$PSQL" -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$DB_URL" -f "$f"; then
            "$PSQL" -X -q -d "$PG_URL" -c 'DROP DATABASE IF EXISTS strapi' >/dev/null || true
            die "loading $f failed (database strapi dropped again)"
        fi
    done
fi

# 3. Build and Node packages.
if [[ -n "${WALCAST_BIN:-}" ]]; then
    say "using WALCAST_BIN=$WALCAST_BIN (no cargo build)"
    BIN="$WALCAST_BIN"
else
    say "building walcast (cargo build)"
    cargo build
    BIN="target/debug/walcast"
fi
if [[ ! -f tests/js/node_modules/.package-lock.json || tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]]; then
    say "installing the Node packages for the watcher (npm ci --prefix tests/js)"
    npm ci --prefix tests/js --no-audit --no-fund
    touch tests/js/node_modules/.package-lock.json
fi

# 4. walcast.
# The fixture's Strapi secrets, so that its API tokens and JWTs verify (unless set already).
while IFS='=' read -r key value; do
    case "$key" in
        JWT_SECRET|API_TOKEN_SALT|ADMIN_JWT_SECRET) [[ -n "${!key:-}" ]] || export "$key=$value" ;;
    esac
done < "$FIXTURES/secrets.env"
ARGS=()
if [[ -f "$CONFIG" ]]; then ARGS+=(--config "$CONFIG"); else say "no $CONFIG: walcast runs on its defaults"; fi
say "starting: DATABASE_URL=$DB_URL $BIN ${ARGS[*]} demo  (log: $LOG)"
DATABASE_URL="$DB_URL" "$BIN" "${ARGS[@]}" demo >"$LOG" 2>&1 &
WALCAST_PID=$!

printf '%s    waiting for %s/healthz' "$D" "$HTTP"
deadline=$((SECONDS + WAIT_SECS))
until curl -fsS -m 2 -o /dev/null "$HTTP/healthz" 2>/dev/null; do
    if ! kill -0 "$WALCAST_PID" 2>/dev/null; then
        printf '%s\n' "$Z"
        wait "$WALCAST_PID" && rc=0 || rc=$?
        WALCAST_PID=""
        printf '%swalcast exited (status %s) before answering; last lines of %s:%s\n' "$R" "$rc" "$LOG" "$Z" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    if (( SECONDS >= deadline )); then
        printf '%s\n' "$Z"
        printf '%swalcast did not answer %s/healthz within %s s; last lines of %s:%s\n' "$R" "$HTTP" "$WAIT_SECS" "$LOG" "$Z" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    printf '.'
    sleep 0.5
done
printf ' up%s\n' "$Z"

cat <<EOF

${G}${B}walcast is running${Z}
  Dashboard:      $HTTP/io/dashboard   (API key from config.toml: walcast-demo-admin-key)
  Health:         $HTTP/healthz   metrics: $HTTP/metrics
  Socket.IO:      $HTTP  (path /socket.io)
  Database:       $DB_URL
  walcast log:    $LOG

  Events: 'walcast demo' replays the recorded Strapi editing sessions
  ($FIXTURES/replay/01..50) into the strapi database; walcast reads them back from the WAL
  and emits them to the clients allowed to see them. Make your own change with, e.g.:
    psql $DB_URL -c "UPDATE categories SET name = name || '!', updated_at = now() WHERE id = 1"

  Watch from a second terminal (public client, or with an API token / JWT):
    node tests/js/watch.mjs --url $HTTP
    node tests/js/watch.mjs --url $HTTP --strategy api-token --token <token>

  Ctrl-C stops the watcher, walcast and the demo cluster.

EOF

# 5. The watcher, in the foreground (run in the background and waited for, so that a signal is
# handled at once).
node tests/js/watch.mjs --url "$HTTP" &
WATCH_PID=$!
wait "$WATCH_PID"
