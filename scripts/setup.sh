#!/usr/bin/env bash
# Create .venv (if missing) and install idl with its training and test extras.
# torch is installed first at a version known to work on CPU-only machines; pyproject.toml itself only
# asks for torch>=2.4, so any newer torch (e.g. a CUDA build on a GPU machine) works as well.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
    python -m pip install --quiet "torch==${IDL_TORCH_VERSION:-2.14.1}" "torchvision==${IDL_TORCHVISION_VERSION:-0.29.1}"
fi
python -m pip install --quiet -e ".[train,dev]"
