"""Can a verifier tell a clip that keeps physics from one that breaks it?  Pairwise accuracy on
violation pairs (scripts/make_violation_pairs.py writes them; any sim_physics root with such a
manifest works).

    python scripts/verify_physics.py --stage1 runs/stage1_demo/final --root ROOT --pairs ROOT/pairs.csv \\
        --out runs/verify [--verifiers heads,oracle,features,frame_difference,random] [--stage2 RUN2/final]

Every clip is scored once, whole, at the stage-1 run's stride and frame size (the heads run on
sliding windows of their own length); a pair counts as right when its plausible clip scores
higher (ties half).  Writes verify.json ({"rows": {verifier: {"overall", "by_kind", "ci95"}},
"pairs": N, plus every clip's score and terms, and "heads_perception": the heads' depth and flow
errors on the plausible clips, moving pixels apart, from the ground truth and for the report only),
verify.md and verify_by_kind.png.
Verifiers (stages/evaluation/verifiers.py): heads, oracle (the same physics rule on ground truth),
features (backbone feature trajectories), frame_difference, random.  heads and features see the
RGB frames and the intrinsics only.  With --stage2 the heads and features are the stage-2 run's
(its LoRA fused into the DiT through diffsynth's loader, its co-trained heads).
"""

from __future__ import annotations

import argparse
import logging

from data.errors import DataFormatError
from stages.evaluation.eval_config import EvaluationError
from stages.evaluation.verifiers import DIAGNOSTICS, VERIFIERS


def parse_args(argv: list[str] | None = None):
    from stages.evaluation.verify import VerifyConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage1", required=True, help="stage-1 export directory (heads + config.toml)")
    ap.add_argument("--root", required=True, help="data root holding the clips' directories")
    ap.add_argument("--stage2", default="",
                    help="stage-2 export directory (lora.safetensors + heads/): verify the adapted model instead")
    ap.add_argument("--pairs", required=True, help="manifest with columns plausible,implausible,kind")
    ap.add_argument("--out", default="runs/verify", help="output directory (default: runs/verify)")
    ap.add_argument("--verifiers", default=",".join(VERIFIERS),
                    help=f"comma-separated verifiers (default: {','.join(VERIFIERS)}; also the diagnostics "
                         f"{','.join(DIAGNOSTICS)}: one half of the heads' output with the other exact)")
    ap.add_argument("--model-dir", default="", help="local Wan2.2-TI2V-5B weights (default: the stage-1 run's)")
    ap.add_argument("--cache-dir", default="runs/cache", help="text-context cache (default: runs/cache)")
    ap.add_argument("--device", default="", help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random verifier")
    ap.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    args = vars(ap.parse_args(argv))
    logging.basicConfig(level=args.pop("log_level").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args["verifiers"] = tuple(v.strip() for v in args["verifiers"].split(",") if v.strip())
    return VerifyConfig(**args)


def main(argv: list[str] | None = None) -> dict:
    from stages.evaluation.verify import markdown, run_verify

    try:
        payload = run_verify(parse_args(argv))
    except (EvaluationError, DataFormatError) as error:
        raise SystemExit(f"error: {error}") from None
    print(markdown(payload))
    return payload


if __name__ == "__main__":
    main()
