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
#
# Deterministic mode (make fuzz-quick, CI): with FUZZ_RUNS=N (and FUZZ_SEED, default 1)
# each target first replays every committed seed once (-runs=0), then runs exactly N
# inputs from seed FUZZ_SEED, starting from the committed seeds only (new inputs go to
# a fresh DIR/quick-corpus/<target>): the same inputs on every run, so a failure is a
# regression of the code, never a new random finding.  SECONDS is ignored then.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=$1 secs=$2 jobs=$3
shift 3
targets=("$@")
mkdir -p "$dir/log" "$dir/artifacts"

run_one() {
    local t=$1 dict=()
    [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
    # -timeout: a unit taking 10 s is a hang; -rss_limit_mb: a leak or a bomb
    local common=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix="$dir/artifacts/$t-")
    if [ -n "${FUZZ_RUNS:-}" ]; then
        rm -rf "$dir/quick-corpus/$t"
        mkdir -p "$dir/quick-corpus/$t"
        # the same inputs every time: no address randomization and the same (empty)
        # environment, so that stack and heap addresses, which comparisons of pointers
        # feed into libFuzzer's value tracing, are the same; no periodic corpus reload
        { "$dir/fuzz_$t" "fuzz/corpus/$t" -runs=0 "${common[@]}" &&
          env -i setarch "$(uname -m)" -R "$dir/fuzz_$t" "$dir/quick-corpus/$t" "fuzz/corpus/$t" \
              "${dict[@]}" -seed="${FUZZ_SEED:-1}" -runs="$FUZZ_RUNS" -reload=0 \
              -print_final_stats=1 "${common[@]}"; } >"$dir/log/$t.log" 2>&1
    else
        mkdir -p "$dir/corpus/$t"
        "$dir/fuzz_$t" "$dir/corpus/$t" "fuzz/corpus/$t" "${dict[@]}" \
            -max_total_time="$secs" -print_final_stats=1 "${common[@]}" \
            >"$dir/log/$t.log" 2>&1
    fi
    echo $? >"$dir/log/$t.rc"
}

if [ -n "${FUZZ_RUNS:-}" ]; then
    echo "fuzzing ${targets[*]}: seeds replayed, then $FUZZ_RUNS inputs from seed" \
         "${FUZZ_SEED:-1}, $jobs at a time (logs in $dir/log/)"
else
    echo "fuzzing ${targets[*]}: ${secs}s each, $jobs at a time (logs in $dir/log/)"
fi
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
