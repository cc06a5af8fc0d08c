#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ (GGUF header and fit, pickle, safetensors, the request path) for
# SECONDS (default 60) from a seed corpus, with dictionaries of the GGUF keys fit reads and of
# request fields and schema keywords. No sanitizer (the parsers
# are safe Rust, so what there is to find is a panic, an overflow, or unbounded time or memory),
# with debug assertions (overflow checks) on. Fails when a target crashes (its input is left in
# fuzz/artifacts/TARGET/) or when fuzzing could not run at all.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
python3 scripts/fuzz_seeds.py fuzz/corpus fuzz/gguf.dict
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in gguf pickle safetensors request; do
  echo "fuzz: $target for ${secs}s" >&2
  rm -rf "fuzz/artifacts/$target"
  dict=()
  [ "$target" = gguf ] && dict=(-dict=fuzz/gguf.dict)
  [ "$target" = request ] && dict=(-dict=fuzz/request.dict)
  rc=0
  cargo fuzz run --sanitizer none -O -a "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${dict[@]}" >"$log" 2>&1 || rc=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|thread .* panicked)" "$log" >&2 || true
  if [ "$rc" -ne 0 ] || compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target failed (exit $rc): $(ls "fuzz/artifacts/$target" 2>/dev/null || true)" >&2
    exit 1
  fi
done
