"""Explicit forward over the Wan DiT that returns intermediate block outputs ("taps").

Why not ``WanModel.forward``: in diffsynth 2.1.12 it does not handle TI2V-5B's per-token
timesteps; the pipeline's ``model_fn_wan_video`` does, but returns only the final prediction.
Forward hooks would fire twice under gradient checkpointing. So this module re-states the same
computation step by step (and a test checks it matches ``model_fn_wan_video`` to 1e-5 in fp32):

    per-token timesteps -> sinusoidal -> time_embedding -> t (B, L, dim) -> time_projection -> t_mod
    context -> text_embedding
    latents (B, 48, T', H', W') -> Conv3d patchify -> tokens (B, L, dim), L = F'*H'*W', order (f, h, w)
    3-D RoPE tables -> freqs (L, 1, head_dim/2) complex
    for each block: x = block(x, context, t_mod, freqs)   [tap outputs collected here]
    head(x, t) -> unpatchify -> velocity (B, 48, T', H', W')

TI2V conditioning: the first latent frame is the clean image latent, so its tokens get timestep 0
while all other tokens get t. Flow matching (Wan): x_t = (1 - sigma) x0 + sigma * eps with
sigma = t / 1000; the model predicts eps - x0. Noise comes from a seeded CPU ``torch.Generator``
so stage-1 features are a deterministic function of the sample and can be cached.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class ExtractionConfig:
    """How stage-1 features are extracted from the frozen DiT."""

    timestep: float = 100.0
    """Diffusion timestep in [0, 1000] used for extraction (sigma = timestep / 1000). Low noise is
    the stronger default for dense correspondence/depth; raise it to probe motion at high noise."""
    noise_seed: int = 0
    """Seed of the CPU generator drawing the noise; fixed so features can be cached."""
    taps: tuple[int, ...] | None = None
    """0-based blocks whose outputs are returned; None = the preset's ``default_taps``."""
    return_output: bool = False
    """Also run the head and return the denoiser (velocity) prediction."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.timestep <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"timestep must lie in [0, {NUM_TRAIN_TIMESTEPS}], got {self.timestep}")


@dataclass
class DiTFeatures:
    """Result of :func:`dit_forward`.

    ``taps[i]`` is the output of block ``i`` as a grid (B, dim, F', H', W'); ``output`` is the
    velocity prediction (B, out_dim, T', H, W) in latent space, or None.
    """

    taps: dict[int, torch.Tensor] = field(default_factory=dict)
    output: torch.Tensor | None = None
    grid: tuple[int, int, int] = (0, 0, 0)

    def as_list(self) -> list[torch.Tensor]:
        """Tapped grids in ascending block order (what heads consume)."""
        return [self.taps[k] for k in sorted(self.taps)]


def sigma_from_timestep(timestep: float | torch.Tensor) -> float | torch.Tensor:
    """diffsynth's Wan scheduler uses timestep = sigma * 1000 (the shift acts on the sigma grid)."""
    return timestep / NUM_TRAIN_TIMESTEPS


def shifted_sigma(u: float | torch.Tensor, shift: float = 5.0) -> float | torch.Tensor:
    """Wan's shift of a uniform noise level u in [0, 1]: sigma = s*u / (1 + (s-1)*u).

    ``FlowMatchScheduler('Wan').set_timesteps`` spaces u linearly and applies this, so training
    timesteps drawn from its grid are ``1000 * shifted_sigma(u)``.
    """
    return shift * u / (1 + (shift - 1) * u)


def make_noise(shape: Sequence[int], seed: int, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise from a seeded CPU generator (identical on every device)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def noisy_latents(x0: torch.Tensor, sigma: float | torch.Tensor, noise: torch.Tensor,
                  clean_first_frame: bool = True) -> torch.Tensor:
    """x_t = (1 - sigma) x0 + sigma * noise, first latent frame kept clean for TI2V.

    x0, noise: (B, C, T', H', W'); sigma: float or (B,).
    """
    if isinstance(sigma, torch.Tensor) and sigma.ndim == 1:
        sigma = sigma.to(x0).view(-1, 1, 1, 1, 1)
    xt = (1 - sigma) * x0 + sigma * noise
    if clean_first_frame:
        xt = torch.cat([x0[:, :, :1], xt[:, :, 1:]], dim=2)
    return xt


def _timestep_vector(timestep: float | torch.Tensor, batch: int, device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    """(1,) when one timestep is shared by the batch, else (B,). Decided from the shape only, so
    no device sync (and it works on meta tensors)."""
    ts = torch.as_tensor(timestep, dtype=dtype, device=device).flatten()
    if ts.numel() not in (1, batch):
        raise ValueError(f"timestep must be a scalar or have {batch} entries, got {ts.numel()}")
    return ts


def time_modulation(dit: nn.Module, timestep: float | torch.Tensor, batch: int,
                    grid: tuple[int, int, int], first_frame_clean: bool, device: torch.device,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token time embedding ``t`` (B', L, dim) and block modulation ``t_mod`` (B', L, 6, dim).

    Only two distinct timesteps exist per sample (0 for the clean first frame, t elsewhere), so
    we embed those and gather, instead of embedding all L tokens as diffsynth does (same values).
    B' is 1 when a single timestep is given (broadcast over the batch, as diffsynth does).
    """
    from diffsynth.models.wan_video_dit import sinusoidal_embedding_1d

    f, h, w = grid
    ts = _timestep_vector(timestep, batch, device, dtype)
    table = torch.stack([torch.zeros_like(ts), ts], dim=1)  # (B', 2): [first frame, rest]
    emb = dit.time_embedding(sinusoidal_embedding_1d(dit.freq_dim, table.flatten()))
    emb = emb.view(ts.shape[0], 2, -1)
    index = torch.ones(f * h * w, dtype=torch.long, device=device)
    if first_frame_clean:
        index[: h * w] = 0
    t = emb[:, index]  # (B', L, dim)
    t_mod = dit.time_projection(t).unflatten(2, (6, dit.dim))
    return t, t_mod


def rope_freqs(dit: nn.Module, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """3-D rotary tables for an (f, h, w) token grid: (L, 1, head_dim/2) complex."""
    f, h, w = grid
    return torch.cat([
        dit.freqs[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
        dit.freqs[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
        dit.freqs[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, 1, -1).to(device)


def _run_block(block: nn.Module, enter: Callable[[], AbstractContextManager], *args: torch.Tensor) -> torch.Tensor:
    with enter():
        return block(*args)


def dit_forward(dit: nn.Module, latents: torch.Tensor, timestep: float | torch.Tensor,
                context: torch.Tensor, taps: Sequence[int] = (), return_output: bool = True,
                gradient_checkpointing: bool = False, first_frame_clean: bool = True,
                block_context: Callable[[], AbstractContextManager] | None = None) -> DiTFeatures:
    """Run the DiT on (noisy) latents and collect the outputs of the blocks in ``taps``.

    Args:
        latents: (B, in_dim, T', H', W'); for TI2V the first latent frame is the clean image.
        timestep: scalar or (B,) in [0, 1000].
        context: (B, text_len, text_dim) raw text-encoder output (embedded here).
        taps: block indices to return as (B, dim, F', H'/2, W'/2) grids.
        return_output: run the remaining blocks and the head; otherwise stop after the last tap.
        gradient_checkpointing: recompute each block in backward (stage 2, LoRA training).
        first_frame_clean: TI2V per-token timesteps (timestep 0 on the first latent frame).
        block_context: entered around every block call, including its recomputation in backward
            (e.g. LoRA adapters switched off: a context around the whole call would have been left
            by the time checkpointed blocks are recomputed).
    """
    taps = sorted({int(t) for t in taps})
    n_layers = len(dit.blocks)
    if any(not 0 <= t < n_layers for t in taps):
        raise ValueError(f"taps {taps} outside 0..{n_layers - 1}")
    if not taps and not return_output:
        raise ValueError("nothing requested: give taps or return_output=True")
    if latents.shape[0] != context.shape[0]:
        raise ValueError("latents and context batch sizes differ")
    batch = latents.shape[0]

    x = dit.patchify(latents)  # (B, dim, F', H', W')
    grid = tuple(int(s) for s in x.shape[2:])
    x = rearrange(x, "b c f h w -> b (f h w) c").contiguous()
    t, t_mod = time_modulation(dit, timestep, batch, grid, first_frame_clean, x.device, latents.dtype)
    context = dit.text_embedding(context)
    freqs = rope_freqs(dit, grid, x.device)

    last = n_layers - 1 if return_output else taps[-1]
    out = DiTFeatures(grid=grid)  # type: ignore[arg-type]
    enter = block_context or nullcontext
    for i, block in enumerate(dit.blocks[: last + 1]):
        if gradient_checkpointing and torch.is_grad_enabled():
            x = checkpoint(_run_block, block, enter, x, context, t_mod, freqs, use_reentrant=False)
        else:
            x = _run_block(block, enter, x, context, t_mod, freqs)
        if i in taps:
            out.taps[i] = rearrange(x, "b (f h w) c -> b c f h w", f=grid[0], h=grid[1], w=grid[2])
    if return_output:
        y = dit.head(x, t)  # t (B' in {1, B}, L, dim) broadcasts over the batch
        out.output = dit.unpatchify(y, grid)
    return out


def extract_features(dit: nn.Module, x0: torch.Tensor, context: torch.Tensor,
                     cfg: ExtractionConfig, taps: Sequence[int]) -> DiTFeatures:
    """Stage-1 extraction: noise clean latents x0 (B, C, T', H', W') at ``cfg.timestep`` with
    seeded noise (first frame clean), then :func:`dit_forward`.

    Every sample gets the same noise draw (seeded per sample, not per batch), so a sample's features
    do not depend on which batch it was in -- the property the stage-1 feature cache relies on.
    """
    noise = make_noise(x0.shape[1:], cfg.noise_seed, device=x0.device, dtype=x0.dtype)
    noise = noise.unsqueeze(0).expand_as(x0)
    xt = noisy_latents(x0, float(sigma_from_timestep(cfg.timestep)), noise, clean_first_frame=True)
    return dit_forward(dit, xt, cfg.timestep, context, taps=taps, return_output=cfg.return_output)
