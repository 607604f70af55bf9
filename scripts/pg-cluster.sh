#!/usr/bin/env bash
# scripts/pg-cluster.sh: a private PostgreSQL cluster for walcast's tests and demo.
#
#   scripts/pg-cluster.sh start|stop|restart|status|url|install|datadir|clean [NAME]
#
# NAME is `test` (port 54329, the default), `demo` (port 54330) or `restart` (port 54331: a private
# cluster that one test restarts under walcast's feet) or `bench` (port 54333: `make bench`).
# WALCAST_PG_PORT overrides the port of test and demo, WALCAST_PG_RESTART_PORT that of restart,
# WALCAST_PG_BENCH_PORT that of bench. The cluster never touches the machine's own
# Postgres on 5432. The test and restart clusters stream every transaction larger than 64 kB
# (logical_decoding_work_mem), so the tests exercise pgoutput's streaming of large transactions.
#
#   start    initdb if needed, then start (idempotent; safe to run concurrently: flock).
#            The LAST LINE OF STDOUT is the superuser URL, postgres://postgres@127.0.0.1:PORT/postgres;
#            every other message goes to stderr.
#   url      print that URL without starting anything.
#   stop     pg_ctl -m fast stop (no-op when not running).
#   restart  pg_ctl -m fast restart (starts it when not running); prints the URL like start.
#   status   exit 0 when running, 1 otherwise.
#   install  only make sure the server binaries are installed.
#   datadir  print the data directory (pg_hba.conf, postgresql.conf and server.log live there).
#   clean    stop, then delete the data directory (both the in-repo and the fallback location).
#
# Data directory: <repo>/target/pg-test, <repo>/target/pg-restart or <repo>/.walcast/pg-demo. When
# we run as root the server runs as the `postgres` OS user (initdb refuses root); if that user cannot
# reach the in-repo folder (a clone under a mode-0700 `mktemp -d`, say) the cluster lives in
# ${TMPDIR:-/tmp}/walcast-pg-NAME-<hash of the repo path> instead. The Unix socket sits in the data
# directory itself. The server log is <datadir>/server.log.
#
# Authentication: pg_hba.conf trusts everything local (see write_hba below). Tests that need
# password auth prepend their own `host ... scram-sha-256` lines for specific users (edit the file in
# place so it stays owned by the server's user; find it with `SHOW hba_file`) and call
# `SELECT pg_reload_conf()`.
set -euo pipefail

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

log() { printf 'pg-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

CMD="${1:-}"
NAME="${2:-test}"
[[ -n "$CMD" ]] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
case "$NAME" in
    test) DEFAULT_PORT=54329; PRIMARY="$REPO/target/pg-test"; PORT_VAR=WALCAST_PG_PORT ;;
    demo) DEFAULT_PORT=54330; PRIMARY="$REPO/.walcast/pg-demo"; PORT_VAR=WALCAST_PG_PORT ;;
    restart) DEFAULT_PORT=54331; PRIMARY="$REPO/target/pg-restart"; PORT_VAR=WALCAST_PG_RESTART_PORT ;;
    bench) DEFAULT_PORT=54333; PRIMARY="$REPO/target/pg-bench"; PORT_VAR=WALCAST_PG_BENCH_PORT ;;
    *) die "unknown cluster name '$NAME' (expected test, demo, restart or bench)" ;;
esac
PORT="${!PORT_VAR:-$DEFAULT_PORT}"
[[ "$PORT" =~ ^[0-9]+$ ]] || die "$PORT_VAR must be a number, got '$PORT'"
URL="postgres://postgres@127.0.0.1:${PORT}/postgres"

IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1
PG_USER=postgres

REPO_HASH="$(printf '%s' "$REPO" | sha256sum | cut -c1-10)"

# ---------------------------------------------------------------------------------------------
# Running things as the server's OS user.

