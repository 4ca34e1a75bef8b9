#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in fuzz/src/lib.rs with libFuzzer, on the stable
# toolchain: the targets are built with LLVM's sanitizer-coverage (inline 8-bit counters,
# PC table, comparison tracing), which libfuzzer-sys links against its bundled libFuzzer.
#
#   scripts/fuzz.sh [--smoke] [target …]
#
# Full run (`make fuzz`): FUZZ_RUNS executions per target (default 10,000,000). Smoke
# (`--smoke`, part of `make test`): every seed and every saved crash under fuzz/regressions/
# replayed, then FUZZ_SMOKE_SECONDS of fuzzing per target (default 8). Limits in both: an
# input that runs past 1 s is a hang, a process past 256 MiB RSS a failure. A crashing input
# is saved under target/fuzz/crashes/; copy it to fuzz/regressions/<target>/ with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
runs=${FUZZ_RUNS:-10000000}
smoke_seconds=${FUZZ_SMOKE_SECONDS:-8}
triple=x86_64-unknown-linux-gnu
out=target/fuzz
bin=$out/$triple/release/tessera-fuzz

echo "[fuzz] building the targets with sanitizer-coverage (target/fuzz)"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
  cargo build --release --locked --manifest-path fuzz/Cargo.toml --features libfuzzer \
  --bin tessera-fuzz --target $triple --target-dir "$out" 2>&1 | grep -E '^(error|warning: unused)|Finished' || true
[ -x "$bin" ] || { echo "[fuzz] the build failed: run the cargo build above by hand to see why" >&2; exit 1; }

# The targets are the TARGETS table of fuzz/src/lib.rs; each must have its seeds.
mapfile -t all < <(grep -o 'name: "[a-z_0-9]*"' fuzz/src/lib.rs | sed 's/name: "\(.*\)"/\1/')
mapfile -t seeded < <(ls fuzz/corpus)
if [ "$(printf '%s\n' "${all[@]}" | sort)" != "$(printf '%s\n' "${seeded[@]}" | sort)" ]; then
  echo "[fuzz] fuzz/src/lib.rs names ${all[*]:-no targets} but fuzz/corpus/ has ${seeded[*]:-nothing}: give every target a seed directory (fuzz/seeds.sh)" >&2
  exit 2
fi
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

mkdir -p "$out/crashes" "$out/logs"
failed=0
printf '%-16s %12s %8s %10s  %s\n' target executions seconds "execs/s" result
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "[fuzz] unknown target $t (targets: ${all[*]})" >&2; exit 2; }
  work="$out/corpus/$t"; mkdir -p "$work"
  log="$out/logs/$t.log"; : >"$log"
  limits=(-timeout=1 -rss_limit_mb=256 -malloc_limit_mb=256 -artifact_prefix="$out/crashes/$t-" -print_final_stats=1)
  result=ok
  # Saved crashes first: each must now pass.
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    TESSERA_FUZZ_TARGET=$t "$bin" "${limits[@]}" fuzz/regressions/"$t"/* >"$log" 2>&1 || result="regression fails"
  fi
  if [ "$result" = ok ]; then
    if ((smoke)); then budget=(-max_total_time="$smoke_seconds"); else budget=(-runs="$runs"); fi
    TESSERA_FUZZ_TARGET=$t "$bin" "${limits[@]}" "${budget[@]}" "$work" "fuzz/corpus/$t" >>"$log" 2>&1 || result="FAILED"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  rate=$(awk -v e="${execs:-0}" -v s="${secs:-0}" 'BEGIN { if (s > 0) printf "%.0f", e / s; else print "-" }')
  if [ "$result" != ok ]; then
    failed=$((failed + 1))
    why=$(grep -m1 -E '^==[0-9]+== ERROR|panicked at|ERROR: libFuzzer|SUMMARY' "$log" || true)
    result="$result: ${why:-see $log}; input under $out/crashes/"
  fi
  printf '%-16s %12s %8s %10s  %s\n' "$t" "${execs:-0}" "${secs:-0}" "$rate" "$result"
done
echo "FUZZ failed=$failed targets=${#targets[@]} mode=$([ $smoke = 1 ] && echo "smoke ${smoke_seconds}s" || echo "runs $runs")"
((failed == 0))
