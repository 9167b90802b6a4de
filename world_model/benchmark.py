"""Timing of a DiT forward (random weights) with achieved TFLOP/s and MFU.

Importable by GPU check scripts: ``benchmark_dit_forward(preset, device, dtype, frames, height,
width, runs, warmup) -> dict``. Random weights are fine for speed: the kernels do not depend on the
values. On CUDA the model is built with parameters on ``meta`` and materialised directly on the GPU
(``to_empty`` + normal init), so a 5 B random model costs seconds, not minutes of CPU init.
"""
from __future__ import annotations

import logging
import statistics
import time

import torch
from torch import nn

from .attention import set_attention_backend, set_sdpa_kernel
from .features import dit_forward
from .flops import dit_forward_flops, gpu_by_name, mfu
from .models import build_dit, count_parameters
from .presets import get_preset

log = logging.getLogger(__name__)

def detect_peak_tflops(device: torch.device | str) -> float | None:
    """Peak bf16 TFLOP/s of a CUDA device by name (world_model.flops.GPUS), None when unknown / not CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    gpu = gpu_by_name(torch.cuda.get_device_name(device))
    return None if gpu is None else gpu.peak_tflops


def materialize_random(model: nn.Module, device: torch.device | str, dtype: torch.dtype,
                       seed: int = 0, std: float = 0.02) -> nn.Module:
    """Give a meta-parameter model real N(0, std) weights directly on ``device``."""
    model = model.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std, generator=gen)
    return model.eval().requires_grad_(False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_dit_forward(preset: str = "tiny", device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32, frames: int = 9, height: int = 64,
                          width: int = 64, runs: int = 5, warmup: int = 2, batch: int = 1,
                          attention_backend: str = "auto", peak_tflops: float | None = None,
                          seed: int = 0, sdpa_kernel: str = "auto", compile_backend: str | None = None,
                          keep_output: bool = False) -> dict:
    """Median wall time of one DiT forward (inference mode) plus FLOP/s and MFU.

    ``sdpa_kernel`` restricts torch SDPA to one kernel (world_model.attention.set_sdpa_kernel; reset
    to ``auto`` afterwards); ``compile_backend`` compiles every DiT block with torch.compile (e.g.
    ``inductor``: fused norms, RoPE and modulation around the attention and FFN matmuls); the
    first forward, which compiles, is timed as ``first_s``.  Returns a dict with: preset, device,
    dtype, tokens, grid, params, flops, times_s, first_s, median_s, tflops, peak_tflops, mfu (None
    without a peak), attention_backend, sdpa_kernel, compile_backend, max_memory_gib, and with
    ``keep_output`` the last output (``output``).
    """
    p = get_preset(preset)
    device = torch.device(device)
    backend = set_attention_backend(attention_backend, training=False)
    if device.type == "cuda":
        dit = materialize_random(build_dit(p, empty=True), device, dtype, seed)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        dit = build_dit(p, seed=seed, device=device, dtype=dtype)
    if compile_backend:
        for block in dit.blocks:
            block.compile(backend=compile_backend)
    try:
        set_sdpa_kernel(sdpa_kernel)
        return _timed_forwards(dit, p, device, dtype, frames, height, width, runs, warmup, batch, peak_tflops, seed,
                               keep_output) | {"attention_backend": backend, "sdpa_kernel": sdpa_kernel,
                                               "compile_backend": compile_backend}
    finally:
        set_sdpa_kernel("auto")


def _timed_forwards(dit: nn.Module, p, device: torch.device, dtype: torch.dtype, frames: int, height: int, width: int,
                    runs: int, warmup: int, batch: int, peak_tflops: float | None, seed: int, keep_output: bool) -> dict:
    c, t, h, w = p.latent_shape(frames, height, width)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn(batch, c, t, h, w, generator=gen).to(device, dtype)
    context = torch.randn(batch, p.text_len, p.text_dim, generator=gen).to(device, dtype)
    times = []
    with torch.inference_mode():
        for _ in range(1 + warmup + runs):
            _sync(device)
            t0 = time.perf_counter()
            output = dit_forward(dit, latents, 500.0, context, taps=(), return_output=True).output
            _sync(device)
            times.append(time.perf_counter() - t0)
    first, times = times[0], times[1 + warmup:]
    flops = dit_forward_flops(p, frames, height, width, batch=batch)
    median = statistics.median(times)
    peak = peak_tflops if peak_tflops is not None else detect_peak_tflops(device)
    result = {
        "preset": p.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "video": [frames, height, width],
        "batch": batch,
        "tokens": p.num_tokens(frames, height, width),
        "grid": list(p.token_grid(frames, height, width)),
        "params": count_parameters(dit),
        "flops": flops,
        "times_s": times,
        "first_s": first,
        "median_s": median,
        "tflops": flops / median / 1e12,
        "peak_tflops": peak,
        "mfu": mfu(flops, median, peak) if peak else None,
        "max_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None,
    }
    if keep_output:
        result["output"] = output
    log.info("%s forward on %s: median %.4f s, %.1f TFLOP/s", p.name, result["device"], median, result["tflops"])
    return result
