#!/usr/bin/env bash
# Create .venv and install sb3-qvpo with its test tools. Sourced by the other scripts.
# torch is installed first and pinned to 2.13.0 so that the package's `torch>=` range installs
# nothing more: where pip finds a CPU build locally (as on our CI) no CUDA wheels are downloaded.
# Elsewhere, set TORCH_INDEX_URL to a CPU wheel index to avoid the CUDA download.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
    pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
pip install -q -e ".[tests,zoo,postgres,export,docs]"
