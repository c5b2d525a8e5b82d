#!/usr/bin/env bash
# The Redis part of scripts/cluster.sh: a Redis Cluster of six redis-server nodes on 127.0.0.1,
# ports 7001-7006 (cluster bus on 17001-17006), three masters and three replicas, made by
# `redis-cli --cluster create ... --cluster-replicas 1`. The machine's own Redis (6379) is never
# addressed. Each node keeps its nodes.conf, log and pid file under
# $PORTER_CLUSTER_DIR/redis-<n>/; no persistence (no RDB, no AOF): a restarted node comes back
# empty and its nodes.conf makes it rejoin its cluster, as a replica when its shard failed over.
#
# cluster-node-timeout is 2000 ms (PORTER_REDIS_NODE_TIMEOUT_MS overrides it): a master that
# stops answering is marked failed after about that long and its replica is promoted about a
# second later, so a failover takes ~3 s instead of the 15 s of Redis's default.
#
# Usage: redis.sh up|down|status|urls | start-node|stop-node|pid <n>
set -euo pipefail

BASE="${PORTER_CLUSTER_DIR:-/tmp/porter-cluster}"
NODES=6
PORT_BASE=7000
NODE_TIMEOUT_MS="${PORTER_REDIS_NODE_TIMEOUT_MS:-2000}"
START_TIMEOUT=30

node_dir() { echo "$BASE/redis-$1"; }
pid_file() { echo "$(node_dir "$1")/redis.pid"; }
port_of() { echo $((PORT_BASE + $1)); }

check_n() {
    case "$1" in
        '' | *[!0-9]*) echo "error: redis node must be 1..$NODES" >&2; exit 2 ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt "$NODES" ]; then
        echo "error: redis node must be 1..$NODES" >&2
        exit 2
    fi
}

cli() { redis-cli -h 127.0.0.1 -p "$(port_of "$1")" "${@:2}"; }

# The pid of node $1 when it runs (a live process whose pid file says so), else nothing.
running_pid() {
    local file pid
    file="$(pid_file "$1")"
    [ -s "$file" ] || return 1
    pid="$(cat "$file")"
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid is not ours: the process must be a redis-server on the node's port.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "redis-server.*:$(port_of "$1")" || return 1
    echo "$pid"
}

answers() { [ "$(cli "$1" ping 2>/dev/null)" = "PONG" ]; }

start_node() {
    local n="$1" dir port
    dir="$(node_dir "$n")"
    port="$(port_of "$n")"
    if running_pid "$n" >/dev/null; then
        return 0
    fi
    mkdir -p "$dir"
    # --save "" and --appendonly no: no persistence; the data lives in the replicas.
    # --repl-diskless-sync-delay 0: a master sends a (re)joining replica its data at once instead
    # of waiting 5 s for more replicas; until that sync is done the replica cannot take over.
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
        --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
        --cluster-node-timeout "$NODE_TIMEOUT_MS" --save "" --appendonly no \
        --repl-diskless-sync-delay 0 \
        --dir "$dir" --pidfile "$(pid_file "$n")" --logfile "$dir/redis.log"
    for _ in $(seq $((START_TIMEOUT * 10))); do
        answers "$n" && return 0
        sleep 0.1
    done
    echo "error: redis node $n (port $port) did not answer within ${START_TIMEOUT}s (see $dir/redis.log)" >&2
    return 1
}

stop_node() {
    local n="$1" pid
    pid="$(running_pid "$n")" || return 0
    kill "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$(pid_file "$n")"; return 0; }
        sleep 0.1
    done
    echo "error: redis node $n (pid $pid) did not stop within 10 s" >&2
    return 1
}

# Whether node $1 is a replica whose copy of its master is complete (it could take over).
replica_synced() {
    cli "$1" info replication 2>/dev/null | tr -d '\r' | grep -q '^master_link_status:up$'
}

# The cluster is formed when every node says cluster_state:ok and knows all six nodes, and
# every replica is in sync with its master (else a master lost now could not be replaced).
formed() {
    local n info known
    for n in $(seq "$NODES"); do
        info="$(cli "$n" cluster info 2>/dev/null | tr -d '\r')" || return 1
        grep -q '^cluster_state:ok$' <<<"$info" || return 1
        known="$(grep '^cluster_known_nodes:' <<<"$info" | cut -d: -f2)"
        [ "$known" = "$NODES" ] || return 1
        if [ "$(cli "$n" role 2>/dev/null | head -1 | tr -d '\r')" = "slave" ]; then
            replica_synced "$n" || return 1
        fi
    done
}

# Whether any node already has slots (a cluster was created before: never create twice).
has_slots() {
    local n
    for n in $(seq "$NODES"); do
        [ "$(cli "$n" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_slots_assigned:' | cut -d: -f2)" != "0" ] && return 0
    done
    return 1
}

up() {
    local n addresses=()
    mkdir -p "$BASE"
    for n in $(seq "$NODES"); do
        start_node "$n"
        addresses+=("127.0.0.1:$(port_of "$n")")
    done
    if ! has_slots; then
        redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$BASE/redis-create.log" 2>&1 || {
            echo "error: redis-cli --cluster create failed (see $BASE/redis-create.log)" >&2
            return 1
        }
    fi
    for _ in $(seq $((START_TIMEOUT * 10))); do
        if formed; then
            echo "redis: cluster up on 127.0.0.1:$(port_of 1)-$(port_of "$NODES") (node timeout ${NODE_TIMEOUT_MS} ms)"
            return 0
        fi
        sleep 0.1
    done
    echo "error: the redis cluster did not reach cluster_state:ok within ${START_TIMEOUT}s" >&2
    return 1
}

down() {
    local n rc=0
    for n in $(seq "$NODES"); do
        stop_node "$n" || rc=1
    done
    [ "$rc" = 0 ] && echo "redis: cluster down"
    return "$rc"
}

status() {
    local n pid role rc=0
    for n in $(seq "$NODES"); do
        if pid="$(running_pid "$n")"; then
            role="$(cli "$n" role 2>/dev/null | head -1 | tr -d '\r')"
            link=""
            if [ "$role" = "slave" ]; then
                if replica_synced "$n"; then link=" synced"; else link=" syncing"; fi
            fi
            echo "redis-$n 127.0.0.1:$(port_of "$n") up pid $pid ${role:-unknown}$link $(cli "$n" cluster info 2>/dev/null | tr -d '\r' | grep '^cluster_state:' || echo cluster_state:unknown)"
        else
            echo "redis-$n 127.0.0.1:$(port_of "$n") down"
            rc=1
        fi
    done
    return "$rc"
}

urls() {
    local n list=()
    for n in $(seq "$NODES"); do
        list+=("127.0.0.1:$(port_of "$n")")
    done
    echo "REDIS_URL=redis+cluster://$(IFS=,; echo "${list[*]}")"
}

[ $# -ge 1 ] || { echo "usage: $0 up|down|status|urls | start-node|stop-node|pid <n>" >&2; exit 2; }
case "$1" in
    up) up ;;
    down) down ;;
    status) status ;;
    urls) urls ;;
    start-node) [ $# -eq 2 ] || exit 2; check_n "$2"; mkdir -p "$BASE"; start_node "$2" ;;
    stop-node) [ $# -eq 2 ] || exit 2; check_n "$2"; stop_node "$2" ;;
    pid) [ $# -eq 2 ] || exit 2; check_n "$2"; running_pid "$2" || { echo "error: redis node $2 is down" >&2; exit 1; } ;;
    *) echo "usage: $0 up|down|status|urls | start-node|stop-node|pid <n>" >&2; exit 2 ;;
esac
