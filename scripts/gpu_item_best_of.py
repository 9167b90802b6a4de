"""GPU check item ``best_of_rollouts``: what best-of-N costs at the recipe geometry.

N rollouts of one conditioning with the evaluation's own sampler (``stages.evaluation.rollout``:
WanVideoPipeline around the DiT, same steps and CFG as ``evaluate_physics.py``'s defaults), each
scored by a verifier, random weights.  Reported per rollout and per score, so the cost of
``--best-of N`` is N times the sum.  The verifier timed is ``frame_difference`` (model-free): the
``heads`` verifier adds one heads pass per window, which the stage-1 items time.
"""

from __future__ import annotations

import statistics
import time

import torch

from scripts.gpu_items import random_dit, random_model
from stages.evaluation import rollout
from stages.evaluation.eval_config import EvalConfig
from stages.evaluation.verifiers import clip_scores
from stages.trainer.tracking import synchronize
from world_model.models import build_stand_in_tokenizer, build_text_encoder, build_vae
from world_model.presets import get_preset


def random_pipeline(preset: str, device: torch.device, dtype: torch.dtype):
    """The evaluation's WanVideoPipeline with random DiT, VAE and text encoder (no FeatureSource)."""
    from diffsynth.pipelines.wan_video import WanVideoPipeline

    p = get_preset(preset)
    pipe = WanVideoPipeline(device=str(device), torch_dtype=dtype)
    pipe.dit = random_dit(p, device, dtype)
    pipe.vae = random_model(build_vae, p, device, dtype)
    pipe.text_encoder = random_model(build_text_encoder, p, device, dtype)
    pipe.tokenizer = build_stand_in_tokenizer(p)
    _, spatial, _ = p.token_stride
    pipe.height_division_factor = pipe.width_division_factor = spatial
    return pipe


def item_best_of(preset: str, device: torch.device, frames: int, height: int, width: int, runs: int,
                 warmup: int, n: int = 4, steps: int | None = None) -> dict:
    """N = 4 rollouts (one untimed warm-up rollout first unless ``warmup`` is 0)."""
    defaults = EvalConfig.__dataclass_fields__
    steps = defaults["steps"].default if steps is None else steps
    cfg_scale = defaults["cfg_scale"].default
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = random_pipeline(preset, device, dtype)
    first = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    fps = float(get_preset(preset).fps)

    def one(seed: int) -> torch.Tensor:
        return rollout.generate(pipe, first, "a ball falls onto a table", seed=seed, frames=frames, steps=steps,
                                cfg_scale=cfg_scale)

    for seed in range(min(warmup, 1)):
        one(10_000 + seed)
    rollout_s, score_s, scores = [], [], []
    for j in range(n):
        synchronize(device)
        start = time.perf_counter()
        video = one(j)
        synchronize(device)
        rollout_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        sample = {"rgb": video, "video": f"rollout{j}", "dt": torch.tensor(1.0 / fps)}
        scores.append(clip_scores(sample, ("frame_difference",))["frame_difference"]["score"])
        score_s.append(time.perf_counter() - start)
    return {"n": n, "steps": steps, "cfg_scale": cfg_scale, "video_shape": list(video.shape),
            "rollout_s": statistics.median(rollout_s), "score_s": statistics.median(score_s),
            "best_of_s": sum(rollout_s) + sum(score_s), "chosen": max(range(n), key=scores.__getitem__),
            "distinct_rollouts": len({round(s, 9) for s in scores}),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
