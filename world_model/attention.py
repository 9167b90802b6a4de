"""Explicit attention-backend choice for diffsynth's Wan DiT.

``diffsynth.models.wan_video_dit.flash_attention`` silently takes the first installed backend:
FlashAttention 3, then 2, then SageAttention, then torch SDPA. SageAttention is an inference-only
quantised kernel, so training through it is wrong, and silently switching kernels between machines
makes numbers incomparable. We therefore set the module-level availability flags ourselves (the
function reads them at call time) and log the decision. The choice is process-wide because the
flags are module globals.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Literal

log = logging.getLogger(__name__)

Backend = Literal["auto", "flash_attn_3", "flash_attn_2", "sage", "sdpa"]

# diffsynth flag name per backend, in diffsynth's own priority order.
_FLAGS: dict[str, str] = {
    "flash_attn_3": "FLASH_ATTN_3_AVAILABLE",
    "flash_attn_2": "FLASH_ATTN_2_AVAILABLE",
    "sage": "SAGE_ATTN_AVAILABLE",
}
# Global name diffsynth's import binds for each kernel.
_DIFFSYNTH_GLOBAL: dict[str, str] = {
    "flash_attn_3": "flash_attn_interface",
    "flash_attn_2": "flash_attn",
    "sage": "sageattn",
}
_MODULES: dict[str, str] = {
    "flash_attn_3": "flash_attn_interface",
    "flash_attn_2": "flash_attn",
    "sage": "sageattention",
}


def installed_backends() -> list[str]:
    """Backends importable in this environment (``sdpa`` always is)."""
    found = [b for b, mod in _MODULES.items() if importlib.util.find_spec(mod) is not None]
    return found + ["sdpa"]


def set_attention_backend(backend: Backend = "auto", *, training: bool = True) -> str:
    """Make diffsynth's Wan DiT use exactly one attention kernel; return the one chosen.

    ``auto`` picks FlashAttention 3, then 2, then SDPA — SageAttention only when ``training`` is
    False. Asking for ``sage`` while training, or for a backend that is not installed, raises.
    """
    import diffsynth.models.wan_video_dit as wan_dit

    available = installed_backends()
    if backend == "auto":
        order = ["flash_attn_3", "flash_attn_2"] + ([] if training else ["sage"]) + ["sdpa"]
        chosen = next(b for b in order if b in available)
    else:
        if backend not in _FLAGS and backend != "sdpa":
            raise ValueError(f"unknown attention backend {backend!r}")
        if backend == "sage" and training:
            raise ValueError("SageAttention is inference-only; it must not be used for training")
        if backend not in available:
            raise RuntimeError(f"attention backend {backend!r} is not installed; available: {available}")
        chosen = backend
    for name, flag in _FLAGS.items():
        setattr(wan_dit, flag, name == chosen)
    if chosen != "sdpa" and not hasattr(wan_dit, _DIFFSYNTH_GLOBAL[chosen]):
        # diffsynth's kernel call refers to the name its own import bound; without it we would
        # fail later with a NameError in the middle of a forward.
        setattr(wan_dit, _FLAGS[chosen], False)
        raise RuntimeError(f"diffsynth did not import {chosen}; cannot select it")
    log.info("attention backend: %s (installed: %s, training=%s)", chosen, available, training)
    return chosen


def current_attention_backend() -> str:
    """The backend diffsynth's Wan DiT would use right now, by its own priority order."""
    import diffsynth.models.wan_video_dit as wan_dit

    for name, flag in _FLAGS.items():
        if getattr(wan_dit, flag):
            return name
    return "sdpa"


SdpaKernel = Literal["auto", "flash", "efficient", "cudnn", "math"]
_SDPA_SWITCHES: dict[str, str] = {
    "flash": "enable_flash_sdp",
    "efficient": "enable_mem_efficient_sdp",
    "cudnn": "enable_cudnn_sdp",
    "math": "enable_math_sdp",
}
SDPA_KERNELS: tuple[str, ...] = ("auto", *_SDPA_SWITCHES)


def set_sdpa_kernel(kernel: SdpaKernel = "auto") -> str:
    """Restrict torch SDPA (the ``sdpa`` backend) to one kernel, or let torch choose (``auto``).

    Process-wide, like the backend choice: torch's global switches, which the CPU's kernel choice
    reads too.  A kernel that cannot run a call (cuDNN or memory-efficient on a CPU, flash on an
    unsupported head size) then fails that call instead of falling back silently.
    """
    import torch

    if kernel not in SDPA_KERNELS:
        raise ValueError(f"unknown SDPA kernel {kernel!r}; choose from {SDPA_KERNELS}")
    for name, switch in _SDPA_SWITCHES.items():
        getattr(torch.backends.cuda, switch)(kernel in ("auto", name))
    log.info("SDPA kernel: %s", kernel)
    return kernel
