"""Stage 2: LoRA on the WAN 2.2 DiT with flow-matching, head, temporal-consistency and physics losses.

    accelerate launch stages/stage2.py --config stages/configs/stage2_demo.toml [section.field=value ...]

Usually started through stages/stage2_lora.sh.  Every config field can be overridden as
``section.field=value``, ``--section.field value`` or ``PWM_SECTION__FIELD=value``.
A run resumes from its newest checkpoint by default; ``--resume none|latest|PATH`` chooses.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from stages.cli import expand_aliases  # noqa: E402
from stages.common import parse_cli  # noqa: E402
from stages.stage2_config import Stage2Config  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    from stages.assemble import make_accelerator
    from stages.runner import train
    from stages.stage1 import print_summary
    from stages.stage2_build import build_stage2

    config, _ = parse_cli(Stage2Config, expand_aliases(sys.argv[1:] if argv is None else argv), description=__doc__)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    accelerator = make_accelerator()
    stage = build_stage2(config, accelerator)
    start = probe_start(stage)
    try:
        metrics = train(stage)
    finally:
        stage.run.tracker.close()
    if accelerator.is_main_process:
        end = stage.probe_terms()
        (stage.run.run_dir / "final" / "terms.json").write_text(json.dumps({"start": start, "end": end}, indent=2))
        print_terms(start, end)
        print_summary(metrics)
    return metrics


def probe_start(stage) -> dict[str, float]:
    """Loss terms on fixed training windows before training (kept across resumes)."""
    path = stage.run.run_dir / "terms_start.json"
    if path.is_file():
        return json.loads(path.read_text())
    terms = stage.probe_terms() if stage.run.accelerator.is_main_process else {}
    if stage.run.accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(terms, indent=2))
    stage.run.accelerator.wait_for_everyone()
    return terms


def print_terms(start: dict[str, float], end: dict[str, float]) -> None:
    """Start vs end of every loss term on the same training windows, sigmas and noise."""
    print(f"\n{'term (training windows)':<26}{'start':>11}{'end':>11}   pixels start/end")
    for key in sorted(start):
        if key.startswith(("loss", "phys_", "flow_epe", "depth_")) and not key.endswith("_px"):
            pixels = f"   {start[key + '_px']:.0f}/{end.get(key + '_px', 0):.0f}" if key + "_px" in start else ""
            print(f"{key:<26}{start[key]:>11.4f}{end.get(key, float('nan')):>11.4f}{pixels}")


if __name__ == "__main__":
    main()
