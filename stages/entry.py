"""Console entry points (``pyproject.toml`` [project.scripts]): ``pwm-stage1``, ``pwm-eval``, ...

Each command runs a module's ``main`` and exits 0; the mains return their results (metrics,
payloads) for tests and notebooks, which ``sys.exit`` would print and turn into status 1.  The
modules also run as ``python -m stages.stage1`` or ``python scripts/evaluate_physics.py`` with
the project installed (``scripts/bootstrap.sh`` installs it), so no module edits ``sys.path``.
"""

from __future__ import annotations

from functools import partial
from importlib import import_module

COMMANDS = {
    "pwm-stage1": "stages.stage1",
    "pwm-stage2": "stages.stage2",
    "pwm-eval": "scripts.evaluate_physics",
    "pwm-generate": "scripts.generate_scenes",
    "pwm-metadata": "scripts.make_metadata",
    "pwm-validate": "scripts.validate_data",
    "pwm-pairs": "scripts.make_violation_pairs",
    "pwm-verify": "scripts.verify_physics",
    "pwm-physics-iq": "scripts.physics_iq",
}


def _run(command: str) -> int:
    result = import_module(COMMANDS[command]).main()
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# Console-script targets: module attributes pyproject.toml names (`stages.entry:stage1`, ...).
stage1 = partial(_run, "pwm-stage1")
stage2 = partial(_run, "pwm-stage2")
evaluate = partial(_run, "pwm-eval")
generate = partial(_run, "pwm-generate")
metadata = partial(_run, "pwm-metadata")
validate = partial(_run, "pwm-validate")
pairs = partial(_run, "pwm-pairs")
verify = partial(_run, "pwm-verify")
physics_iq = partial(_run, "pwm-physics-iq")
