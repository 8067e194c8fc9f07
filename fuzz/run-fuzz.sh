#!/usr/bin/env bash
# Run libFuzzer targets for a fixed time each, JOBS at a time, and summarize.
#
#   bash fuzz/run-fuzz.sh DIR SECONDS JOBS TARGET...      (make fuzz / make fuzz-quick)
#
# DIR holds the built fuzz_<target> binaries (make fuzz-build).  Each target starts
# from its committed seeds (fuzz/corpus/<target>) plus the scratch corpus of earlier
# runs (DIR/corpus/<target>, where new inputs go), with its dictionary if there is one
# (fuzz/<target>.dict).  Logs: DIR/log/<target>.log; crashes, leaks, timeouts:
# DIR/artifacts/<target>-*; summary: DIR/summary.txt.  Exits 1 if any target failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=$1 secs=$2 jobs=$3
shift 3
targets=("$@")
mkdir -p "$dir/log" "$dir/artifacts"

run_one() {
    local t=$1 dict=()
    [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
    mkdir -p "$dir/corpus/$t"
    # -timeout: a unit taking 10 s is a hang; -rss_limit_mb: a leak or a bomb
    "$dir/fuzz_$t" "$dir/corpus/$t" "fuzz/corpus/$t" "${dict[@]}" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/$t-" >"$dir/log/$t.log" 2>&1
    echo $? >"$dir/log/$t.rc"
}

echo "fuzzing ${targets[*]}: ${secs}s each, $jobs at a time (logs in $dir/log/)"
running=0
for t in "${targets[@]}"; do
    rm -f "$dir/log/$t.rc"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

fail=0
{
    printf '%-10s %-6s %12s %8s %8s %8s %10s\n' target result execs exec/s cov ft corpus
    for t in "${targets[@]}"; do
        log=$dir/log/$t.log
        rc=$(cat "$dir/log/$t.rc" 2>/dev/null || echo 99)
        # the last status line ("#N DONE cov: C ft: F corp: K/B ... exec/s: E")
        line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)
        execs=$(grep -oE 'stat::number_of_executed_units:[[:space:]]+[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
        speed=$(grep -oE 'stat::average_exec_per_sec:[[:space:]]+[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
        cov=$(grep -oE 'cov: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || true)
        ft=$(grep -oE 'ft: [0-9]+' <<<"$line" | grep -oE '[0-9]+' || true)
        corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$line" | cut -d' ' -f2 || true)
        result=ok
        if [ "$rc" != 0 ]; then
            result=FAIL
            fail=1
        fi
        printf '%-10s %-6s %12s %8s %8s %8s %10s\n' "$t" "$result" "${execs:-?}" \
            "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
    done
} | tee "$dir/summary.txt"

if [ "$fail" != 0 ]; then
    echo "fuzzing FAILED; see $dir/log/ and $dir/artifacts/:" >&2
    for t in "${targets[@]}"; do
        if [ "$(cat "$dir/log/$t.rc" 2>/dev/null || echo 99)" != 0 ]; then
            echo "--- $t" >&2
            grep -E 'invariant failed|ERROR:|runtime error|SUMMARY|Test unit written' \
                "$dir/log/$t.log" | head -20 >&2 || true
        fi
    done
    exit 1
fi
