"""Analytic FLOP count of one Wan DiT forward, from the preset (for throughput and MFU).

Counting convention: a multiply-add is 2 FLOPs; only matmuls/attention are counted (norms,
RoPE, GELU and modulation are < 1 %). With N video tokens, Lt text tokens, width d, FFN width f:

    per block
      self-attn projections   2 * N  * 4 d^2          (q, k, v, o)
      cross-attn q, o         2 * N  * 2 d^2
      cross-attn k, v         2 * Lt * 2 d^2          (on the Lt = 512 text tokens)
      FFN                     2 * N  * 2 d f
      self-attn scores+mix    4 * N^2 * d             (QK^T and AV, each 2 N^2 d)
      cross-attn scores+mix   4 * N * Lt * d
    once
      patch embedding         2 * N * (C_in * prod(patch)) * d
      text embedding          2 * Lt * (d_text * d + d^2)
      head                    2 * N * d * (C_out * prod(patch))

For TI2V-5B at 49x480x480 (N = 2,925, Lt = 512): ~29.8 TFLOP per forward, i.e. about
2 * 5e9 * N plus ~3.7 TFLOP of attention.

A stage-2 LoRA step (``dit_train_step_flops``) trains adapters only, so its backward computes the
gradients of activations, not of the frozen weights: each matmul on the video tokens once more
(dX = dY W^T), the attention core twice (dQ, dK, dV and dP: the adapted cross-attention k, v need
dK, dV too), the head once; the patch and text embeddings not at all (nothing before them needs a
gradient). Gradient checkpointing adds one more forward of every block. The adapters' own FLOPs
(rank r against width d, ~1 % at r = 32) are left out, as MFU conventionally counts the base model.
At 49x480x480 that is 29.7 forward + 32.8 backward + 29.7 recompute = 92 TFLOP per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .presets import BackbonePreset, get_preset


def dit_block_flops(preset: str | BackbonePreset, num_tokens: int, text_len: int | None = None) -> dict[str, float]:
    """FLOPs of ONE DiT block, split by term (see module docstring)."""
    p = get_preset(preset)
    n, lt = float(num_tokens), float(p.text_len if text_len is None else text_len)
    d, f = float(p.dit.dim), float(p.dit.ffn_dim)
    return {
        "self_attn_proj": 2 * n * 4 * d * d,
        "cross_attn_q_o": 2 * n * 2 * d * d,
        "cross_attn_k_v": 2 * lt * 2 * d * d,
        "ffn": 2 * n * 2 * d * f,
        "self_attn_core": 4 * n * n * d,
        "cross_attn_core": 4 * n * lt * d,
    }


def dit_forward_flops(preset: str | BackbonePreset, frames: int, height: int, width: int,
                      batch: int = 1, text_len: int | None = None) -> float:
    """FLOPs of one DiT forward on ``batch`` videos of (frames, height, width) pixels."""
    p = get_preset(preset)
    n = p.num_tokens(frames, height, width)
    lt = p.text_len if text_len is None else text_len
    d = p.dit.dim
    patch = math.prod(p.patch_size)
    blocks = p.num_layers * sum(dit_block_flops(p, n, lt).values())
    once = (2 * n * p.dit.in_dim * patch * d
            + 2 * lt * (p.dit.text_dim * d + d * d)
            + 2 * n * d * p.dit.out_dim * patch)
    return float(batch) * (blocks + once)


def dit_train_step_flops(preset: str | BackbonePreset, frames: int, height: int, width: int,
                         gradient_checkpointing: bool, batch: int = 1, text_len: int | None = None) -> dict[str, float]:
    """FLOPs of one LoRA training step of the DiT (module docstring): forward, input-gradient
    backward, checkpoint recompute and their total."""
    p = get_preset(preset)
    n = p.num_tokens(frames, height, width)
    block = dit_block_flops(p, n, text_len)
    per_block_backward = (block["self_attn_proj"] + block["cross_attn_q_o"] + block["ffn"]
                          + 2 * (block["self_attn_core"] + block["cross_attn_core"]))
    head = 2 * n * p.dit.dim * p.dit.out_dim * math.prod(p.patch_size)
    forward = dit_forward_flops(p, frames, height, width, batch, text_len)
    backward = float(batch) * (p.num_layers * per_block_backward + head)
    recompute = float(batch) * p.num_layers * sum(block.values()) if gradient_checkpointing else 0.0
    return {"forward": forward, "backward": backward, "recompute": recompute,
            "total": forward + backward + recompute}


def mfu(flops: float, seconds: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the hardware peak (0..1)."""
    if seconds <= 0 or peak_tflops <= 0:
        raise ValueError("seconds and peak_tflops must be positive")
    return flops / seconds / (peak_tflops * 1e12)


@dataclass(frozen=True)
class GPU:
    """A card's dense bf16 tensor-core peak (no sparsity) and memory bandwidth, from vendor data
    sheets: what MFU (world_model.benchmark) and the heads' roofline (heads.roofline) divide by."""

    name: str
    peak_flops: float
    """FLOP/s."""
    bandwidth: float
    """Bytes/s of device memory."""

    @property
    def peak_tflops(self) -> float:
        return self.peak_flops / 1e12


GPUS: dict[str, GPU] = {
    "h200": GPU("H200 SXM", 989e12, 4.8e12),
    "h100": GPU("H100 SXM", 989e12, 3.35e12),
    "h100_pcie": GPU("H100 PCIe", 756e12, 2.0e12),
    "a100": GPU("A100 SXM", 312e12, 2.04e12),
    "l40s": GPU("L40S", 362e12, 0.864e12),
    "a10g": GPU("A10G", 70e12, 0.6e12),
    "rtx4090": GPU("RTX 4090", 165e12, 1.008e12),
}
"""The one table of GPU peak figures; keys are what ``gpu_by_name`` matches device names against."""

_NAME_KEYS = (("H100", "PCIe", "h100_pcie"), ("H200", "", "h200"), ("H100", "", "h100"), ("A100", "", "a100"),
              ("L40S", "", "l40s"), ("A10G", "", "a10g"), ("RTX 4090", "", "rtx4090"))


def gpu_by_name(device_name: str) -> GPU | None:
    """The table's entry for a CUDA device name (``torch.cuda.get_device_name``), None if unknown."""
    for marker, qualifier, key in _NAME_KEYS:
        if marker in device_name and qualifier in device_name:
            return GPUS[key]
    return None
