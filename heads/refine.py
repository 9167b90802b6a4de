"""Light full-resolution RGB-guided refinement (a small U-Net with skips).

Backbone tokens cover 32x32 px, so small moving objects (~1 % of the image) are below the token
grid; at tiny scale the features alone did not generalise for flow. This path
sees the pixels themselves and predicts a residual on top of the upsampled head output. Its
deepest level sits at the neck stride and receives the neck features there, so it stays cheap
(widths 16..64) while knowing what the backbone knows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class RGBRefiner(nn.Module):
    """U-Net: inputs at stride r + stride-s guide features -> full-res residual (zero at init).

    widths[j] is the width at stride r * 2**j; len(widths) = log2(s / r) + 1 where s is the
    guide's stride and r = ``stride`` (1 = full resolution).  Callers bring their full-resolution
    inputs to stride r with ``pool``; the residual comes back at full resolution.
    """

    def __init__(self, in_channels: int, guide_channels: int, out_channels: int, widths: tuple[int, ...],
                 stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.down = nn.ModuleList()
        prev = in_channels
        for j, wd in enumerate(widths):
            self.down.append(nn.Sequential(_conv(prev, wd, stride=1 if j == 0 else 2), _conv(wd, wd)))
            prev = wd
        self.guide = nn.Conv2d(guide_channels, widths[-1], 1)
        self.up = nn.ModuleList(
            nn.Sequential(_conv(widths[j + 1] + widths[j], widths[j]), _conv(widths[j], widths[j]))
            for j in range(len(widths) - 1)
        )
        self.out = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        # Zero-init: the refined output starts equal to the upsampled head output.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Full resolution -> the refiner's stride (area average; identity at stride 1)."""
        return F.avg_pool2d(x, self.stride) if self.stride > 1 else x

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """The refiner's stride -> full resolution (bilinear; identity at stride 1)."""
        return F.interpolate(x, scale_factor=self.stride, mode="bilinear", align_corners=False) if self.stride > 1 else x

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """x: (N, in, H/r, W/r); guide: (N, guide_channels, H/s, W/s) -> (N, out, H, W)."""
        skips = []
        for j, block in enumerate(self.down):
            x = block(x)
            if j == len(self.down) - 1:
                g = self.guide(guide)
                if g.shape[-2:] != x.shape[-2:]:
                    g = F.interpolate(g, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = x + g
            skips.append(x)
        for j in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[j].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[j](torch.cat([x, skips[j]], dim=1))
        return self.upsample(self.out(x))


def previous_frames(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> frame t-1 for every t; frame 0 pairs with itself (its flow target is invalid)."""
    return torch.cat([frames[:, :1], frames[:, :-1]], dim=1)


def check_frames(frames: torch.Tensor | None, shape: tuple[int, int, int, int], name: str = "frames") -> torch.Tensor:
    """Validate RGB frames for the refinement path: (B, T, 3, H, W) in [0, 1]."""
    b, t, h, w = shape
    if frames is None:
        raise ValueError(
            f"this head was built with rgb_refine=True and needs {name} (B, T, 3, H, W) in [0, 1]; "
            "pass them, or build the head with rgb_refine=False"
        )
    if tuple(frames.shape) != (b, t, 3, h, w):
        raise ValueError(f"{name} must have shape {(b, t, 3, h, w)} to match the taps, got {tuple(frames.shape)}")
    return frames
