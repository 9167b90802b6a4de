"""The measurements of the GPU check, one function per item (see scripts/gpu_check.py).

Every item builds random-weight models of the given preset (speed and memory do not depend on
weight values), runs ``warmup`` untimed and ``runs`` timed iterations, and returns a flat dict.
On CPU the same code runs the tiny preset, which is how it is tested before a GPU is lent.
"""

from __future__ import annotations

import functools
import itertools
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from data.sampling import supervised_subset
from heads.losses import HeadLoss, LossConfig
from stages.model import HeadPair, head_inputs
from stages.model import build_heads as build_stage_heads
from stages.stage1 import heads_loss
from stages.trainer.assemble import make_step_run
from stages.trainer.loop import TrainRun, optimizer_step
from stages.trainer.sections import HeadsConfig, OptimConfig
from stages.trainer.tracking import PhaseTimer, synchronize
from world_model.backbone import FrozenBackbone, autocast_for
from world_model.benchmark import benchmark_dit_forward, materialize_random
from world_model.encoders import VideoLatentEncoder
from world_model.features import ExtractionConfig
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


def random_model(build, preset: BackbonePreset, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``build`` (world_model.models.build_*) with random weights: made on the GPU directly there,
    seeded on CPU."""
    if device.type == "cuda":
        return materialize_random(build(preset, empty=True), device, dtype)
    return build(preset, seed=0, device=device, dtype=dtype)


def random_dit(preset: BackbonePreset, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return random_model(build_dit, preset, device, dtype)


def random_inputs(preset: BackbonePreset, frames: int, height: int, width: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, *preset.latent_shape(frames, height, width), generator=gen)
    context = torch.randn(1, preset.text_len, preset.text_dim, generator=gen)
    return latents.to(device, dtype), context.to(device, dtype)


def build_heads(preset: BackbonePreset, device: torch.device, features: int = 128, rgb_refine: bool = True,
                rgb_refine_stride: int = 1, channels_last: bool = False, checkpoint_chunk: int | None = None) -> HeadPair:
    """The head pair as stage-1 training builds it (stages.model.build_heads), eager; with
    ``checkpoint_chunk`` the decoder recomputed in backward that many frames at a time."""
    knobs = HeadsConfig(features=features, rgb_refine=rgb_refine, rgb_refine_stride=rgb_refine_stride,
                        channels_last=channels_last, checkpoint_decoder=checkpoint_chunk is not None,
                        frame_chunk=checkpoint_chunk or 0)
    return build_stage_heads(knobs, preset, len(preset.default_taps)).to(device)


def head_targets(frames: int, height: int, width: int, device: torch.device,
                 supervised_frames: int = 0) -> dict[str, torch.Tensor]:
    """A random training batch with the data set's keys; with ``supervised_frames`` K, targets for
    K random frames of the window (as training with data.window.supervised_frames draws them)
    plus the RGB the heads read there.  The physics terms' inputs (intrinsics, gravity direction,
    frame interval) are those of a plausible camera."""
    gen = torch.Generator().manual_seed(1)
    k = supervised_frames or frames
    batch = {
        "rgb": torch.rand(1, frames, 3, height, width, generator=gen).to(device),
        "flow": (4 * torch.randn(1, k, 2, height, width, generator=gen)).to(device),
        "depth": (1 + 4 * torch.rand(1, k, height, width, generator=gen)).to(device),
        "flow_valid": torch.ones(1, k, height, width, dtype=torch.bool, device=device),
        "depth_valid": torch.ones(1, k, height, width, dtype=torch.bool, device=device),
        "intrinsics": torch.tensor([[width, width, (width - 1) / 2, (height - 1) / 2]], dtype=torch.float32,
                                   device=device),
        "down_cam": torch.tensor([[0.0, 1.0, 0.0]], device=device),
        "dt": torch.tensor([2 / 30], device=device),
    }
    if supervised_frames:
        pick = supervised_subset(frames, supervised_frames, np.random.default_rng(1))
        batch["frame_index"] = torch.from_numpy(pick)[None].to(device)
        batch["frame_rgb"] = batch["rgb"][:, pick]
        batch["prev_rgb"] = batch["rgb"][:, np.maximum(pick - 1, 0)]
    return batch


@functools.cache
def accelerator_for(device: torch.device):
    """One accelerate Accelerator per process, as a training launch makes it: bf16 mixed precision
    on CUDA (what stages/launch_common.sh passes), full precision on CPU."""
    from accelerate import Accelerator

    cuda = device.type == "cuda"
    return Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")


def step_run(model: torch.nn.Module, device: torch.device, optim: OptimConfig | None = None) -> TrainRun:
    """The trainer's optimizer, backend and step bookkeeping around ``model`` (by default stage
    1's OptimConfig: AdamW, fused on CUDA, clipping at 1.0, one micro-batch)."""
    return make_step_run(accelerator_for(device), model, optim or OptimConfig())


