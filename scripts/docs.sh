#!/usr/bin/env bash
# Build the documentation into docs/_build/html; any warning (a broken reference, a missing autodoc target) fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${VIRTUAL_ENV:-}" != "$PWD/.venv" ]; then  # not already set up by scripts/test.sh
    # shellcheck disable=SC1091
    source scripts/setup_env.sh
fi
rm -rf docs/_build
python -m sphinx -W --keep-going -E -q -b html docs docs/_build/html
echo "docs built: docs/_build/html/index.html"
