"""Stage 2: LoRA on the WAN 2.2 DiT with flow-matching, head, temporal-consistency and physics losses.

    accelerate launch stages/stage2.py --config stages/configs/stage2_demo.toml [section.field=value ...]

Usually started through stages/stage2_lora.sh.  Every config field can be overridden as
``section.field=value``, ``--section.field value`` or ``PWM_SECTION__FIELD=value``.
A run resumes from its newest checkpoint by default; ``--resume none|latest|PATH`` chooses.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from stages.stage2_config import Stage2Config  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    from stages.trainer.runner import run_entry
    from stages.stage2_build import build_stage2

    return run_entry(Stage2Config, build_stage2, argv, __doc__)


if __name__ == "__main__":
    from stages.trainer.runner import run_script

    run_script(main)