# as_pg CMD...: run CMD as the `postgres` user when we are root, directly otherwise. Runs from /
# so a working directory the postgres user cannot read does not matter.
as_pg() {
    if (( IS_ROOT )); then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

# pg_can DIR: can the server's user enter and write DIR?
pg_can() {
    as_pg test -d "$1" -a -x "$1" -a -w "$1" 2>/dev/null
}

# pg_can_enter DIR: can the server's user traverse DIR (and every parent)?
pg_can_enter() {
    as_pg test -d "$1" -a -x "$1" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# Server binaries.

find_bindir() {
    # Prefer the version that created an existing data directory.
    local want="" d best="" bestv=0 v
    if [[ -n "${DATADIR:-}" && -r "$DATADIR/PG_VERSION" ]]; then
        want="$(cat "$DATADIR/PG_VERSION" 2>/dev/null || true)"
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] || continue
        v="$(basename "$(dirname "$d")")"
        [[ "$v" =~ ^[0-9]+$ ]] || continue
        if [[ -n "$want" && "$v" == "$want" ]]; then echo "$d"; return 0; fi
        if (( v > bestv )); then bestv=$v; best=$d; fi
    done
    [[ -n "$best" ]] && echo "$best"
}

ensure_binaries() {
    BINDIR="$(find_bindir || true)"
    if [[ -z "$BINDIR" ]]; then
        (( IS_ROOT )) || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin; install them (e.g. sudo apt-get install -y postgresql-15) and retry"
        # One installer at a time, machine-wide.
        exec 8>/tmp/walcast-pg-install.lock
        flock 8
        BINDIR="$(find_bindir || true)"
        if [[ -z "$BINDIR" ]]; then
            log "PostgreSQL server binaries not found: installing them with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q >&2
            local pkg=postgresql-15
            if ! apt-cache show "$pkg" >/dev/null 2>&1; then pkg=postgresql; fi
            log "apt-get install -y $pkg"
            apt-get install -y -q --no-install-recommends "$pkg" >&2
            BINDIR="$(find_bindir || true)"
            [[ -n "$BINDIR" ]] || die "installed $pkg but still found no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin"
            log "installed $pkg: server binaries in $BINDIR"
        fi
        flock -u 8
        exec 8>&-
    fi
    if (( IS_ROOT )) && ! id -u "$PG_USER" >/dev/null 2>&1; then
        log "creating system user $PG_USER"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash "$PG_USER"
    fi
}

# ---------------------------------------------------------------------------------------------
# Where the data directory lives.

fallback_base() {
    local base="${TMPDIR:-/tmp}"
    base="${base%/}"
    [[ -n "$base" ]] || base=/tmp
    if [[ "$base" != /tmp ]] && ! pg_can_enter "$base"; then base=/tmp; fi
    echo "$base"
}

# nearest_existing PATH: PATH or its closest existing ancestor.
nearest_existing() {
    local p="$1"
    while [[ ! -e "$p" && "$p" != / ]]; do p="$(dirname "$p")"; done
    echo "$p"
}

# choose_datadir CREATE: sets DATADIR, LOCATION (primary|fallback) and SOCKDIR; creates the data
# directory (owned by the server's user) when CREATE is 1. Call it under the lock when creating.
# The choice is the same every time for a given repo path and user.
choose_datadir() {
    local create="$1" parent
    parent="$(dirname "$PRIMARY")"
    LOCATION=""
    if (( IS_ROOT )) && ! id -u "$PG_USER" >/dev/null 2>&1; then
        # No postgres user yet (nothing installed): nothing can be running anywhere.
        DATADIR="$PRIMARY"; LOCATION=primary
    elif (( IS_ROOT )); then
        if [[ -d "$PRIMARY" ]]; then
            if pg_can "$PRIMARY"; then LOCATION=primary; fi
        elif pg_can_enter "$(nearest_existing "$parent")"; then
            LOCATION=primary
            if (( create )); then
                (umask 022 && mkdir -p "$parent")
                mkdir -m 700 "$PRIMARY"
                chown "$PG_USER:" "$PRIMARY"
                if ! pg_can "$PRIMARY"; then rmdir "$PRIMARY"; LOCATION=""; fi
            fi
        fi
        if [[ -n "$LOCATION" ]]; then DATADIR="$PRIMARY"; fi
    else
        if [[ -d "$PRIMARY" && -w "$PRIMARY" && -x "$PRIMARY" ]]; then
            LOCATION=primary
        elif [[ ! -e "$PRIMARY" ]]; then
            local anc
            anc="$(nearest_existing "$parent")"
            if [[ -d "$anc" && -w "$anc" && -x "$anc" ]] || [[ "$anc" == "$parent" && -x "$anc" ]]; then
                LOCATION=primary
                if (( create )); then
                    { mkdir -p "$parent" && mkdir -m 700 "$PRIMARY"; } 2>/dev/null || LOCATION=""
                fi
            fi
        fi
        if [[ -n "$LOCATION" ]]; then DATADIR="$PRIMARY"; fi
    fi
    if [[ -z "$LOCATION" ]]; then
        DATADIR="$(fallback_base)/walcast-pg-${NAME}-${REPO_HASH}"
        LOCATION=fallback
        if (( create )) && [[ ! -d "$DATADIR" ]]; then
            mkdir -m 700 "$DATADIR"
            if (( IS_ROOT )); then chown "$PG_USER:" "$DATADIR"; fi
        fi
        if (( create )) && ! pg_can "$DATADIR"; then
            die "the $PG_USER user cannot use $DATADIR either"
        fi
    fi
    # Unix sockets: the data dir itself, unless its path is too long for sun_path (107 bytes).
    SOCKDIR="$DATADIR"
    if (( ${#SOCKDIR} + 20 > 100 )); then
        SOCKDIR="/tmp/walcast-pgsock-${NAME}-${REPO_HASH}"
    fi
}

all_datadirs() {
    printf '%s\n' "$PRIMARY"
    local b
    for b in "${TMPDIR:-/tmp}" /tmp; do
        printf '%s\n' "${b%/}/walcast-pg-${NAME}-${REPO_HASH}"
    done | sort -u
}

# ---------------------------------------------------------------------------------------------
# Cluster set-up.

write_conf_block() {
    # Rewritten at every start, between the markers, so a moved repo or WALCAST_PG_PORT still works.
    local conf="$DATADIR/postgresql.conf" tmp decoding_mem=64MB
    tmp="$(mktemp)"
    # The test clusters stream (pgoutput protocol 2) every transaction over 64 kB.
    [[ "$NAME" == demo || "$NAME" == bench ]] || decoding_mem=64kB
    as_pg cat "$conf" | sed '/^# BEGIN walcast$/,/^# END walcast$/d' >"$tmp"
    cat >>"$tmp" <<EOF
# BEGIN walcast
# Written by scripts/pg-cluster.sh at every start: edits between these markers are lost.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKDIR'
wal_level = logical
max_replication_slots = 200
max_wal_senders = 200
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
max_slot_wal_keep_size = 4GB
logging_collector = off
log_min_messages = warning
wal_sender_timeout = 60s
logical_decoding_work_mem = $decoding_mem
# END walcast
EOF
    as_pg tee "$conf" <"$tmp" >/dev/null
    rm -f "$tmp"
}

write_hba() {
    # Written once, at initdb. Tests may prepend stricter lines for specific users (first match wins).
    as_pg tee "$DATADIR/pg_hba.conf" >/dev/null <<'EOF'
# pg_hba.conf of walcast's private test/demo cluster (scripts/pg-cluster.sh).
# Everything from this machine is trusted. Tests that exercise password authentication prepend
# lines such as
#   host all walcast_scram 127.0.0.1/32 scram-sha-256
# above these (the first matching line wins), then SELECT pg_reload_conf().
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
local   replication  all                  trust
host    all          all   127.0.0.1/32   trust
host    replication  all   127.0.0.1/32   trust
host    all          all   ::1/128        trust
host    replication  all   ::1/128        trust
EOF
}

is_running() {
    as_pg test -f "$DATADIR/PG_VERSION" 2>/dev/null || return 1
    as_pg "$BINDIR/pg_ctl" -D "$DATADIR" status >/dev/null 2>&1
}

do_initdb() {
    if [[ -n "$(as_pg ls -A "$DATADIR")" ]]; then
        log "$DATADIR holds a half-made cluster (no PG_VERSION): wiping it"
        as_pg find "$DATADIR" -mindepth 1 -delete
    fi
    local locale=C.UTF-8
    locale -a 2>/dev/null | grep -qix 'c.utf-\?8' || locale=C
    log "initdb ($("$BINDIR/postgres" --version | awk '{print $3}')) in $DATADIR"
    local out
    if ! out="$(as_pg "$BINDIR/initdb" -D "$DATADIR" -U postgres --auth=trust --encoding=UTF8 \
        --locale="$locale" --no-instructions 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "initdb failed"
    fi
    write_hba
}

take_lock() {
    # One lock per cluster and repo, in /tmp so that it does not depend on the data dir's location.
    exec 9>"/tmp/walcast-pg-${NAME}-${REPO_HASH}.lock"
    flock 9
}

do_start() {
    ensure_binaries
    take_lock
    choose_datadir 1
    log "cluster '$NAME': data dir $DATADIR ($LOCATION), port $PORT"
    BINDIR="$(find_bindir)"
    if is_running; then
        local actual
        actual="$(as_pg sed -n 4p "$DATADIR/postmaster.pid" 2>/dev/null || true)"
        if [[ "$actual" =~ ^[0-9]+$ && "$actual" != "$PORT" ]]; then
            log "warning: cluster '$NAME' already runs on port $actual, not $PORT (stop it to change the port)"
            URL="postgres://postgres@127.0.0.1:${actual}/postgres"
        fi
        log "cluster '$NAME' already running"
    else
        local ready=0
        "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2 >/dev/null 2>&1 || ready=$?
        if (( ready == 0 || ready == 1 )); then
            die "port $PORT is already taken by another server; stop it or set WALCAST_PG_PORT"
        fi
        as_pg test -f "$DATADIR/PG_VERSION" || do_initdb
        if [[ "$SOCKDIR" != "$DATADIR" ]]; then
            mkdir -p "$SOCKDIR" && chmod 700 "$SOCKDIR"
            if (( IS_ROOT )); then chown "$PG_USER:" "$SOCKDIR"; fi
        fi
        write_conf_block
        log "starting cluster '$NAME' (log: $DATADIR/server.log)"
        if ! as_pg "$BINDIR/pg_ctl" -D "$DATADIR" -l "$DATADIR/server.log" -w -t 60 start >&2; then
            log "server failed to start; last lines of $DATADIR/server.log:"
            as_pg tail -n 30 "$DATADIR/server.log" >&2 || true
            exit 1
        fi
        log "cluster '$NAME' started"
    fi
    flock -u 9
    echo "$URL"
}

do_stop() {
    take_lock
    choose_datadir 0
    BINDIR="$(find_bindir || true)"
    if [[ -z "$BINDIR" ]] || ! as_pg test -f "$DATADIR/PG_VERSION" 2>/dev/null; then
        log "cluster '$NAME' not initialised ($DATADIR): nothing to stop"
        return 0
    fi
    if is_running; then
        log "stopping cluster '$NAME' ($DATADIR)"
        as_pg "$BINDIR/pg_ctl" -D "$DATADIR" -m fast -w -t 60 stop >&2
    else
        log "cluster '$NAME' is not running ($DATADIR)"
    fi
}

do_restart() {
    ensure_binaries
    take_lock
    choose_datadir 1
    BINDIR="$(find_bindir)"
    if ! is_running; then
        flock -u 9
        do_start
        return
    fi
    log "restarting cluster '$NAME' ($DATADIR, pg_ctl -m fast restart)"
    if ! as_pg "$BINDIR/pg_ctl" -D "$DATADIR" -l "$DATADIR/server.log" -m fast -w -t 60 restart >&2; then
        log "server failed to restart; last lines of $DATADIR/server.log:"
        as_pg tail -n 30 "$DATADIR/server.log" >&2 || true
        exit 1
    fi
    flock -u 9
    echo "$URL"
}

do_status() {
    choose_datadir 0
    BINDIR="$(find_bindir || true)"
    if [[ -n "$BINDIR" ]] && is_running; then
        log "cluster '$NAME' running: data dir $DATADIR, $URL"
        return 0
    fi
    log "cluster '$NAME' not running (data dir $DATADIR)"
    return 1
}

do_clean() {
    local d
    take_lock
    BINDIR="$(find_bindir || true)"
    while read -r d; do
        [[ -e "$d" ]] || continue
        DATADIR="$d"
        if [[ -n "$BINDIR" ]] && is_running; then
            log "stopping cluster '$NAME' ($d)"
            as_pg "$BINDIR/pg_ctl" -D "$d" -m fast -w -t 60 stop >&2
        fi
        log "removing $d"
        rm -rf "$d"
    done < <(all_datadirs)
    rm -rf "/tmp/walcast-pgsock-${NAME}-${REPO_HASH}" "/tmp/walcast-pg-${NAME}-${REPO_HASH}.lock"
}

case "$CMD" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_restart ;;
    status) do_status ;;
    url) echo "$URL" ;;
    install) ensure_binaries; log "server binaries: $BINDIR" ;;
    datadir) ensure_binaries >/dev/null; choose_datadir 0; echo "$DATADIR" ;;
    clean) do_clean ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
