#!/usr/bin/env bash
# The main job: set up .venv, train QVPO on Pendulum-v1 and print evaluation returns before/after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
source scripts/setup_env.sh
python examples/train_pendulum.py "$@"
