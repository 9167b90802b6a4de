"""The measurements of the GPU check, one function per item (see scripts/gpu_check.py).

Every item builds random-weight models of the given preset (speed and memory do not depend on
weight values), runs ``warmup`` untimed and ``runs`` timed iterations, and returns a flat dict.
On CPU the same code runs the tiny preset, which is how it is tested before a GPU is lent.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from data.sampling import supervised_subset
from heads.losses import depth_loss, flow_loss
from stages.model import HeadPair
from stages.model import build_heads as build_stage_heads
from stages.trainer.sections import HeadsConfig
from stages.trainer.tracking import PhaseTimer, synchronize
from world_model.backbone import FrozenBackbone, autocast_for
from world_model.benchmark import benchmark_dit_forward, materialize_random
from world_model.encoders import VideoLatentEncoder
from world_model.features import ExtractionConfig, dit_forward, make_noise, noisy_latents
from world_model.lora import add_lora, lora_parameters
from world_model.models import build_dit, build_vae, count_parameters
from world_model.presets import BackbonePreset, get_preset


def peak_gib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset.  CPU: the process's peak RSS (each item runs in its
    own process, so this is the item's peak including model construction)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def random_dit(preset: BackbonePreset, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    if device.type == "cuda":
        return materialize_random(build_dit(preset, empty=True), device, dtype)
    return build_dit(preset, seed=0, device=device, dtype=dtype)


def random_inputs(preset: BackbonePreset, frames: int, height: int, width: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, *preset.latent_shape(frames, height, width), generator=gen)
    context = torch.randn(1, preset.text_len, preset.text_dim, generator=gen)
    return latents.to(device, dtype), context.to(device, dtype)


def build_heads(preset: BackbonePreset, device: torch.device, features: int = 128, rgb_refine: bool = True,
                rgb_refine_stride: int = 1, channels_last: bool = False) -> HeadPair:
    """The head pair as stage-1 training builds it (stages.model.build_heads), eager."""
    knobs = HeadsConfig(features=features, rgb_refine=rgb_refine, rgb_refine_stride=rgb_refine_stride,
                        channels_last=channels_last)
    return build_stage_heads(knobs, preset, len(preset.default_taps)).to(device)


def head_targets(frames: int, height: int, width: int, device: torch.device,
                 supervised_frames: int = 0) -> dict[str, torch.Tensor]:
    """Random targets; with ``supervised_frames`` K, for K random frames of the window (as training
    with data.window.supervised_frames draws them) plus the RGB the heads read there."""
    gen = torch.Generator().manual_seed(1)
    k = supervised_frames or frames
    targets = {
        "rgb": torch.rand(1, k, 3, height, width, generator=gen).to(device),
        "flow": (4 * torch.randn(1, k, 2, height, width, generator=gen)).to(device),
        "depth": (1 + 4 * torch.rand(1, k, height, width, generator=gen)).to(device),
        "mask": torch.ones(1, k, height, width, dtype=torch.bool, device=device),
    }
    if supervised_frames:
        pick = supervised_subset(frames, supervised_frames, np.random.default_rng(1))
        targets["frame_index"] = torch.from_numpy(pick)[None].to(device)
        targets["prev_rgb"] = torch.rand(1, k, 3, height, width, generator=gen).to(device)
    return targets


def heads_optimizer(heads: HeadPair, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over both heads as training builds it (fused on CUDA)."""
    return torch.optim.AdamW(heads.parameters(), lr=1e-4,
                             fused=True if device.type == "cuda" else None)


