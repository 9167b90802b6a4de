# Source me: sets PYTHON to an interpreter that satisfies pyproject.toml, building .venv if needed.
#
# Order: $PWM_PYTHON if set; the repo's .venv if it satisfies the requirements; the current
# python3 if it does; otherwise (re)create .venv and install the project into it.  Idempotent:
# a satisfied environment is reused untouched, so the second call costs about a second.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${PWM_VENV:-$REPO_ROOT/.venv}"

_pwm_satisfies() { [ -x "$1" ] && "$1" "$REPO_ROOT/scripts/check_env.py" 2>/dev/null; }

_pwm_base_python() {
  for candidate in python3.11 python3.12 python3.10 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "bootstrap: need Python >= 3.10 on PATH" >&2; return 1
}

if [ -n "${PWM_PYTHON:-}" ]; then
  PYTHON="$PWM_PYTHON"
elif _pwm_satisfies "$VENV_DIR/bin/python"; then
  PYTHON="$VENV_DIR/bin/python"
elif _pwm_satisfies "$(command -v python3 || true)"; then
  PYTHON="$(command -v python3)"
else
  echo "bootstrap: setting up $VENV_DIR (first run; torch is large, this takes several minutes)" >&2
  [ -x "$VENV_DIR/bin/python" ] || "$(_pwm_base_python)" -m venv "$VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV_DIR/bin/python" -m pip install --quiet -e "$REPO_ROOT[dev]" >&2
  if ! "$VENV_DIR/bin/python" "$REPO_ROOT/scripts/check_env.py"; then
    echo "bootstrap: $VENV_DIR still misses requirements (see above)" >&2; exit 1
  fi
  PYTHON="$VENV_DIR/bin/python"
fi
export PYTHON
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
