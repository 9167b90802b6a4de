"""What the flow and depth heads share: neck, output branch, convex upsampler, optional RGB path."""

from __future__ import annotations

import torch
from torch import nn

from heads.blocks import Upsampler, parameter_summary, run_per_frame
from heads.config import HeadConfig
from heads.neck import DPTNeck, check_taps
from heads.refine import RGBRefiner


class DenseHead(nn.Module):
    """Common skeleton; subclasses define ``forward`` and the per-frame ``_decode``.

    out_channels: channels of the prediction (2 for flow, 1 for log depth);
    refiner_inputs: channels the RGB refiner reads (frames plus the current estimate).
    """

    kind = ""

    def __init__(self, cfg: HeadConfig, out_channels: int, refiner_inputs: int) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.features
        self.neck = DPTNeck(cfg)
        self.branch = nn.Sequential(
            nn.Conv2d(c, c // 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c // 2, out_channels, 3, padding=1)
        )
        self.upsample = Upsampler(c, cfg.out_stride, cfg.convex_upsample, cfg.mask_scale)
        self.refiner = None
        if cfg.rgb_refine:
            self.refiner = RGBRefiner(refiner_inputs, c, out_channels, cfg.rgb_channels, cfg.rgb_refine_stride)
        self.frame_chunk, self.gradient_checkpointing, self.channels_last = 0, False, False

    def neck_frames(self, taps: list[torch.Tensor],
                    frame_index: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Neck features (B, T or K, features, H/s, W/s) and the output size (B, T or K, H, W).

        The neck always sees every latent frame (its temporal attention needs them); selecting
        frames happens after it, so a selected frame's prediction equals the whole-video one.
        """
        cfg = self.cfg
        b, f, h, w = check_taps(taps, cfg)
        feats = self.neck(taps)
        t = cfg.num_frames(f)
        if frame_index is not None:
            if frame_index.dim() != 2 or frame_index.shape[0] != b:
                raise ValueError(f"frame_index must be (B={b}, K), got {tuple(frame_index.shape)}")
            # Range-checked only on the host: on a GPU the check would stall every step on a sync.
            on_host = frame_index.device.type == "cpu" and frame_index.numel() > 0
            if on_host and not 0 <= int(frame_index.min()) <= int(frame_index.max()) < t:
                raise ValueError(f"frame_index must lie in [0, {t}) for {f} latent frames")
            frame_index = frame_index.to(feats.device, torch.long)
            feats = feats[torch.arange(b, device=feats.device)[:, None], frame_index]
            t = frame_index.shape[1]
        return feats, (b, t, cfg.spatial_factor * h, cfg.spatial_factor * w)

    def set_memory_options(self, frame_chunk: int = 0, gradient_checkpointing: bool = False,
                           channels_last: bool = False) -> None:
        """Decode full resolution `frame_chunk` frames at a time (0 = all), optionally checkpointed,
        optionally in channels-last layout (cuDNN's fast path for bf16 convolutions with few channels).

        Runtime-only (not saved): results are the same up to float rounding; only peak memory and
        speed change.
        """
        self.frame_chunk, self.gradient_checkpointing = frame_chunk, gradient_checkpointing
        self.channels_last = channels_last
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def decode_frames(self, feats: torch.Tensor, *rgb: torch.Tensor | None) -> torch.Tensor:
        """The per-frame ``_decode`` over (N, ...) frames, with the memory options applied."""
        if self.channels_last:
            feats = feats.contiguous(memory_format=torch.channels_last)
            rgb = tuple(None if x is None else x.contiguous(memory_format=torch.channels_last) for x in rgb)
        return run_per_frame(self._decode, self.frame_chunk, self.gradient_checkpointing, feats, *rgb)

    def summary(self) -> dict[str, int]:
        """Trainable parameters per sub-module (logged)."""
        return parameter_summary(self, type(self).__name__)
