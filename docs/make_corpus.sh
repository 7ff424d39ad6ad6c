#!/usr/bin/env bash
# Makes docs/corpus.jpg: every content x style pair of the robustness benchmark's corpus
# (examples/ and ../shared/images/, each image once), stylized with impasto's defaults except
# the size and the number of iterations, tiled with the style images as the first row and the
# content images as the first column.
#
#   bash docs/make_corpus.sh [SIZE] [ITERATIONS] [OUT]      (defaults: 512, 500, docs/corpus.jpg)
#
# At the defaults a pair takes about 6 minutes on 2 cores; the results are kept in
# target/corpus/ and a result already there is not made again.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
iterations=${2:-500}
out=${3:-docs/corpus.jpg}
cargo build --release -q --bins --examples
bin=target/release/impasto
shared=../shared/images
pick() {
  local seen="" f h
  for f in "$@"; do
    [ -f "$f" ] || continue
    h=$(sha256sum "$f" | cut -c1-16)
    case " $seen " in *" $h "*) continue ;; esac
    seen="$seen $h"
    echo "$f"
  done
}
mapfile -t contents < <(pick examples/tubingen.jpg examples/kodim23.png $shared/tubingen.jpg $shared/kodim23.png)
mapfile -t styles < <(pick examples/starry_night.jpg examples/shipwreck.jpg $shared/starry_night.jpg \
  $shared/shipwreck.jpg $shared/starry_night_crop.png $shared/the_scream.jpg $shared/woman-with-hat-matisse.jpg)
dir=target/corpus/$size-$iterations
mkdir -p "$dir"
cells=(-)
cells+=("${styles[@]}")
for c in "${contents[@]}"; do
  cells+=("$c")
  for s in "${styles[@]}"; do
    result=$dir/$(basename "${c%.*}")-$(basename "${s%.*}").png
    if [ ! -f "$result" ]; then
      echo "$(basename "$c") after $(basename "$s")" >&2
      "$bin" stylize "$c" "$s" --size "$size" --iterations "$iterations" --quiet -o "$result"
    fi
    cells+=("$result")
  done
done
target/release/examples/contact_sheet "$out" $((${#styles[@]} + 1)) 240 "${cells[@]}"
echo "wrote $out" >&2
