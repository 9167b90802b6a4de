"""How the training loop talks to the parallelism: one backend object, chosen once.

The loop calls the same few methods whatever runs underneath: ``autocast``, ``accumulate``,
``backward``, ``apply_gradients``, ``discard_gradients``, ``optimizer_state`` and
``load_optimizer_state``, ``weights_loaded``.  ``AccelerateBackend`` covers one process and DDP
(accelerate wraps the model); ``ZeroBackend`` covers DeepSpeed ZeRO-1/2 through accelerate.

DeepSpeed needs care that the DDP path does not.  accelerate's DeepSpeed path steps the optimizer
inside ``backward`` at every micro-batch unless it is told where the accumulation boundary is,
needs the micro-batch size up front, and DeepSpeed's optimizer ``state_dict`` holds Python objects
(a loss scaler, an enum, slice mappings) that a ``weights_only`` load refuses.  So:

- ``configure`` writes the recipe's micro-batch, accumulation and clipping into the DeepSpeed
  config before ``prepare``, so the YAML need not repeat them (and cannot contradict them), and
  keeps the DDP path's precision (fp32 weights, bf16 autocast);
- the backend marks the boundary itself and calls ``engine.step()`` after the loop's NaN guard;
- ``optimizer_state`` / ``load_optimizer_state`` keep only tensors and primitives, one entry per
  rank (each rank owns a partition), and put the live loss scaler back on load.

ZeRO-3 is refused: it partitions the parameters themselves, while EMA, validation and the
checkpoints read whole trainable tensors on each rank.  The trainable part here (heads, LoRA) is
small, and the frozen 5B backbone fits each GPU in bf16, so ZeRO-3 would buy nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any

import torch

from stages.trainer.config import ConfigError

log = logging.getLogger(__name__)

_OBJECT_KEYS = ("loss_scaler", "param_slice_mappings")  # live objects: rebuilt, not saved


def is_deepspeed(accelerator: Any) -> bool:
    return str(accelerator.distributed_type).endswith("DEEPSPEED")


def requested() -> bool:
    """Whether ``accelerate launch`` was given a DeepSpeed config (it exports this variable)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def configure(accelerator: Any, batch_size: int, grad_accum: int, grad_clip: float) -> torch.dtype | None:
    """Put the recipe's batch geometry and clipping into the DeepSpeed config (before ``prepare``)
    and return the autocast dtype the loop must use (None: full precision).

    Precision stays what it is without DeepSpeed: fp32 weights under bf16 autocast.  DeepSpeed's
    own bf16 mode would cast the weights to bf16, so validation, EMA and the exported weights would
    differ from the DDP path, and fp32 inputs would meet bf16 layers outside the training step.
    ZeRO still shards the gradients and the AdamW state, which is what it is here for."""
    if not is_deepspeed(accelerator):
        return None
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    stage = int(ds.get("zero_optimization", {}).get("stage", 0))
    if stage not in (1, 2):
        raise ConfigError(f"DeepSpeed ZeRO stage {stage} is not supported: use stages/configs/accelerate_zero2.yaml "
                         "(ZeRO-3 partitions the trainable weights that EMA, validation and checkpoints read whole)")
    if _enabled(ds, "fp16"):
        raise ConfigError("DeepSpeed with fp16 is not supported: launch with --mixed_precision bf16 (or no)")
    dtype = torch.bfloat16 if _enabled(ds, "bf16") else None
    ds["bf16"] = {"enabled": False}
    ds["train_micro_batch_size_per_gpu"] = batch_size
    ds["gradient_accumulation_steps"] = grad_accum
    ds["train_batch_size"] = batch_size * grad_accum * accelerator.num_processes
    ds["gradient_clipping"] = grad_clip
    log.info("DeepSpeed ZeRO-%d: micro-batch %d, accumulation %d, clip %g, fp32 weights, autocast %s",
             stage, batch_size, grad_accum, grad_clip, dtype)
    return dtype


