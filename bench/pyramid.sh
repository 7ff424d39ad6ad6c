#!/usr/bin/env bash
# Does the coarse-to-fine pyramid reach a lower objective at the output size than a single-scale
# run given the same wall time? For each pair: run the automatic pyramid, note its wall time T,
# run single-scale with --time-limit T, then score both outputs with the same objective at the
# output size (`impasto score`). Prints a table.
#
#   bash bench/pyramid.sh [SIZE] [ITERATIONS]     (defaults: 1024 60; about 10 minutes a pair on 2 cores)
#
# IMPASTO_BIN=path runs that binary instead of building target/release/impasto.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
iters=${2:-60}
bin=${IMPASTO_BIN:-target/release/impasto}
[ -n "${IMPASTO_BIN:-}" ] || cargo build --release -q
out=${BENCH_OUT:-target/bench-pyramid}
mkdir -p "$out"
pairs=("examples/tubingen.jpg examples/starry_night.jpg" "examples/kodim23.png examples/shipwreck.jpg")
printf '| pair | schedule | wall time (s) | iterations | objective at %s |\n|---|---|---|---|---|\n' "$size"
for pair in "${pairs[@]}"; do
  set -- $pair
  name=$(basename "${1%.*}")-$(basename "${2%.*}")
  "$bin" stylize "$1" "$2" --size "$size" --iterations "$iters" --quiet \
    --log "$out/$name-pyramid.jsonl" -o "$out/$name-pyramid.png"
  t=$(tail -n 1 "$out/$name-pyramid.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
  "$bin" stylize "$1" "$2" --size "$size" --scales off --iterations 100000 --time-limit "$t" --quiet \
    --log "$out/$name-single.jsonl" -o "$out/$name-single.png"
  for kind in pyramid single; do
    score=$("$bin" score "$1" "$2" --size "$size" --image "$out/$name-$kind.png" |
      python3 -c 'import json,sys; print("%.4g" % json.load(sys.stdin)["total"])')
    n=$(wc -l < "$out/$name-$kind.jsonl")
    secs=$(tail -n 1 "$out/$name-$kind.jsonl" | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["seconds"])')
    sched=$([ "$kind" = pyramid ] && echo "auto (256 → $size, ×√2)" || echo "single scale")
    printf '| %s | %s | %s | %s | %s |\n' "$name" "$sched" "$secs" "$n" "$score"
  done
done
