"""Stage 1: train motion-vector and depth heads on a frozen WAN 2.2 backbone.

    accelerate launch stages/stage1.py --config stages/configs/stage1_demo.toml [section.field=value ...]

Usually started through stages/stage1_heads.sh.  Every config field can be overridden as
``section.field=value``, ``--section.field value`` or ``PWM_SECTION__FIELD=value``.
A run resumes from its newest checkpoint by default; ``--resume none|latest|PATH`` chooses.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from stages.cli import expand_aliases  # noqa: E402
from stages.common import parse_cli  # noqa: E402
from stages.stage1_config import Stage1Config  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    from stages.stage1_build import build_stage1
    from stages.assemble import make_accelerator
    from stages.runner import train

    config, _ = parse_cli(Stage1Config, expand_aliases(sys.argv[1:] if argv is None else argv), description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    accelerator = make_accelerator()
    stage = build_stage1(config, accelerator)
    try:
        metrics = train(stage)
    finally:
        stage.run.tracker.close()
    if accelerator.is_main_process:
        print_summary(metrics)
    return metrics


def print_summary(metrics: dict[str, float]) -> None:
    """Validation metrics beside the trivial baselines, the way the demo ends."""
    rows = [("flow EPE (all)", "flow_epe", "zero_flow_epe"), ("flow EPE (moving)", "flow_epe_moving", "zero_flow_epe_moving"),
            ("flow outliers", "flow_outlier_rate", "zero_flow_outlier_rate"), ("depth AbsRel", "depth_abs_rel", "median_depth_abs_rel"),
            ("depth delta<1.25", "depth_delta1", "median_depth_delta1"), ("depth RMSE(log)", "depth_rmse_log", "median_depth_rmse_log")]
    print(f"\n{'validation':<20}{'heads':>10}{'baseline':>10}   (baseline: zero flow / per-clip median depth)")
    for label, ours, base in rows:
        if ours in metrics:
            print(f"{label:<20}{metrics[ours]:>10.4f}{metrics[base]:>10.4f}")


if __name__ == "__main__":
    main()
