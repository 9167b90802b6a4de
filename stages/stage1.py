"""Stage 1: train motion-vector and depth heads on a frozen WAN 2.2 backbone.

    accelerate launch stages/stage1.py --config stages/configs/stage1_demo.toml [section.field=value ...]

Usually started through stages/stage1_heads.sh.  Every config field can be overridden as
``section.field=value``, ``--section.field value`` or ``PWM_SECTION__FIELD=value``.
A run resumes from its newest checkpoint by default; ``--resume none|latest|PATH`` chooses.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from stages.stage1_config import Stage1Config  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    from stages.trainer.runner import run_entry
    from stages.stage1_build import build_stage1

    return run_entry(Stage1Config, build_stage1, argv, __doc__)


if __name__ == "__main__":
    from stages.trainer.runner import run_script

    run_script(main)
