#!/usr/bin/env bash
# Soak: mixed load through one gateway and two workers for a while, sampling every process's
# resident memory, to show it stays flat after warm-up and that nothing is left pending.
# Usage: scripts/soak.sh [seconds, default 600] [sample-interval, default 10]
#
# Load, all at once: misses (porter-bench miss10, 4 connections), hits (hit10, 4), single
# channels as pusher-js sends them (single, 4), and from a curl loop presence subscriptions
# with a token and a few refusals (a forged token, none, a bad channel name).
# Prints one line per sample (`rss_kib gateway=… worker1=… worker2=…`), then per process
# start (first sample after the warm-up), max and end, the bench reports, the refusal
# loop's counts, and `porter_tasks_pending` at the end, which must be 0.
# Starts its own processes (unique queue and key prefix) and stops them by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
interval=${2:-10}
warmup=${SOAK_WARMUP:-30}

./scripts/services.sh >/dev/null
cargo build --release -q -p porter -p porter-bench
bin=${PORTER_BIN:-target/release/porter}
bench=target/release/porter-bench
prefix="porter-soak.$$."
port=18191
out=$(mktemp -d)
. scripts/lib/local-run.sh
run_environment "$prefix" soak-secret

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    remove_run_data "$prefix"
    rm -rf "$out"
}
trap cleanup EXIT

"$bin" gateway --listen 127.0.0.1:$port & gateway=$!
"$bin" worker --concurrency 128 --prefetch 256 & worker1=$!
"$bin" worker --concurrency 128 --prefetch 256 & worker2=$!
pids+=("$gateway" "$worker1" "$worker2")
wait_ready "http://127.0.0.1:$port"

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
url="http://127.0.0.1:$port"
load_seconds=$((seconds + 5))
for scenario in miss10 hit10 single; do
    "$bench" --url "$url" --scenario "$scenario" --connections 4 --duration "$load_seconds" \
        --warmup 0 --json >"$out/$scenario.log" 2>&1 & pids+=($!)
done

# Presence with a valid token, and refusals: a forged token and no token at all on a
# presence channel (401 / 403), and a channel name that is not one (400).
token=$("$bin" token --sub soak-user --name Soak)
(
    ok=0 refused=0 other=0
    end=$((SECONDS + load_seconds))
    while [ $SECONDS -lt $end ]; do
        for _ in 1 2 3 4 5 6 7 8; do
            code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/pusher/auth" \
                -H "Authorization: Bearer $token" \
                --data "socket_id=1.$RANDOM&channel_name=presence-chat@soak$RANDOM")
            if [ "$code" = 200 ]; then ok=$((ok + 1)); else other=$((other + 1)); fi
        done
        for case in forged anonymous badname; do
            header=() channel="presence-chat@soak1"
            case $case in
            forged) header=(-H "Authorization: Bearer $token.forged") ;;
            badname) header=(-H "Authorization: Bearer $token") channel="private-bad%20name" ;;
            esac
            code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/pusher/auth" \
                "${header[@]}" --data "socket_id=1.2&channel_name=$channel")
            case $code in 4*) refused=$((refused + 1)) ;; *) other=$((other + 1)) ;; esac
        done
        sleep 0.2
    done
    echo "presence_ok=$ok refused=$refused unexpected=$other" >"$out/curl.log"
) & pids+=($!)

declare -A first max last
samples=0
start=$SECONDS
end=$((start + seconds))
while [ $SECONDS -lt $end ]; do
    sleep "$interval"
    elapsed=$((SECONDS - start))
    line="rss_kib t=${elapsed}s"
    for name in gateway worker1 worker2; do
        pid=${!name}
        value=$(rss "$pid")
        line+=" $name=$value"
        last[$name]=$value
        if [ "$elapsed" -ge "$warmup" ] && [ -z "${first[$name]:-}" ]; then first[$name]=$value; fi
        if [ "$value" -gt "${max[$name]:-0}" ]; then max[$name]=$value; fi
    done
    samples=$((samples + 1))
    echo "$line"
done

wait "${pids[@]:3}" 2>/dev/null || true
sleep 2
pending=$(curl -fs "$url/metrics" | awk '/^porter_tasks_pending / { print $2 }')
echo "== after ${seconds}s, $samples samples every ${interval}s (warm-up ${warmup}s)"
for name in gateway worker1 worker2; do
    echo "rss_kib $name start=${first[$name]:-?} max=${max[$name]:-?} end=${last[$name]:-?}"
done
for scenario in miss10 hit10 single; do
    echo "== $scenario"; grep '^{' "$out/$scenario.log" || tail -3 "$out/$scenario.log"
done
cat "$out/curl.log" 2>/dev/null || true
echo "porter_tasks_pending $pending"
[ "$pending" = 0 ]
