#!/usr/bin/env bash
# The load benchmark of docs/benchmarks.md, everything on this host.
# Usage: scripts/bench.sh [runs] [duration-seconds] [suite...]
#   suites: floor (bare RabbitMQ round trips, exclusive queue vs direct reply-to),
#           distributed (one gateway, two workers: miss10 hit10 single storm),
#           direct (miss10 and single with the gateway on direct reply-to),
#           dev (`porter dev`: miss10 hit10 single), cluster (the distributed suite's
#           miss10 hit10 single on the loopback clusters of scripts/cluster.sh: AMQP_URL = the
#           3 RabbitMQ nodes with quorum task queues, REDIS_URL = the Redis Cluster when
#           scripts/cluster/redis.sh is there); default: all of them but cluster.
# STORM_CLIENTS (default 1000) sets the storm's clients, 5 channels each: issue 14's target is
# for 10,000 (`STORM_CLIENTS=10000 scripts/bench.sh 3 8 distributed`).
# Starts its own processes (with a unique queue and key prefix) and stops them by pid.
# PORTER_TASK_KEYS (and PORTER_TASK_AUTH) in the environment reach the gateway and workers:
# `PORTER_TASK_KEYS=$(openssl rand -hex 32) scripts/bench.sh 3 8 distributed` measures signed
# tasks and replies (docs/task-auth.md); those runs are labelled `…/signed`.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
storm_clients=${STORM_CLIENTS:-1000}
duration=${2:-10}
shift $(( $# > 2 ? 2 : $# ))
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(floor distributed direct dev)

./scripts/services.sh >/dev/null
cargo build --release -q -p porter -p porter-bench
# PORTER_BIN: another build of porter to measure with the same load generator (A/B).
bin=${PORTER_BIN:-target/release/porter}
bench=target/release/porter-bench
prefix="porter-bench.$$."
port=18181
. scripts/lib/local-run.sh
run_environment "$prefix" bench-secret

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    remove_run_data "$prefix"
    if [ -n "${cluster_up:-}" ]; then
        ./scripts/cluster.sh ctl rabbitmq 1 list_queues -q --no-table-headers name 2>/dev/null </dev/null |
            grep -F "$prefix" | while read -r queue; do
                ./scripts/cluster.sh ctl rabbitmq 1 delete_queue "$queue" >/dev/null 2>&1 </dev/null || true
            done || true
        for redis_port in $cluster_redis_ports; do
            redis-cli -p "$redis_port" --scan --pattern "$prefix*" 2>/dev/null |
                xargs -r -n 1 redis-cli -c -p "$redis_port" del >/dev/null 2>&1 || true
        done
    fi
}
trap cleanup EXIT

services=()
beam=$(pgrep -o beam.smp || true); [ -n "$beam" ] && services+=(--pid rabbitmq=$beam)
redis=$(pgrep -o redis-server || true); [ -n "$redis" ] && services+=(--pid redis=$redis)

# The gateway on $port ready, and a second for its workers' consumers to settle.
gateway_ready() {
    wait_ready "http://127.0.0.1:$port"
    sleep 1
}

# load SCENARIO... : every scenario `runs` times against the gateway on $port.
load() {
    for scenario in "$@"; do
        for run in $(seq "$runs"); do
            echo "== $label $scenario run $run"
            if [ "$scenario" = storm ]; then
                "$bench" --url "http://127.0.0.1:$port" --scenario storm --clients "$storm_clients" \
                    "${watch[@]}" --json
            else
                "$bench" --url "http://127.0.0.1:$port" --scenario "$scenario" \
                    --connections 16 --duration "$duration" --warmup 2 "${watch[@]}" --json
            fi
        done
    done
}

# distributed MODE SCENARIO... : a gateway (reply mode MODE) and two workers.
distributed() {
    local mode=$1; shift
    PORTER_REPLY_MODE=$mode "$bin" gateway --listen 127.0.0.1:$port & local gateway=$!
    "$bin" worker --concurrency 128 --prefetch 256 & local w1=$!
    "$bin" worker --concurrency 128 --prefetch 256 & local w2=$!
    pids+=("$gateway" "$w1" "$w2")
    gateway_ready
    watch=(--pid gateway=$gateway --pid worker1=$w1 --pid worker2=$w2 "${services[@]}")
    label="${distributed_label:-distributed}/$mode${PORTER_TASK_KEYS:+/signed}" load "$@"
    kill "$gateway" "$w1" "$w2"; wait "$gateway" "$w1" "$w2" 2>/dev/null || true
}

for suite in "${suites[@]}"; do
    case $suite in
    floor)
        for mode in exclusive direct; do
            for run in $(seq "$runs"); do
                echo "== floor $mode run $run"
                "$bench" --scenario floor --reply-mode $mode --connections 16 \
                    --duration "$duration" --warmup 2 "${services[@]}" --json
            done
        done
        ;;
    distributed) distributed exclusive miss10 hit10 single storm ;;
    direct) distributed direct miss10 single ;;
    cluster)
        ./scripts/cluster.sh up >/dev/null
        cluster_up=1
        cluster_services=()
        for n in 1 2 3; do
            cluster_services+=(--pid "rabbitmq$n=$(./scripts/cluster.sh pid rabbitmq $n)")
        done
        cluster_redis_ports=""
        if [ -f scripts/cluster/redis.sh ]; then
            redis_url=$(./scripts/cluster.sh urls redis)
            redis_url=${redis_url#REDIS_URL=}
            cluster_redis_ports=$(echo "$redis_url" | grep -o ':[0-9]\{4,5\}' | tr -d :)
        fi
        (
            export AMQP_URL="$(./scripts/cluster.sh urls rabbitmq)" PORTER_QUEUE_TYPE=quorum
            [ -n "$cluster_redis_ports" ] && export REDIS_URL="$redis_url"
            services=("${cluster_services[@]}")
            distributed_label=cluster/quorum${cluster_redis_ports:+/redis-cluster} \
                distributed exclusive miss10 hit10 single
        )
        ;;
    dev)
        "$bin" dev --listen 127.0.0.1:$port >/dev/null & dev=$!; pids+=("$dev")
        gateway_ready
        watch=(--pid dev=$dev --jwt-secret porter-dev-secret)
        label=dev load miss10 hit10 single
        kill "$dev"; wait "$dev" 2>/dev/null || true
        ;;
    *) echo "unknown suite $suite" >&2; exit 2 ;;
    esac
done
