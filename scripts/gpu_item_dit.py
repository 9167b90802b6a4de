"""GPU check item ``dit_forward_variants``: the DiT forward under each attention kernel the machine
offers, and with compiled blocks, each against the first variant's output.

The variants: torch SDPA as torch chooses, then restricted to cuDNN attention (Hopper's fastest in
recent torch), FlashAttention-2 inside torch, memory-efficient and math; the FlashAttention 3 / 2
packages when installed; and the blocks compiled (inductor on CUDA; aot_eager on CPU, which checks
the wiring, not the speed).  A kernel that cannot run here is reported with its error, not skipped
in silence.
"""

from __future__ import annotations

import torch

from world_model.attention import installed_backends
from world_model.benchmark import benchmark_dit_forward

SHOWN = ("median_s", "first_s", "tflops", "mfu", "max_memory_gib")


def variants(device: torch.device) -> list[tuple[str, dict]]:
    """(name, benchmark_dit_forward keyword arguments) per variant, the reference first."""
    found = [("sdpa, torch's choice", {})]
    found += [(f"sdpa {k}", {"sdpa_kernel": k}) for k in ("cudnn", "flash", "efficient", "math")]
    found += [(b, {"attention_backend": b}) for b in ("flash_attn_3", "flash_attn_2") if b in installed_backends()]
    compiler = "inductor" if device.type == "cuda" else "aot_eager"
    return found + [(f"sdpa, blocks compiled ({compiler})", {"compile_backend": compiler})]


def item_dit_forward_variants(preset: str, device: torch.device, frames: int, height: int, width: int,
                              runs: int, warmup: int) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows, reference = [], None
    for name, kwargs in variants(device):
        kwargs = {"attention_backend": "sdpa", **kwargs}
        try:
            result = benchmark_dit_forward(preset, device, dtype, frames, height, width, runs=runs, warmup=warmup,
                                           keep_output=True, **kwargs)
        except (RuntimeError, ValueError, NotImplementedError) as error:  # a kernel this card or dtype lacks
            rows.append({"name": name, "status": "unavailable", "error": str(error).splitlines()[0][:200]})
            continue
        output = result.pop("output").float()
        reference = output if reference is None else reference
        rows.append({"name": name, "status": "ok", **{k: result[k] for k in SHOWN},
                     "max_abs_diff": float((output - reference).abs().max()),
                     "reference_abs_max": float(reference.abs().max())})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    best = min((r for r in rows if r["status"] == "ok"), key=lambda r: r["median_s"])
    return {"variants": rows, "best": best["name"], "best_mfu": best["mfu"], "best_median_s": best["median_s"]}
