#!/usr/bin/env bash
# Stage 1: train the flow and depth heads on a frozen WAN 2.2 TI2V-5B (or the tiny demo backbone).
#
#   bash stages/stage1_heads.sh                       # demo: tiny backbone, generated scenes, CPU ok
#   MODEL_DIR=weights/Wan2.2-TI2V-5B DATA_ROOT=data/sim_physics METADATA=metadata/sim_physics.csv \
#     NUM_GPUS=8 bash stages/stage1_heads.sh optim.lr=5e-5
#
# Variables (defaults are repo-relative; nothing is absolute):
#   MODEL_DIR          local Wan2.2-TI2V-5B weights; empty = demo (tiny random backbone)
#   DATA_ROOT          sim_physics root          (demo: runs/scenes/demo, generated on first use)
#   METADATA           CSV video,prompt,split    (demo: metadata/demo.csv, written on first use)
#   OUTPUT_DIR         run directory             (runs/stage1, demo: runs/stage1_demo)
#   CACHE_DIR          latent/text/feature caches (runs/cache)
#   CONFIG             recipe TOML               (stages/configs/stage1_ti2v5b.toml, demo: stage1_demo.toml)
#   NUM_GPUS           processes per node        (GPUs visible, else 1)
#   NUM_NODES          nodes (1); multi-node also MACHINE_RANK, MAIN_PROCESS_IP, MAIN_PROCESS_PORT
#   MIXED_PRECISION    no | bf16 | fp16          (bf16 with GPUs, else no)
#   ACCELERATE_CONFIG  optional accelerate config file (e.g. stages/configs/accelerate_zero2.yaml)
# Any arguments are config overrides passed through (section.field=value); --help lists them all.
# Before a multi-process launch the config and the files it names are checked once (--preflight).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/stages/launch_common.sh"
pwm_launch "${BASH_SOURCE[0]}" stage1 stages.stage1 stages/configs/stage1_ti2v5b.toml stages/configs/stage1_demo.toml "$@"
