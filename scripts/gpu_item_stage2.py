"""GPU check items ``stage2_step_*``: the stage-2 LoRA step as training takes it, with its MFU and
the heads' share of it.

MFU counts the DiT's FLOPs of a LoRA step (``world_model.flops.dit_train_step_flops``: forward,
input-gradient backward, checkpoint recompute) over the step's wall time and the card's bf16 peak;
the heads and physics terms add time but no counted FLOPs, so a heavy heads share lowers MFU.  The
heads' share is timed separately on the step's own tapped features: heads forward, their losses
and physics terms (``stages.stage2.head_terms``) and the backward to the taps.
"""

from __future__ import annotations

import itertools
import statistics
import time

import torch

from heads.losses import HeadLoss
from heads.physics import PhysicsLoss
from scripts.gpu_items import (
    build_heads,
    head_targets,
    peak_gib,
    random_dit,
    random_inputs,
    release,
    reset_peak,
    step_run,
)
from stages.model import contiguous_frames
from stages.stage2 import (
    AdaptedWorldModel,
    LoraConfig,
    Stage2Config,
    head_terms,
    stage2_objective,
)
from stages.trainer.loop import optimizer_step
from stages.trainer.tracking import synchronize
from world_model.benchmark import detect_peak_tflops
from world_model.features import dit_forward, make_noise
from world_model.flops import dit_train_step_flops, mfu
from world_model.lora import add_lora, lora_parameters
from world_model.presets import get_preset


def timed_heads_part(run, taps: list[torch.Tensor], batch: dict, weights: torch.Tensor, head_loss: HeadLoss,
                     physics: PhysicsLoss, recipe: Stage2Config, index: torch.Tensor | None, runs: int,
                     warmup: int) -> float:
    """Median ms of the heads' part of a step: decode, head terms, backward to the tapped features."""
    model, device, times = run.unwrapped, run.accelerator.device, []
    for i in range(warmup + runs):
        leaves = [t.detach().requires_grad_(True) for t in taps]
        synchronize(device)
        start = time.perf_counter()
        with run.backend.autocast():
            flow, log_depth = model.decode(leaves, batch["rgb"], index)
            loss, _ = head_terms(flow, log_depth, batch, weights, head_loss, physics, recipe.objective, index)
        loss.backward()
        synchronize(device)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def item_stage2_step(preset: str, device: torch.device, frames: int, height: int, width: int,
                     runs: int, warmup: int, gradient_checkpointing: bool, rank: int = 32, heads_frames: int = 0,
                     peak_tflops: float | None = None) -> dict:
    """3. Stage-2 LoRA step: ``optimizer_step`` over ``stages.stage2.stage2_objective`` (weighted
    flow matching, head losses, physics terms) through the LoRA-adapted DiT at the recipe's
    weights, sigma 0.7, frozen heads; with ``heads_frames`` K the heads and physics terms on K
    contiguous frames.  ``peak_tflops`` overrides the card's table entry (CPU: no MFU without it)."""
    recipe = Stage2Config(lora=LoraConfig(rank=rank, alpha=float(rank), gradient_checkpointing=gradient_checkpointing))
    p = get_preset(preset)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dit = add_lora(random_dit(p, device, dtype), recipe.lora.rank, recipe.lora.alpha, recipe.lora.targets)
    heads = build_heads(p, device).requires_grad_(False)
    model = AdaptedWorldModel(dit, heads, p.default_taps, recipe.lora.gradient_checkpointing).train()
    x0, context = random_inputs(p, frames, height, width, device, dtype)
    batch = head_targets(frames, height, width, device)
    noise = make_noise(x0.shape, seed=0, device=device, dtype=dtype)
    sigma = torch.tensor([0.7])
    head_loss, physics = HeadLoss(recipe.loss), PhysicsLoss(recipe.physics)
    run = step_run(model, device, recipe.optim)
    index = contiguous_frames(1, frames, heads_frames, torch.Generator().manual_seed(0))

    def loss_fn(b: dict, micro: int):
        return stage2_objective(run.model, x0, context, b, sigma, noise, head_loss, physics, recipe.objective, index)

    reset_peak(device)
    for i in range(warmup + runs):
        run.timer.enabled = i >= warmup
        metrics = optimizer_step(run, itertools.repeat(batch), loss_fn, recipe.optim)
    phases = run.timer.per_step_ms(runs)
    step_ms, peak = sum(phases.values()), peak_gib(device)
    with torch.no_grad(), run.backend.autocast():
        taps = dit_forward(dit, x0, torch.tensor([700.0], device=device), context, taps=p.default_taps,
                           return_output=False).as_list()
    heads_ms = timed_heads_part(run, taps, batch, torch.ones(1, device=device), head_loss, physics, recipe, index,
                                runs, warmup)
    release(run)
    flops = dit_train_step_flops(p, frames, height, width, gradient_checkpointing)["total"]
    card = peak_tflops if peak_tflops is not None else detect_peak_tflops(device)
    return {"gradient_checkpointing": gradient_checkpointing, "lora_rank": rank, "heads_frames": heads_frames,
            "lora_params": sum(a.numel() for a in lora_parameters(dit)), **phases, "step_ms": step_ms,
            "dit_step_tflop": flops / 1e12, "tflops": flops / step_ms / 1e9, "peak_tflops": card,
            "mfu": mfu(flops, step_ms / 1000, card) if card else None,
            "heads_ms": heads_ms, "heads_share": heads_ms / step_ms, "peak_gib": peak,
            "loss_terms": sorted(k for k in metrics if not k.endswith("_px"))}
