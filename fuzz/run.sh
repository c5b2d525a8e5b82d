#!/usr/bin/env bash
# Runs the fuzz targets one after another, each a single libFuzzer process (one core):
#   fuzz/run.sh smoke [TARGET...]   5 s each (`make fuzz-smoke`, CI)
#   fuzz/run.sh long [TARGET...]    10 million executions each (docs/reliability.md)
# Each target's output goes to fuzz/logs/<mode>-<target>.log; its last line is printed here.
# A crash, a timeout (-timeout: a single input over 10 s) or a leak stops the run with the
# log's tail, and libFuzzer leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

ALL=(channel request_body batch_query webhook_body publish_body wire task_auth jwt policy_toml)
mode=${1:-smoke}
shift || true
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${ALL[@]}"); fi

case "$mode" in
    smoke) budget=(-max_total_time=5) ;;
    long) budget=(-runs=10000000) ;;
    *) echo "usage: fuzz/run.sh smoke|long [TARGET...]" >&2; exit 2 ;;
esac

# `-s none`: no AddressSanitizer. The code under test is safe Rust, where ASan finds little,
# and `-Zsanitizer` would need a nightly compiler (or RUSTC_BOOTSTRAP=1 on stable); without
# it the crate builds on the stable toolchain as is, and runs about twice as fast.
cargo fuzz build -s none

mkdir -p logs
passed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="logs/$mode-$target.log"
    started=$(date +%s)
    if ! cargo fuzz run -s none -j 1 "$target" "corpus/$target" "seeds/$target" -- \
        "${budget[@]}" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        echo "fuzz $target: FAILED after $(($(date +%s) - started)) s (fuzz/$log):" >&2
        tail -n 40 "$log" >&2
        echo "fuzz: $passed passed, 1 failed"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    echo "fuzz $target: $runs runs, $rate exec/s, $(($(date +%s) - started)) s, no crash"
    passed=$((passed + 1))
done
# The plain closing line CI reads as a test count.
echo "fuzz: $passed passed, 0 failed"