def match_ddp_forward(engine: Any, device: torch.device, dtype: torch.dtype | None) -> None:
    """Wrap the module's forward as accelerate does on the DDP path: under autocast, returning fp32
    outputs.  Without it the losses ran on bf16 outputs (a ZeRO-2 run drifted from DDP from the
    first step) and validation and probes, which call the module outside the loop's autocast,
    ran in another precision than on DDP."""
    if dtype is not None:
        from accelerate.utils import convert_outputs_to_fp32

        forward = torch.autocast(device.type, dtype=dtype)(engine.module.forward)
        engine.module.forward = convert_outputs_to_fp32(forward)


def _enabled(ds: dict, section: str) -> bool:
    return str(ds.get(section, {}).get("enabled", False)).lower() in ("true", "auto")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def zero_optimizer(optimizer: Any) -> Any:
    """DeepSpeed's ZeRO optimizer behind accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def _primitive_attrs(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if isinstance(v, (bool, int, float))}


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def optimizer_state(optimizer: Any) -> dict[str, Any]:
    """This rank's ZeRO partition state as CPU tensors and primitives (loads with weights_only=True)."""
    zero = zero_optimizer(optimizer)
    state = zero.state_dict()
    clean = {k: _to_cpu(v) for k, v in state.items() if k not in _OBJECT_KEYS}
    clean["zero_stage"] = int(state["zero_stage"])
    clean["loss_scaler_attrs"] = _primitive_attrs(state["loss_scaler"])
    return clean


def load_optimizer_state(optimizer: Any, per_rank: list[dict[str, Any]], rank: int) -> None:
    """Restore every partition's state saved by ``optimizer_state`` (same number of ranks), including
    the fp32 master weights, which are more precise than the bf16 module weights."""
    from deepspeed.runtime.zero.config import ZeroStageEnum

    zero = zero_optimizer(optimizer)
    counts = zero.partition_count
    partitions = int(counts[0] if isinstance(counts, (list, tuple)) else counts)
    if len(per_rank) != partitions:
        raise ConfigError(f"the checkpoint's ZeRO optimizer state has {len(per_rank)} partitions but this run has "
                           f"{partitions}: resume with the same number of processes")
    restored = []
    for saved in per_rank:
        state = {k: v for k, v in saved.items() if k != "loss_scaler_attrs"}
        state["zero_stage"] = ZeroStageEnum(saved["zero_stage"])
        state["loss_scaler"] = zero.loss_scaler
        restored.append(state)
    for key, value in per_rank[rank]["loss_scaler_attrs"].items():
        setattr(zero.loss_scaler, key, value)
    zero.load_state_dict(restored, load_optimizer_states=True, load_from_fp32_weights=True)


def follow_module_weights(optimizer: Any) -> None:
    """After weights were loaded into the module (checkpoint.init_from), make ZeRO's fp32 master
    partitions follow them; otherwise the next step would write the old weights back."""
    restore = getattr(zero_optimizer(optimizer), "_restore_from_bit16_weights", None)
    if restore is None:
        raise ConfigError("checkpoint.init_from under DeepSpeed needs a ZeRO optimizer that can refresh its "
                          "master weights from the module (DeepSpeed's _restore_from_bit16_weights)")
    restore()


def poison(loss: torch.Tensor) -> torch.Tensor:
    """A loss whose gradients are all NaN: DeepSpeed's own overflow check then skips the step and
    clears the accumulated gradients, which is the only clean way to drop a ZeRO step."""
    return loss * float("nan")


def check_skipped(engine: Any) -> None:
    if not getattr(engine.optimizer, "overflow", False):
        raise RuntimeError("DeepSpeed applied an optimizer step although the loss was non-finite")


def make_accelerator():
    """accelerate's Accelerator, told about CPU-only machines.  Launched with several processes on
    CPUs, accelerate initialises gloo but, unless told, believes it is one process, so every rank
    would train alone on all the data and all would write the same checkpoints: DDP needs
    ``cpu=True``, and DeepSpeed (which ``cpu=True`` would silently turn into DDP) needs the gloo
    backend named.  GPUs need neither."""
    from accelerate import Accelerator, InitProcessGroupKwargs

    cuda = torch.cuda.is_available()
    if requested():
        launched = "LOCAL_RANK" in os.environ  # a process group exists only under a launcher
        gloo = [InitProcessGroupKwargs(backend="gloo")] if launched and not cuda else []
        accelerator = Accelerator(kwargs_handlers=gloo)
    else:
        accelerator = Accelerator(cpu=not cuda)
    log.info("process %d of %d on %s (%d CPU threads)", accelerator.process_index, accelerator.num_processes,
             accelerator.device, torch.get_num_threads())
    return accelerator


