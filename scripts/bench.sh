#!/usr/bin/env bash
# The load benchmark of docs/benchmarks.md: one gateway, two workers, RabbitMQ, Redis and the
# load generator on this host. Usage: scripts/bench.sh [runs] [duration-seconds]
# Starts its own processes (with a unique queue and key prefix) and stops them by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
duration=${2:-10}
./scripts/services.sh >/dev/null
cargo build --release -q -p porter
bin=target/release/porter
prefix="porter-bench.$$."
port=18181
export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f REDIS_URL=redis://127.0.0.1:6379/
export PORTER_QUEUE_PREFIX=$prefix PORTER_KEY_PREFIX=$prefix RUST_LOG=warn
export PUSHER_APP_ID=100000 PUSHER_KEY=278d425bdf160c739803 PUSHER_SECRET=7ad3773142a6692b25b8
export PUSHER_ENCRYPTION_MASTER_KEY_BASE64=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=
export PORTER_JWT_SECRET=bench-secret

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

"$bin" gateway --listen 127.0.0.1:$port & gateway=$!; pids+=("$gateway")
"$bin" worker --concurrency 128 --prefetch 256 & w1=$!; pids+=("$w1")
"$bin" worker --concurrency 128 --prefetch 256 & w2=$!; pids+=("$w2")
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
done
sleep 1

watch=(--pid gateway=$gateway --pid worker1=$w1 --pid worker2=$w2)
beam=$(pgrep -o beam.smp || true); [ -n "$beam" ] && watch+=(--pid rabbitmq=$beam)
redis=$(pgrep -o redis-server || true); [ -n "$redis" ] && watch+=(--pid redis=$redis)

for scenario in miss10 hit10 single; do
    for run in $(seq "$runs"); do
        echo "== $scenario run $run"
        "$bin" bench --url "http://127.0.0.1:$port" --scenario "$scenario" --connections 16 \
            --duration "$duration" --warmup 2 "${watch[@]}" --json
    done
done
for run in $(seq "$runs"); do
    echo "== storm run $run"
    "$bin" bench --url "http://127.0.0.1:$port" --scenario storm --clients 1000 "${watch[@]}" --json
done
