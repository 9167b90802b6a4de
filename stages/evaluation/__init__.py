"""Physics evaluation of trained heads and LoRA on held-out scenes.

    python scripts/evaluate_physics.py --stage1 runs/stage1_demo/final [--stage2 runs/stage2_demo/final] ...

Modules, in the order an evaluation runs them:
    eval_config     EvalConfig: the resolved arguments, checked in __post_init__
    exports         stage export directories: checks, sha256 hashes, backbone config, heads, geometry
    perception      heads on ground-truth windows: depth/flow metrics beside the baselines; the verdict rule
    breakdown       perception pooled per scenario family and per look set
    timebase        ground truth on the backbone's frame rate (the simulator frames nearest in time)
    rollout         TI2V generation from the first frame (WanVideoPipeline) + Physics-IQ metrics
    physics_report  3D residuals (fitted g, free-fall residual, rest drift), temporal coherence, verdicts
    iq              the Physics-IQ score per model from the scenes' second takes (metrics.json "physics_iq")
    evaluate        the loop over models and scenes; writes metrics.json (METRICS_FIELDS)
    report          report.md and plots;  gallery  contact sheets and a self-contained gallery.html

The official Physics-IQ benchmark (scripts/physics_iq.py): physics_iq_export writes our takes in its
layout, physics_iq_generate makes a model's videos from its switch frames, physics_iq_bench scores
folders of videos, codec_effect measures what the mp4 round trip does to the metrics.
"""

from stages.evaluation.eval_config import EvalConfig, EvaluationError
from stages.evaluation.evaluate import METRICS_FIELDS, run_evaluation

__all__ = ["METRICS_FIELDS", "EvalConfig", "EvaluationError", "run_evaluation"]