def pinned(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Page-locked host copies on CUDA machines (what the training loader's pin thread makes)."""
    return [t.pin_memory() for t in tensors] if device.type == "cuda" else tensors


def head_outputs(heads, taps: list[torch.Tensor], targets: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Both heads' predictions, for all frames or for the targets' supervised frames (``heads``:
    a HeadPair or a compiled one)."""
    return heads(taps, targets["rgb"], targets.get("frame_index"), targets.get("prev_rgb"))


def heads_loss(heads, taps: list[torch.Tensor], targets: dict) -> torch.Tensor:
    flow_pred, depth_pred = head_outputs(heads, taps, targets)
    index = targets.get("frame_index")
    flow, _ = flow_loss(flow_pred, targets["flow"], targets["mask"], frame_index=index)
    depth, _ = depth_loss(depth_pred, targets["depth"], targets["mask"])
    return flow + depth


def kernel_profile(step, device: torch.device, top: int = 15) -> dict:
    """Where one call of ``step`` spends its time: the ``top`` ops by self device time (CPU time
    on a CPU), the device's busy time summed over all ops, the (profiled, so inflated) wall time
    and the op count.  Busy time far below the unprofiled step time means the step is bound by
    launching kernels, not by running them (then CUDA graphs or torch.compile, not leaner
    kernels, are the fix)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
        synchronize(device)
    wall_ms = 1000.0 * (time.perf_counter() - start)
    attrs = ("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ("self_cpu_time_total",)

    def self_us(event) -> float:  # the device attribute's name changed across torch versions
        return next((float(getattr(event, a)) for a in attrs if hasattr(event, a)), 0.0)

    events = prof.key_averages()
    rows = sorted(events, key=self_us, reverse=True)[:top]
    return {"wall_ms": wall_ms, "busy_ms": sum(self_us(e) for e in events) / 1000.0,
            "ops": sum(e.count for e in events),
            "top": [{"op": e.key, "self_ms": self_us(e) / 1000.0, "calls": e.count} for e in rows]}


def item_dit_forward(preset: str, device: torch.device, frames: int, height: int, width: int,
                     runs: int, warmup: int) -> dict:
    """1. DiT forward: median time, TFLOP/s and MFU (FLOP formula in world_model/flops.py)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = benchmark_dit_forward(preset, device, dtype, frames, height, width, runs=runs, warmup=warmup)
    return {k: result[k] for k in ("preset", "tokens", "params", "flops", "median_s", "tflops", "peak_tflops",
                                   "mfu", "attention_backend", "max_memory_gib")}


def _heads_step(heads, optimizer, taps, targets, watch: PhaseTimer) -> None:
    with watch.phase("heads_fwd_bwd"), autocast_for(watch.device):
        loss = heads_loss(heads, taps, targets)
    with watch.phase("heads_fwd_bwd"):
        loss.backward()
    with watch.phase("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def item_stage1_step(preset: str, device: torch.device, frames: int, height: int, width: int,
                     runs: int, warmup: int, head_features: int = 128, rgb_refine: bool = True,
                     supervised_frames: int = 0, profile: bool = False, rgb_refine_stride: int = 1) -> dict:
    """2. Stage-1 step, online (backbone every step) vs cached (tapped features read from disk).

    ``supervised_frames`` K > 0 decodes K frames per step in both paths (the recipe's
    data.window.supervised_frames); ``profile`` adds the top ops of one cached step.
    """
    p = get_preset(preset)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backbone = FrozenBackbone(random_dit(p, device, dtype), p, training=True)
    latents, context = random_inputs(p, frames, height, width, device, dtype)
    heads = build_heads(p, device, head_features, rgb_refine, rgb_refine_stride)
    optimizer = heads_optimizer(heads, device)
    targets = head_targets(frames, height, width, device, supervised_frames)
    result = {"head_params": count_parameters(heads),
              "head_features": head_features, "rgb_refine": rgb_refine, "rgb_refine_stride": rgb_refine_stride,
              "supervised_frames": supervised_frames}
    reset_peak(device)
    watch = PhaseTimer(device)
    for i in range(warmup + runs):
        watch.enabled = i >= warmup
        with watch.phase("backbone"):
            taps = backbone.extract(latents, context, ExtractionConfig()).as_list()
        _heads_step(heads, optimizer, taps, targets, watch)
    online = watch.per_step_ms(runs)
    result.update({f"online_{k}": v for k, v in online.items()}, online_peak_gib=peak_gib(device))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.safetensors"
        save_file({str(k): t.to(torch.bfloat16).contiguous().cpu() for k, t in enumerate(taps)}, str(path))
        result["cache_mb_per_sample"] = path.stat().st_size / 1e6
        del backbone, taps  # the cached path never holds the backbone
        reset_peak(device)
        watch = PhaseTimer(device)
        for i in range(warmup + runs):
            watch.enabled = i >= warmup
            with watch.phase("read_features"):  # in training: DataLoader workers + pin thread, ahead of time
                stored = load_file(str(path))
                host = [stored[str(k)] for k in range(len(stored))]
                host = pinned(host, device)
            with watch.phase("h2d_features"):
                taps = [t.to(device, non_blocking=True) for t in host]
            _heads_step(heads, optimizer, taps, targets, watch)
        cached = watch.per_step_ms(runs)
        result.update({f"cached_{k}": v for k, v in cached.items()}, cached_peak_gib=peak_gib(device))
        if profile:
            result["cached_profile"] = kernel_profile(
                lambda: _heads_step(heads, optimizer, taps, targets, PhaseTimer(device)), device)
    online_ms, cached_ms = sum(online.values()), sum(cached.values())
    # Training reads the next window's features in loader workers while this step runs, so only
    # the host-to-device copy stays on the step's critical path; both ratios are reported.
    prefetched_ms = cached_ms - cached["read_features_ms"]
    result.update(online_step_ms=online_ms, cached_step_ms=cached_ms, speedup=online_ms / cached_ms,
                  cached_step_ms_prefetched=prefetched_ms, speedup_prefetched=online_ms / prefetched_ms,
                  online_samples_per_s=1000.0 / online_ms, cached_samples_per_s=1000.0 / cached_ms)
    return result


HEAD_VARIANTS = (  # (name, supervised frames, RGB path stride (0 = no RGB path), channels-last decoder)
    ("all frames, full-res RGB", 0, 1, False), ("all frames, full-res RGB, channels-last", 0, 1, True),
    ("8 frames, full-res RGB", 8, 1, False), ("all frames, half-res RGB", 0, 2, False),
    ("8 frames, half-res RGB", 8, 2, False), ("all frames, no RGB", 0, 0, False),
)


def backbone_and_copy(p: BackbonePreset, device: torch.device, frames: int, height: int, width: int, runs: int,
                      warmup: int) -> tuple[dict, list[torch.Tensor]]:
    """Time one backbone forward (the online path's extra work) and one host-to-device copy of its
    features (the cached path's), then free the backbone; returns the timings and the features."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backbone = FrozenBackbone(random_dit(p, device, dtype), p, training=True)
    latents, context = random_inputs(p, frames, height, width, device, dtype)
    watch = PhaseTimer(device)
    for i in range(warmup + runs):
        watch.enabled = i >= warmup
        with watch.phase("backbone"):
            taps = backbone.extract(latents, context, ExtractionConfig()).as_list()
    host = [t.to(torch.bfloat16).cpu() for t in taps]
    host = pinned(host, device)
    del backbone, taps
    for i in range(warmup + runs):
        watch.enabled = i >= warmup
        with watch.phase("h2d_features"):
            taps = [t.to(device, non_blocking=True) for t in host]
    return watch.per_step_ms(runs), taps


def item_stage1_variants(preset: str, device: torch.device, frames: int, height: int, width: int,
                         runs: int, warmup: int, head_features: int = 128) -> dict:
    """2b. The stage-1 speed knobs side by side: one backbone forward and one feature copy are
    timed once, then each heads variant's step; online = backbone + heads + optimizer, cached =
    host-to-device copy of the features + heads + optimizer (reading them is the loader's job)."""
    p = get_preset(preset)
    fixed, taps = backbone_and_copy(p, device, frames, height, width, runs, warmup)
    result = {**fixed, "variants": []}
    for name, *knobs in HEAD_VARIANTS:
        result["variants"].append({"name": name, **_variant_step(p, device, frames, height, width, runs, warmup,
                                                                  head_features, *knobs, taps=taps, fixed=fixed)})
    return result


def item_stage1_compiled(preset: str, device: torch.device, frames: int, height: int, width: int,
                         runs: int, warmup: int, head_features: int = 128, backend: str = "inductor",
                         supervised_frames: int = 0, rgb_refine_stride: int = 1, mode: str | None = None,
                         channels_last: bool = False) -> dict:
    """2c. A heads step with both heads compiled as one graph (``mode``: None, 'reduce-overhead'
    for CUDA graphs, ...), for the default heads or a variant (K supervised frames, RGB path
    stride, 0 = none, channels-last decoder): the one-off compile time of the training step (the
    no-grad comparison before it compiles a graph of its own, not counted), the steady-state
    step, the largest output difference from eager, and the online/cached ratio with a timed
    backbone forward.  The eager heads are memory-bound and far above their roofline
    (scripts/head_cost.py); compiling is the cheapest way closer to it."""
    p = get_preset(preset)
    fixed, taps = backbone_and_copy(p, device, frames, height, width, runs, warmup)
    targets = head_targets(frames, height, width, device, supervised_frames)
    heads = build_heads(p, device, head_features, rgb_refine_stride > 0, max(rgb_refine_stride, 1), channels_last)
    with torch.no_grad(), autocast_for(device):
        eager = head_outputs(heads, taps, targets)
    compiled = torch.compile(heads, backend=backend, mode=mode)  # one graph for both heads, as training does
    optimizer = heads_optimizer(heads, device)
    with torch.no_grad(), autocast_for(device):
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(eager, head_outputs(compiled, taps, targets)))
    synchronize(device)
    start = time.perf_counter()
    _heads_step(compiled, optimizer, taps, targets, PhaseTimer(device))
    synchronize(device)
    compile_s = time.perf_counter() - start
    return {"backend": backend, "mode": mode, "supervised_frames": supervised_frames,
            "rgb_refine_stride": rgb_refine_stride, "channels_last": channels_last, "compile_s": compile_s,
            "max_abs_diff_vs_eager": diff, **fixed,
            **timed_heads_steps(compiled, optimizer, taps, targets, runs, warmup, fixed)}


def timed_heads_steps(heads, optimizer, taps: list[torch.Tensor], targets: dict, runs: int,
                      warmup: int, fixed: dict) -> dict:
    """Time the heads step; online = backbone + heads + optimizer, cached = host-to-device copy of
    the features + heads + optimizer (``fixed`` from ``backbone_and_copy``), and the peak memory."""
    device = taps[0].device
    reset_peak(device)
    watch = PhaseTimer(device)
    for i in range(warmup + runs):
        watch.enabled = i >= warmup
        _heads_step(heads, optimizer, taps, targets, watch)
    phases = watch.per_step_ms(runs)
    step = phases["heads_fwd_bwd_ms"] + phases["optimizer_ms"]
    online, cached = fixed["backbone_ms"] + step, fixed["h2d_features_ms"] + step
    return {**phases, "online_step_ms": online, "cached_step_ms": cached, "speedup": online / cached,
            "peak_gib": peak_gib(device)}


def _variant_step(p: BackbonePreset, device: torch.device, frames: int, height: int, width: int, runs: int,
                  warmup: int, features: int, supervised: int, stride: int, channels_last: bool, *, taps,
                  fixed: dict) -> dict:
    heads = build_heads(p, device, features, stride > 0, max(stride, 1), channels_last)
    optimizer = heads_optimizer(heads, device)
    targets = head_targets(frames, height, width, device, supervised)
    return {"supervised_frames": supervised, "rgb_refine_stride": stride, "channels_last": channels_last,
            **timed_heads_steps(heads, optimizer, taps, targets, runs, warmup, fixed)}


def item_stage2_step(preset: str, device: torch.device, frames: int, height: int, width: int,
                     runs: int, warmup: int, gradient_checkpointing: bool, rank: int = 32) -> dict:
    """3. Stage-2 LoRA step: flow-matching loss + head losses through the adapted DiT."""
    p = get_preset(preset)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dit = add_lora(random_dit(p, device, dtype), rank=rank)
    adapters = lora_parameters(dit)
    heads = build_heads(p, device).requires_grad_(False)
    optimizer = torch.optim.AdamW(adapters, lr=2e-5)
    x0, context = random_inputs(p, frames, height, width, device, dtype)
    targets = head_targets(frames, height, width, device)
    noise = make_noise(x0.shape, seed=0, device=device, dtype=dtype)
    reset_peak(device)
    watch = PhaseTimer(device)
    for i in range(warmup + runs):
        watch.enabled = i >= warmup
        with watch.phase("forward_backward"), autocast_for(device):
            x_t = noisy_latents(x0, 0.7, noise)
            out = dit_forward(dit, x_t, 700.0, context, taps=p.default_taps, return_output=True,
                              gradient_checkpointing=gradient_checkpointing)
            fm = (out.output.float() - (noise - x0).float())[:, :, 1:].square().mean()
            loss = fm + heads_loss(heads, out.as_list(), targets)
        with watch.phase("forward_backward"):
            loss.backward()
        with watch.phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    step = watch.per_step_ms(runs)
    return {"gradient_checkpointing": gradient_checkpointing, "lora_rank": rank,
            "lora_params": sum(a.numel() for a in adapters), **step,
            "step_ms": sum(step.values()), "peak_gib": peak_gib(device)}


def item_vae_encode(preset: str, device: torch.device, frames: int, height: int, width: int,
                    runs: int, warmup: int, tiled: bool) -> dict:
    """4. VAE encode of one window (random weights), untiled or tiled."""
    p = get_preset(preset)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        vae = materialize_random(build_vae(p, empty=True), device, dtype)
    else:
        vae = build_vae(p, seed=0, device=device, dtype=dtype)
    encoder = VideoLatentEncoder(vae, "random", p, device=device, dtype=dtype, tiled=tiled)
    video = torch.rand(1, 3, frames, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    reset_peak(device)
    times = []
    for i in range(warmup + runs):
        synchronize(device)
        start = time.perf_counter()
        latents = encoder.encode(video)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"tiled": tiled, "latent_shape": list(latents.shape), "median_ms": 1000 * statistics.median(times),
            "peak_gib": peak_gib(device)}
