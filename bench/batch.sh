#!/usr/bin/env bash
# Batch benchmarks (`impasto batch`), printed as tables:
#  1. a 1,000,000-line manifest: the time and peak memory to resolve item 999,999 (listing it,
#     and running it when its output is already done: found, checked, skipped), to count the
#     items' states (`--status`) and to check every item (`--check`);
#  2. a 20-item batch in one process (one network load, the style targets shared) against 20
#     `impasto stylize --settings` processes, at SIZE px for ITERATIONS evaluations.
# Usage: bash bench/batch.sh [SIZE [ITERATIONS]]   (default 128 px, 30 evaluations)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-128}
iterations=${2:-30}
impasto=${IMPASTO:-target/release/impasto}
[ -x "$impasto" ] || cargo build --release --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp examples/tubingen.jpg examples/starry_night.jpg examples/shipwreck.jpg "$work/"
"$impasto" weights path >/dev/null

measure() { # label, command...: prints "label | seconds | peak MiB"
  local label=$1; shift
  local code=0
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || code=$?
  # `--status` exits 1 while items are missing.
  [ "$code" -le 1 ] || { cat "$work/err"; exit 1; }
  read -r seconds kib < <(tail -1 "$work/time")
  printf '| %-52s | %8.2f | %8.1f |\n' "$label" "$seconds" "$(echo "$kib / 1024" | bc -l)"
}

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
with open(f"{work}/million.jsonl", "w") as f:
    for i in range(1_000_000):
        f.write(json.dumps({"content": "tubingen.jpg", "styles": [{"image": "starry_night.jpg"}],
                            "config": {"size": 32, "iterations": 2}, "output": f"out/{i}.png"}) + "\n")
PY
mkdir -p "$work/out"
"$impasto" batch "$work/million.jsonl" --index 999999 --quiet
echo
echo "1,000,000-line manifest ($(du -m "$work/million.jsonl" | cut -f1) MB)"
echo "| what                                                 | seconds  | peak MiB |"
echo "|------------------------------------------------------|----------|----------|"
measure "--list --index 999999 (found by scanning)" "$impasto" batch "$work/million.jsonl" --list --index 999999
measure "--index 999999, output done (found, checked, skipped)" "$impasto" batch "$work/million.jsonl" --index 999999 --quiet
measure "--status (every line parsed, every output looked at)" "$impasto" batch "$work/million.jsonl" --status
measure "--check (every line parsed and checked)" "$impasto" batch "$work/million.jsonl" --check
rm "$work/million.jsonl"

python3 - "$work" "$size" "$iterations" <<'PY'
import json, sys
work, size, iterations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pairs = [("tubingen.jpg", "starry_night.jpg"), ("shipwreck.jpg", "starry_night.jpg"), ("tubingen.jpg", "shipwreck.jpg")]
with open(f"{work}/twenty.jsonl", "w") as m:
    for i in range(20):
        c, s = pairs[i % 3]
        run = {"content": f"{work}/{c}", "styles": [{"image": f"{work}/{s}"}],
               "config": {"size": size, "iterations": iterations, "seed": i}}
        json.dump(run, open(f"{work}/item{i}.json", "w"))
        m.write(json.dumps({**run, "output": f"batch/{i}.png"}) + "\n")
PY
mkdir -p "$work/batch" "$work/single"
cat > "$work/separate.sh" <<SH
for i in \$(seq 0 19); do "$impasto" stylize --settings "$work/item\$i.json" -o "$work/single/\$i.png" --quiet; done
SH
echo
echo "20 items at $size px, $iterations evaluations each"
echo "| what                                                 | seconds  | peak MiB |"
echo "|------------------------------------------------------|----------|----------|"
measure "impasto batch (one process)" "$impasto" batch "$work/twenty.jsonl" --quiet
measure "20 impasto stylize processes" bash "$work/separate.sh"
cmp -s "$work/batch/7.png" "$work/single/7.png" && echo "(item 7: the same PNG from both)" || echo "(item 7: the PNGs differ)"
