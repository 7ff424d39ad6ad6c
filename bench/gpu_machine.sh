#!/usr/bin/env bash
# The GPU measurements, as one script for a machine with a GPU and no Rust toolchain (the
# developers' GPU machine: an NVIDIA H200 with PyTorch CUDA installed). Build here, then carry
# target/release/impasto, the weights and the Vulkan loader packages:
#
#   cargo build --release
#   mkdir -p .gl .weights && cp "$(target/release/impasto weights path)" .weights/
#   (cd .gl && apt-get download libvulkan1)        # once; .gl and .weights are git-ignored
#
# and run `bash bench/gpu_machine.sh` there (about 5 minutes). It prints `impasto bench --device
# gpu` at 512-4096 px against PyTorch CUDA (fp32 and TF32), and times a 500-iteration 512 px
# stylization, into $OUT (or target/gpu) as well as to the terminal.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-target/gpu}
mkdir -p "$out"
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
ldconfig
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -e "$nvidia_icd" ] && export VK_DRIVER_FILES=${VK_DRIVER_FILES:-$nvidia_icd}
impasto=target/release/impasto
# The weights where impasto looks for its default ones (bench uses those).
export IMPASTO_HOME=$PWD/.weights
weights=$($impasto weights path)
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $impasto bench --device gpu --sizes 512,1024,2048 --runs 5 || true
  $impasto bench --device gpu --sizes 4096 --runs 3 || true
  python3 bench/compare_pytorch.py --device cuda --sizes 512,1024,2048,4096 --runs 5 --rounds 1 \
    --weights "$weights" --impasto "$impasto" || true
  start=$(date +%s%N)
  $impasto stylize examples/tubingen.jpg examples/starry_night.jpg -o "$out/gpu_512.png" --size 512 \
    --iterations 500 --scales off --device gpu --weights "$weights" --quiet
  echo "500 iterations at 512 px on the GPU: $(( ($(date +%s%N) - start) / 1000000 )) ms"
} 2>&1 | tee "$out/gpu_machine.log"
