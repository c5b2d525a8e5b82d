#!/usr/bin/env bash
# A RabbitMQ cluster (3 nodes) and a Redis Cluster (6 nodes) on loopback, for tests and
# benchmarks: no docker, no root services touched (never 5672 / 6379 or the machine's own
# `rabbit@<host>` node). Each engine's part lives in scripts/cluster/<engine>.sh; this script
# only dispatches, so the two parts keep one set of conventions:
#
#   state      ${PORTER_CLUSTER_DIR:-/tmp/porter-cluster}/<engine>-<n>/ (data, logs, pid file)
#   up         idempotent: a node that is running is left alone; exits non-zero if the cluster
#              is not formed at the end
#   down       stops the nodes by the pids in their pid files, never by name
#   status     one line per node; exits non-zero if any node is down
#
# Usage:
#   scripts/cluster.sh up|down|status [rabbitmq|redis]   (no engine: every engine present)
#   scripts/cluster.sh start-node <engine> <n>   start one node (it rejoins its cluster)
#   scripts/cluster.sh stop-node <engine> <n>    stop one node cleanly (by pid)
#   scripts/cluster.sh pid <engine> <n>          print a running node's pid (exit 1 if down)
#   scripts/cluster.sh urls [engine]             the client URL of each engine's cluster
#   scripts/cluster.sh ctl rabbitmq <n> <args>   rabbitmqctl against node <n> (its cookie)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PORTER_CLUSTER_DIR="${PORTER_CLUSTER_DIR:-/tmp/porter-cluster}"

usage() {
    echo "usage: $0 up|down|status|urls [rabbitmq|redis] | start-node|stop-node|pid <rabbitmq|redis> <n>" >&2
    exit 2
}

engine_script() {
    case "$1" in
        rabbitmq | redis) echo "$HERE/cluster/$1.sh" ;;
        *) echo "error: unknown engine '$1' (rabbitmq or redis)" >&2; exit 2 ;;
    esac
}

# Engines whose script is present, in a fixed order.
engines() {
    local e
    for e in rabbitmq redis; do
        [ -f "$HERE/cluster/$e.sh" ] && echo "$e"
    done
}

[ $# -ge 1 ] || usage
cmd="$1"
shift

case "$cmd" in
    up | down | status | urls)
        if [ $# -ge 1 ]; then
            selected="$1"
            script="$(engine_script "$selected")"
            [ -f "$script" ] || { echo "error: $script is missing" >&2; exit 2; }
            exec bash "$script" "$cmd"
        fi
        mkdir -p "$PORTER_CLUSTER_DIR"
        rc=0
        if [ "$cmd" = up ]; then
            # The engines start in parallel (each takes seconds); each one's output goes to a
            # log printed when it is done, so the lines do not interleave.
            start=$(date +%s)
            pids=()
            list=()
            for e in $(engines); do
                bash "$(engine_script "$e")" up >"$PORTER_CLUSTER_DIR/up-$e.log" 2>&1 &
                pids+=("$!")
                list+=("$e")
            done
            for i in "${!pids[@]}"; do
                if wait "${pids[$i]}"; then :; else rc=1; fi
                cat "$PORTER_CLUSTER_DIR/up-${list[$i]}.log"
            done
            echo "cluster: up took $(($(date +%s) - start)) s"
        else
            for e in $(engines); do
                bash "$(engine_script "$e")" "$cmd" || rc=1
            done
        fi
        exit "$rc"
        ;;
    ctl)
        # rabbitmqctl against one node of the RabbitMQ cluster: ctl rabbitmq <n> <args>.
        [ $# -ge 3 ] && [ "$1" = rabbitmq ] || usage
        exec bash "$(engine_script rabbitmq)" ctl "${@:2}"
        ;;
    start-node | stop-node | pid)
        [ $# -eq 2 ] || usage
        script="$(engine_script "$1")"
        [ -f "$script" ] || { echo "error: $script is missing" >&2; exit 2; }
        case "$2" in
            '' | *[!0-9]*) echo "error: node number must be a positive integer" >&2; exit 2 ;;
        esac
        exec bash "$script" "$cmd" "$2"
        ;;
    *) usage ;;
esac