class AccelerateBackend:
    """One process or DDP: accelerate wraps the model, scales nothing, and syncs on the last
    micro-batch only (``no_sync`` before it)."""

    def __init__(self, accelerator: Any, model: torch.nn.Module, optimizer: Any) -> None:
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.accelerator.autocast()

    def accumulate(self, last: bool) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)

    def backward(self, loss: torch.Tensor, last: bool, total: torch.Tensor) -> None:
        """``loss`` is already divided by the accumulation count; ``total`` (the step's loss so far)
        matters only to backends that must drop a step inside backward."""
        self.accelerator.backward(loss)

    def apply_gradients(self, grad_clip: float) -> float | None:
        """Clip, update (unless the gradient norm is not finite) and clear; returns the norm before
        clipping.  With clipping off (0) the norm is still computed: it is what catches a NaN
        gradient under a finite loss."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = float(self.accelerator.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf))
        if math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def discard_gradients(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_state(self) -> Any:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: Any) -> None:
        self.optimizer.load_state_dict(state)

    def weights_loaded(self) -> None:
        """The optimizer reads the module's weights directly: nothing to refresh."""


class ZeroBackend(AccelerateBackend):
    """DeepSpeed ZeRO-1/2: ``model`` is the engine, which clips, steps and clears itself."""

    def __init__(self, accelerator: Any, model: Any, optimizer: Any, dtype: torch.dtype | None) -> None:
        super().__init__(accelerator, model, optimizer)
        self.dtype = dtype
        """accelerate does not autocast under DeepSpeed, so the backend does: bf16, or None for fp32."""

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.accelerator.device, self.dtype)

    def accumulate(self, last: bool) -> contextlib.AbstractContextManager:
        self.model.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, last: bool, total: torch.Tensor) -> None:
        # A non-finite step is dropped by poisoning its last backward (DeepSpeed's overflow check
        # then skips it); the loss is already divided by grad_accum, so the engine must not divide.
        if last and not bool(torch.isfinite(total)):
            loss = poison(loss)
        self.model.backward(loss, scale_wrt_gas=False)

    def apply_gradients(self, grad_clip: float) -> float | None:
        self.model.step()  # clips (gradient_clipping = grad_clip); skips the update on a non-finite norm
        self.optimizer.step()  # accelerate's DeepSpeed wrapper: a no-op that tells the LR scheduler a step was taken
        norm = self.model.get_global_grad_norm()
        if getattr(self.model.optimizer, "overflow", False):
            return float("nan")
        return None if norm is None else float(norm)

    def discard_gradients(self) -> None:
        self.model.step()
        check_skipped(self.model)

    def optimizer_state(self) -> Any:
        """Every rank's partition, gathered (a collective: call on every rank)."""
        from stages.trainer.rng import all_ranks

        return all_ranks(optimizer_state(self.optimizer))

    def load_optimizer_state(self, state: Any) -> None:
        load_optimizer_state(self.optimizer, state, self.accelerator.process_index)

    def weights_loaded(self) -> None:
        follow_module_weights(self.optimizer)


def prepare(accelerator: Any, model: torch.nn.Module, optimizer: Any, batch_size: int, grad_accum: int,
            grad_clip: float) -> AccelerateBackend:
    """Wrap model and optimizer for the launch at hand and return the backend the loop drives."""
    dtype = configure(accelerator, batch_size, grad_accum, grad_clip)
    model, optimizer = accelerator.prepare(model, optimizer)
    if not is_deepspeed(accelerator):
        return AccelerateBackend(accelerator, model, optimizer)
    match_ddp_forward(model, accelerator.device, dtype)
    return ZeroBackend(accelerator, model, optimizer, dtype)
