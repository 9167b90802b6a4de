#!/usr/bin/env bash
# The main job until the stage-1 trainer lands: build the demo data set with the project's
# PyBullet generator, write its metadata, check every file, and load one training window.
#
#   bash scripts/demo.sh            # environment is set up on first use
#
# Variables (repo-relative defaults): DEMO_ROOT=runs/scenes/demo  DEMO_CSV=metadata/demo.csv
#   DEMO_WORKERS=2  DEMO_SCENES_PER_FAMILY=2  DEMO_SEED=0
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$REPO_ROOT"
DEMO_ROOT="${DEMO_ROOT:-runs/scenes/demo}"
DEMO_CSV="${DEMO_CSV:-metadata/demo.csv}"
"$PYTHON" scripts/generate_scenes.py --out "$DEMO_ROOT" --preset demo \
  --scenes-per-family "${DEMO_SCENES_PER_FAMILY:-2}" --seed "${DEMO_SEED:-0}" --workers "${DEMO_WORKERS:-2}"
"$PYTHON" scripts/make_metadata.py "$DEMO_ROOT" --out "$DEMO_CSV" --holdout-families stack_topple
"$PYTHON" scripts/validate_data.py --root "$DEMO_ROOT" --metadata "$DEMO_CSV"
"$PYTHON" scripts/inspect_window.py --root "$DEMO_ROOT" --metadata "$DEMO_CSV" --size 128 --frames 9 --stride 2
