#!/usr/bin/env bash
# Runs every fuzz target for MINUTES minutes each (default 10) with libFuzzer, under an RSS limit
# of 2 GiB and a single-allocation limit of 1 GiB, from the seeds in fuzz/seeds/TARGET (copied to
# target/fuzz-corpus, so the repository's seeds do not grow). Prints the executions per target;
# exits non-zero on the first crash, timeout or out-of-memory (libFuzzer leaves the input in
# fuzz/artifacts/TARGET).
#
#   bash fuzz/run.sh [MINUTES] [TARGET...]
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
minutes=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image_decode torch_legacy torch_zip safetensors settings settings_file manifest onnx)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  corpus=../target/fuzz-corpus/$t
  mkdir -p "$corpus"
  cp -n seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  log=../target/fuzz-$t.log
  cargo fuzz run "$t" "$corpus" -- -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -timeout=10 -print_final_stats=1 2>&1 | tee "$log" | grep -E "^#[0-9]+ +DONE|ERROR|SUMMARY" || true
  if grep -q -E "ERROR: libFuzzer|SUMMARY: (Address|libFuzzer)" "$log"; then
    echo "fuzz/run.sh: $t found a problem; see $log and fuzz/artifacts/$t" >&2
    exit 1
  fi
  runs=$(grep -E "stat::number_of_executed_units" "$log" | awk '{print $2}')
  echo "fuzz/run.sh: $t: $runs executions in $minutes min, no crash"
done
