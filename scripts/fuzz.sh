#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ (GGUF header and fit, pickle, safetensors) for SECONDS (default
# 60) from a seed corpus. No sanitizer (the parsers are safe Rust, so what there is to find is a
# panic, an overflow, or unbounded time or memory), with debug assertions (overflow checks) on.
# A crash leaves its input in fuzz/artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
python3 scripts/fuzz_seeds.py fuzz/corpus
for target in gguf pickle safetensors; do
  echo "fuzz: $target for ${secs}s" >&2
  cargo fuzz run --sanitizer none -O -a "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+ *DONE|==|stat::number_of_executed_units|stat::peak_rss|SUMMARY|INFO: Running|thread|panicked)" || true
  # grep ate the exit status; a crash leaves an artifact.
  if compgen -G "fuzz/artifacts/$target/*" >/dev/null; then
    echo "fuzz: $target found a crash: $(ls fuzz/artifacts/$target)" >&2
    exit 1
  fi
done
