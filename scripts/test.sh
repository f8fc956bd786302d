#!/usr/bin/env bash
# The test command: set up .venv, lint, type-check, run the test suite on the CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
source scripts/setup_env.sh
# PostgreSQL server binaries for the shared-study test (installed with apt-get where missing).
bash scripts/ci_services.sh
ruff check sb3_qvpo tests examples benchmarks
ruff format --check sb3_qvpo tests examples benchmarks
mypy sb3_qvpo
bash scripts/docs.sh
CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}" python -m pytest -n 2 --durations=15 "$@"
