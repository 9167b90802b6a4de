#!/usr/bin/env bash
# Stage 2: LoRA on the WAN 2.2 TI2V-5B DiT (or the tiny demo backbone) with flow-matching, head,
# temporal-consistency and physics losses, starting from the stage-1 heads.
#
#   bash stages/stage2_lora.sh                        # demo: after `bash stages/stage1_heads.sh`
#   MODEL_DIR=weights/Wan2.2-TI2V-5B DATA_ROOT=data/sim_physics METADATA=metadata/sim_physics.csv \
#     STAGE1_DIR=runs/stage1/final NUM_GPUS=8 ACCELERATE_CONFIG=stages/configs/accelerate_zero2.yaml \
#     bash stages/stage2_lora.sh lora.rank=64
#
# Variables (defaults are repo-relative; nothing is absolute):
#   MODEL_DIR          local Wan2.2-TI2V-5B weights; empty = demo (tiny random backbone)
#   STAGE1_DIR         stage-1 export with the heads (runs/stage1/final, demo: runs/stage1_demo/final)
#   DATA_ROOT          sim_physics root          (demo: runs/scenes/demo)
#   METADATA           CSV video,prompt,split    (demo: metadata/demo.csv)
#   OUTPUT_DIR         run directory             (runs/stage2, demo: runs/stage2_demo)
#   CACHE_DIR          latent/text caches        (runs/cache)
#   CONFIG             recipe TOML               (stages/configs/stage2_ti2v5b.toml, demo: stage2_demo.toml)
#   NUM_GPUS           processes per node        (GPUs visible, else 1)
#   NUM_NODES          nodes (1); multi-node also MACHINE_RANK, MAIN_PROCESS_IP, MAIN_PROCESS_PORT
#   MIXED_PRECISION    no | bf16 | fp16          (bf16 with GPUs, else no)
#   ACCELERATE_CONFIG  optional accelerate config (e.g. stages/configs/accelerate_zero2.yaml)
# Any arguments are config overrides passed through (section.field=value); --help lists them all.
# Before a multi-process launch the config and the files it names are checked once (--preflight).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO_ROOT/stages/launch_common.sh"
pwm_launch "${BASH_SOURCE[0]}" stage2 stages.stage2 stages/configs/stage2_ti2v5b.toml stages/configs/stage2_demo.toml "$@"
