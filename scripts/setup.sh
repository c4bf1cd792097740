#!/usr/bin/env bash
# Create .venv with everything xemb needs (CPU torch first, so the project's torch range is
# already satisfied and pip does not pull a multi-GB CUDA build). Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.xemb-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing into .venv (first run takes a few minutes)" >&2
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  .venv/bin/pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  .venv/bin/pip install -q -e ".[offline,redis,ray,dev]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import torch, transformers, faiss, onnxruntime, feast, grpc" \
    || { echo "[setup] install failed" >&2; exit 1; }
  touch "$stamp"
fi
