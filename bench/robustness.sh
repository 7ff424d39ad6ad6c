#!/usr/bin/env bash
# Does every run converge? The robustness benchmark over every content x style pair of the
# images in examples/ and ../shared/images/ (duplicates by content counted once), at several
# sizes, style weights and pyramid settings, with a fixed number of evaluations per case.
#
#   bash bench/robustness.sh [RECORDS.jsonl] [impasto bench --robustness options...]
#
# Defaults: sizes 200,288,384,448,512, style weights 1e2,1e3,1e5, pyramid off and on, the
# default L-BFGS, 60 evaluations; records in target/robustness.jsonl. Cases already in the
# records file are skipped, so an interrupted run resumes; the summary table is printed at the
# end (`impasto bench --robustness --summary --records FILE` prints it again). Photographs are
# the contents, paintings the styles; CONTENTS=... and STYLES=... (comma-separated) override.
# A full run with three methods takes hours on 2 cores; add e.g. --sizes 128 --evaluations 30
# for a quick look. IMPASTO_BIN=path runs that binary instead of building target/release/impasto.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-target/robustness.jsonl}
shift || true
bin=${IMPASTO_BIN:-target/release/impasto}
[ -n "${IMPASTO_BIN:-}" ] || cargo build --release -q
mkdir -p "$(dirname "$records")"
# The images, each once (by content), from the repository and the shared folder.
pick() {
  local seen="" out="" f h
  for f in "$@"; do
    [ -f "$f" ] || continue
    h=$(sha256sum "$f" | cut -c1-16)
    case " $seen " in *" $h "*) continue ;; esac
    seen="$seen $h"
    out="${out:+$out,}$f"
  done
  echo "$out"
}
shared=../shared/images
contents=${CONTENTS:-$(pick examples/tubingen.jpg examples/kodim23.png $shared/tubingen.jpg $shared/kodim23.png)}
styles=${STYLES:-$(pick examples/starry_night.jpg examples/shipwreck.jpg $shared/starry_night.jpg $shared/shipwreck.jpg \
  $shared/starry_night_crop.png $shared/the_scream.jpg $shared/woman-with-hat-matisse.jpg)}
exec "$bin" bench --robustness --contents "$contents" --styles "$styles" --records "$records" "$@"
