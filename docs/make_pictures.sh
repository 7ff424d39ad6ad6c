#!/usr/bin/env bash
# Makes the README's pictures with impasto itself (about 15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bins --examples
bin=target/release/impasto
# The opening example.
"$bin" stylize examples/tubingen.jpg examples/starry_night.jpg --size 384 --iterations 300 --quiet -o docs/tubingen_starry.jpg
# Colour modes.
for mode in keep luminance match; do
  "$bin" stylize examples/tubingen.jpg examples/starry_night.jpg --size 256 --iterations 150 --colour "$mode" --quiet \
    -o "docs/colour_$mode.jpg"
done
# Regions: the sky after The Starry Night, the rest after The Shipwreck (the library example).
target/release/examples/library examples/tubingen.jpg examples/starry_night.jpg examples/shipwreck.jpg \
  examples/tubingen_sky.png docs/regions.jpg 384
