# Shared by the stage launchers (sourced): environment, demo data, and `accelerate launch`.
# shellcheck shell=bash

pwm_usage() {
  sed -n '2,/^set -euo/p' "$1" | sed '$d' | sed 's/^# \{0,1\}//'
}

pwm_demo_data() {
  # The demo's scenes and metadata are generated once, then reused.  Held out of training: two
  # families (holdout) and one look set (holdout_look), which the end of stage 1 reports on.
  local holdout=(--holdout-families stack_topple,seesaw --holdout-looks workshop)
  local first_scene
  # `|| true`: with no scenes yet ls fails, and under the launchers' `set -euo pipefail` that
  # would end a fresh clone's first run silently with status 2.
  first_scene="$(ls "$DATA_ROOT"/*/env_0/0/0/scene.json 2>/dev/null | head -n 1 || true)"
  if [ ! -f "$METADATA" ] || [ -z "$first_scene" ] || ! grep -q '"look"' "$first_scene"; then
    # Also when the scenes predate looks (their scene.json has none): they are made again.
    echo "demo: generating scenes into $DATA_ROOT" >&2
    "$PYTHON" -m scripts.generate_scenes --out "$DATA_ROOT" --preset demo --scenes-per-family 3 \
      --workers "${DEMO_WORKERS:-2}" --log-level WARNING --overwrite
    "$PYTHON" -m scripts.make_metadata "$DATA_ROOT" --out "$METADATA" "${holdout[@]}"
  fi
}

pwm_launch() {
  local launcher="$1" stage="$2" entry="$3" real_config="$4" demo_config="$5"
  shift 5
  if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
    pwm_usage "$launcher"
    source "$REPO_ROOT/scripts/bootstrap.sh" && cd "$REPO_ROOT" && exec "$PYTHON" -m "$entry" --help
  fi
  source "$REPO_ROOT/scripts/bootstrap.sh"
  cd "$REPO_ROOT"
  local gpus=0
  if command -v nvidia-smi >/dev/null 2>&1; then gpus="$(nvidia-smi -L 2>/dev/null | wc -l)"; fi
  MODEL_DIR="${MODEL_DIR:-${PWM_BACKBONE__MODEL_DIR:-}}"
  NUM_GPUS="${NUM_GPUS:-$(( gpus > 0 ? gpus : 1 ))}"
  NUM_NODES="${NUM_NODES:-1}"
  MIXED_PRECISION="${MIXED_PRECISION:-$( [ "$gpus" -gt 0 ] && echo bf16 || echo no )}"
  CACHE_DIR="${CACHE_DIR:-${PWM_FEATURES__CACHE_DIR:-runs/cache}}"
  # The launcher passes these paths as overrides (which beat PWM_* variables), so it takes the
  # PWM_* spelling of each as its default too: either way of setting a path works.
  local overrides=()
  if [ -z "$MODEL_DIR" ]; then
    CONFIG="${CONFIG:-$demo_config}"
    DATA_ROOT="${DATA_ROOT:-${PWM_DATA__ROOT:-runs/scenes/demo}}"
    METADATA="${METADATA:-${PWM_DATA__METADATA:-metadata/demo.csv}}"
    OUTPUT_DIR="${OUTPUT_DIR:-${PWM_RUN__OUTPUT_DIR:-runs/${stage}_demo}}"
    pwm_demo_data
  else
    CONFIG="${CONFIG:-$real_config}"
    DATA_ROOT="${DATA_ROOT:-${PWM_DATA__ROOT:-}}" METADATA="${METADATA:-${PWM_DATA__METADATA:-}}"
    : "${DATA_ROOT:?set DATA_ROOT to the sim_physics root}" "${METADATA:?set METADATA to its CSV}"
    OUTPUT_DIR="${OUTPUT_DIR:-${PWM_RUN__OUTPUT_DIR:-runs/${stage}}}"
    overrides+=("backbone.model_dir=$MODEL_DIR")
  fi
  overrides+=("data.root=$DATA_ROOT" "data.metadata=$METADATA" "run.output_dir=$OUTPUT_DIR" "features.cache_dir=$CACHE_DIR")
  if [ "$stage" = stage2 ]; then
    STAGE1_DIR="${STAGE1_DIR:-${PWM_OBJECTIVE__HEADS_DIR:-runs/stage1$( [ -z "$MODEL_DIR" ] && echo _demo )/final}}"
    if [ ! -f "$STAGE1_DIR/heads.json" ]; then
      echo "stage2: no stage-1 heads in $STAGE1_DIR; run bash stages/stage1_heads.sh first or set STAGE1_DIR" >&2
      exit 1
    fi
    overrides+=("objective.heads_dir=$STAGE1_DIR")
  fi
  local launch=(--num_machines "$NUM_NODES" --num_processes "$(( NUM_GPUS * NUM_NODES ))" --mixed_precision "$MIXED_PRECISION" --dynamo_backend no)
  # Without GPUs accelerate launch pins every process to one thread unless told otherwise, which
  # left a CPU demo on one of its cores; share the cores (OMP_NUM_THREADS, if set, still wins).
  local threads=""
  if [ "$gpus" -eq 0 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
    threads=$(( $(nproc) / NUM_GPUS )) && threads=$(( threads > 0 ? threads : 1 ))
    launch+=(--num_cpu_threads_per_process "$threads")
  fi
  # A config file names the distributed type itself (e.g. DeepSpeed); --multi_gpu would override
  # it and silently launch plain DDP instead.
  if [ -n "${ACCELERATE_CONFIG:-}" ]; then launch=(--config_file "$ACCELERATE_CONFIG" "${launch[@]}")
  elif [ $(( NUM_GPUS * NUM_NODES )) -gt 1 ]; then launch+=(--multi_gpu); fi
  if [ "$NUM_NODES" -gt 1 ]; then
    launch+=(--machine_rank "${MACHINE_RANK:?}" --main_process_ip "${MAIN_PROCESS_IP:?}" --main_process_port "${MAIN_PROCESS_PORT:-29500}")
  fi
  echo "$stage: $CONFIG, $(( NUM_GPUS * NUM_NODES )) process(es), precision $MIXED_PRECISION, output $OUTPUT_DIR" >&2
  if [ -z "${ACCELERATE_CONFIG:-}" ] && [ $(( NUM_GPUS * NUM_NODES )) -eq 1 ]; then
    # One process needs no launcher, only the settings accelerate launch would export; run directly
    # so a one-line error and its exit status reach the shell without a launcher traceback.
    export ACCELERATE_MIXED_PRECISION="$MIXED_PRECISION" ACCELERATE_DYNAMO_BACKEND=NO
    if [ -n "$threads" ]; then export OMP_NUM_THREADS="$threads"; fi
    exec "$PYTHON" -m "$entry" --config "$CONFIG" "${overrides[@]}" "$@"
  fi
  # Check the config and its paths once, here, before every process loads torch and a GPU: a
  # mistake then ends with one line instead of one per rank plus torchrun's failure summary.
  "$PYTHON" -m "$entry" --preflight --config "$CONFIG" "${overrides[@]}" "$@"
  exec "$PYTHON" -m accelerate.commands.launch "${launch[@]}" --module "$entry" --config "$CONFIG" "${overrides[@]}" "$@"
}
