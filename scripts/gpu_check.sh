#!/usr/bin/env bash
# The prepared GPU check (see scripts/gpu_check.py --help).
#
# On a lent GPU machine (no network): uses its python3 with the preinstalled torch, and installs
# the carried wheels in .wheels/ (diffsynth and the few packages its import needs) with
# --no-index into .gpu_site/.  On a development machine without those it falls back to the
# project's bootstrap (.venv).  Arguments go to scripts/gpu_check.py.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${GPU_CHECK_PYTHON:-python3}"
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  source scripts/bootstrap.sh
fi
if ! "$PYTHON" -c "import diffsynth" >/dev/null 2>&1; then
  if compgen -G ".wheels/*.whl" >/dev/null; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target .gpu_site .wheels/*.whl
    export PYTHONPATH="$REPO_ROOT/.gpu_site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check: diffsynth is not importable and no wheels are in .wheels/ (see docs/gpu_check.md)" >&2
    exit 1
  fi
fi
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" scripts/gpu_check.py "$@"
