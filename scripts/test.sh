#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite. Tests that need redis-server skip
# with a reason when it is not installed; CI installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check .
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
