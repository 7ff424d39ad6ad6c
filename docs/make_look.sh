#!/usr/bin/env bash
# Makes the pictures of the README's "The look" section: the regions picture at style weights
# 1e3 (the default) and 1e2, and tubingen after The Starry Night at 256 px at both weights
# (docs/look/; the contact sheet is docs/make_corpus.sh). About 8 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bins --examples
bin=target/release/impasto
mkdir -p docs/look target/look
for sw in 1e3 1e2; do
  "$bin" stylize examples/tubingen.jpg examples/starry_night.jpg examples/shipwreck.jpg \
    --style-mask examples/tubingen_sky.png --style-mask examples/tubingen_ground.png \
    --size 384 --scales 192,384 --iterations 200 --style-weight "$sw" --quiet -o "docs/look/regions_$sw.jpg"
  "$bin" stylize examples/tubingen.jpg examples/starry_night.jpg --size 256 --iterations 200 \
    --style-weight "$sw" --quiet -o "target/look/starry_$sw.png"
done
target/release/examples/contact_sheet docs/look/starry_1e3_1e2.jpg 2 256 target/look/starry_1e3.png target/look/starry_1e2.png
