#!/usr/bin/env bash
# The Redis the cluster tests use (tests/it/cluster.rs). Prints its URL on the last line.
#
#   scripts/redis.sh ensure   WALCAST_TEST_REDIS_URL if set; else the machine's Redis on
#                             127.0.0.1:6379 if it answers; else a private redis-server on
#                             127.0.0.1:${WALCAST_REDIS_PORT:-56379} (installed with apt-get
#                             when missing), started in the background, keeping nothing on disk
#   scripts/redis.sh stop     stops that private server if this script started it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${WALCAST_REDIS_PORT:-56379}"
PIDFILE="target/redis-test.pid"

# Whether a Redis 7+ answers on 127.0.0.1:$1 (PING, then the server version).
answers() {
    local port=$1 reply version
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    printf 'PING\r\nINFO server\r\nQUIT\r\n' >&3
    reply="$(timeout 2 head -c 4000 <&3 || true)"
    exec 3<&- 3>&-
    [[ "$reply" == +PONG* ]] || return 1
    version="$(grep -o 'redis_version:[0-9]*' <<<"$reply" | cut -d: -f2)"
    [[ -n "$version" && "$version" -ge 7 ]]
}

case "${1:-}" in
ensure)
    if [[ -n "${WALCAST_TEST_REDIS_URL:-}" ]]; then
        echo "redis: using WALCAST_TEST_REDIS_URL"
        echo "$WALCAST_TEST_REDIS_URL"
        exit 0
    fi
    if answers 6379; then
        echo "redis: the machine's Redis 7+ answers on 127.0.0.1:6379"
        echo "redis://127.0.0.1:6379/?protocol=resp3"
        exit 0
    fi
    if ! answers "$PORT"; then
        if ! command -v redis-server >/dev/null 2>&1; then
            echo "redis: redis-server not found: installing it (apt-get install -y redis-server)"
            apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null
        fi
        mkdir -p target
        echo "redis: starting a private redis-server on 127.0.0.1:$PORT (nothing kept on disk)"
        redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize yes --pidfile "$(pwd)/$PIDFILE" --logfile "$(pwd)/target/redis-test.log"
        for _ in $(seq 50); do answers "$PORT" && break; sleep 0.1; done
        answers "$PORT" || { echo "redis: the private server did not answer (target/redis-test.log)" >&2; exit 1; }
    fi
    echo "redis://127.0.0.1:$PORT/?protocol=resp3"
    ;;
stop)
    if [[ -f "$PIDFILE" ]]; then
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        rm -f "$PIDFILE"
        echo "redis: private server stopped"
    fi
    ;;
*)
    echo "usage: scripts/redis.sh ensure|stop" >&2
    exit 2
    ;;
esac