def release(run: TrainRun) -> None:
    """Drop accelerate's references to a benchmarked model and optimizer, so the next item's peak
    memory is its own."""
    run.accelerator.free_memory()


def pinned(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Page-locked host copies on CUDA machines (what the training loader's pin thread makes)."""
    return [t.pin_memory() for t in tensors] if device.type == "cuda" else tensors


def head_outputs(heads, taps: list[torch.Tensor], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Both heads' predictions, for all frames or for the batch's supervised frames (``heads``:
    a HeadPair or a compiled one)."""
    return heads(taps, *head_inputs(batch))


HEAD_LOSS = HeadLoss(LossConfig())
"""Stage 1's loss at the recipe's default weights (stages.stage1.heads_loss)."""


def trainer_heads_step(run: TrainRun, taps: list[torch.Tensor], batch: dict) -> dict[str, float]:
    """One optimizer step of stage 1 exactly as training takes it: ``optimizer_step`` over
    ``stages.stage1.heads_loss``; its phases (forward_backward, optimizer) land in ``run.timer``."""
    return optimizer_step(run, itertools.repeat(batch), lambda b, micro: heads_loss(run.model, HEAD_LOSS, taps, b),
                          OptimConfig())


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
                     runs: int, warmup: int, peak_tflops: float | None = None) -> dict:
    """1. DiT forward: median time, TFLOP/s and MFU (FLOP formula in world_model/flops.py)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = benchmark_dit_forward(preset, device, dtype, frames, height, width, runs=runs, warmup=warmup,
                                   peak_tflops=peak_tflops)
    return {k: result[k] for k in ("preset", "tokens", "params", "flops", "median_s", "tflops", "peak_tflops",
                                   "mfu", "attention_backend", "max_memory_gib")}


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
    batch = head_targets(frames, height, width, device, supervised_frames)
    result = {"head_params": count_parameters(heads),
              "head_features": head_features, "rgb_refine": rgb_refine, "rgb_refine_stride": rgb_refine_stride,
              "supervised_frames": supervised_frames}
    run = step_run(heads, device)
    watch = run.timer
    reset_peak(device)
    for i in range(warmup + runs):
        watch.enabled = i >= warmup
        with watch.phase("backbone"):
            taps = backbone.extract(latents, context, ExtractionConfig()).as_list()
        trainer_heads_step(run, taps, batch)
    online = watch.per_step_ms(runs)
    result.update({f"online_{k}": v for k, v in online.items()}, online_peak_gib=peak_gib(device))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.safetensors"
        save_file({str(k): t.to(torch.bfloat16).contiguous().cpu() for k, t in enumerate(taps)}, str(path))
        result["cache_mb_per_sample"] = path.stat().st_size / 1e6
        del backbone, taps  # the cached path never holds the backbone
        reset_peak(device)
        watch.clear()
        for i in range(warmup + runs):
            watch.enabled = i >= warmup
            with watch.phase("read_features"):  # in training: DataLoader workers + pin thread, ahead of time
                stored = load_file(str(path))
                host = [stored[str(k)] for k in range(len(stored))]
                host = pinned(host, device)
            with watch.phase("h2d_features"):
                taps = [t.to(device, non_blocking=True) for t in host]
            trainer_heads_step(run, taps, batch)
        cached = watch.per_step_ms(runs)
        result.update({f"cached_{k}": v for k, v in cached.items()}, cached_peak_gib=peak_gib(device))
        if profile:
            watch.enabled = False
            result["cached_profile"] = kernel_profile(lambda: trainer_heads_step(run, taps, batch), device)
    release(run)
    online_ms, cached_ms = sum(online.values()), sum(cached.values())
    # Training reads the next window's features in loader workers while this step runs, so only
    # the host-to-device copy stays on the step's critical path; both ratios are reported.
    prefetched_ms = cached_ms - cached["read_features_ms"]
    result.update(online_step_ms=online_ms, cached_step_ms=cached_ms, speedup=online_ms / cached_ms,
                  cached_step_ms_prefetched=prefetched_ms, speedup_prefetched=online_ms / prefetched_ms,
                  online_samples_per_s=1000.0 / online_ms, cached_samples_per_s=1000.0 / cached_ms,
                  **supervised_rates(supervised_frames or frames, online=online_ms, cached=cached_ms))
    return result


def supervised_rates(frames_per_window: int, **step_ms: float) -> dict[str, float]:
    """Supervised frames per second per path: what a user pays GPU time for (a window of 49
    frames that supervises 8 teaches the heads 8 frames, not 49)."""
    return {f"{path}_supervised_frames_per_s": 1000.0 * frames_per_window / ms for path, ms in step_ms.items()}


HEAD_VARIANTS = (  # (name, supervised frames, RGB path stride (0 = no RGB path), channels-last decoder,
    # decoder checkpointed this many frames at a time (None = not))
    ("all frames, full-res RGB", 0, 1, False, None), ("all frames, full-res RGB, channels-last", 0, 1, True, None),
    ("all frames, full-res RGB, decoder checkpointed by 7", 0, 1, False, 7),
    ("8 frames, full-res RGB", 8, 1, False, None), ("all frames, half-res RGB", 0, 2, False, None),
    ("8 frames, half-res RGB", 8, 2, False, None), ("all frames, no RGB", 0, 0, False, None),
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
    batch = head_targets(frames, height, width, device, supervised_frames)
    heads = build_heads(p, device, head_features, rgb_refine_stride > 0, max(rgb_refine_stride, 1), channels_last)
    with torch.no_grad(), autocast_for(device):
        eager = head_outputs(heads, taps, batch)
    compiled = torch.compile(heads, backend=backend, mode=mode)  # one graph for both heads, as training does
    with torch.no_grad(), autocast_for(device):
        diff = max((a.float() - b.float()).abs().max().item()
                   for a, b in zip(eager, head_outputs(compiled, taps, batch)))
    run = step_run(compiled, device)
    run.timer.enabled = False
    synchronize(device)
    start = time.perf_counter()
    trainer_heads_step(run, taps, batch)
    synchronize(device)
    compile_s = time.perf_counter() - start
    return {"backend": backend, "mode": mode, "supervised_frames": supervised_frames,
            "rgb_refine_stride": rgb_refine_stride, "channels_last": channels_last, "compile_s": compile_s,
            "max_abs_diff_vs_eager": diff, **fixed, **timed_heads_steps(run, taps, batch, runs, warmup, fixed)}


def timed_heads_steps(run: TrainRun, taps: list[torch.Tensor], batch: dict, runs: int, warmup: int,
                      fixed: dict) -> dict:
    """Time the trainer's heads step; online = backbone + step, cached = host-to-device copy of the
    features + step (``fixed`` from ``backbone_and_copy``), and the peak memory.  Releases ``run``."""
    device = taps[0].device
    reset_peak(device)
    watch = run.timer
    watch.clear()
    for i in range(warmup + runs):
        watch.enabled = i >= warmup
        trainer_heads_step(run, taps, batch)
    phases = watch.per_step_ms(runs)
    release(run)
    step = sum(phases.values())  # data (a batch already in memory), forward_backward, optimizer
    online, cached = fixed["backbone_ms"] + step, fixed["h2d_features_ms"] + step
    return {**phases, "online_step_ms": online, "cached_step_ms": cached, "speedup": online / cached,
            "peak_gib": peak_gib(device)}


def _variant_step(p: BackbonePreset, device: torch.device, frames: int, height: int, width: int, runs: int,
                  warmup: int, features: int, supervised: int, stride: int, channels_last: bool,
                  checkpoint_chunk: int | None, *, taps, fixed: dict) -> dict:
    heads = build_heads(p, device, features, stride > 0, max(stride, 1), channels_last, checkpoint_chunk)
    batch = head_targets(frames, height, width, device, supervised)
    return {"supervised_frames": supervised, "rgb_refine_stride": stride, "channels_last": channels_last,
            "checkpoint_chunk": checkpoint_chunk,
            **timed_heads_steps(step_run(heads, device), taps, batch, runs, warmup, fixed)}


def item_vae_encode(preset: str, device: torch.device, frames: int, height: int, width: int,
                    runs: int, warmup: int, tiled: bool) -> dict:
    """4. VAE encode of one window (random weights), untiled or tiled."""
    p = get_preset(preset)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = random_model(build_vae, p, device, dtype)
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
