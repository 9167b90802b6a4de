"""The project's single optical-flow convention, the conversion from the file convention,
backward warping, and composition of one-step flows over a sampling stride.

Internal convention (used everywhere after loading): **backward flow in pixels, +x right,
+y down**, stored at the pixel of the *current* frame t:

    I_t(p) ≈ I_{t-1}(p + f_t(p))

Replicator documents its motion vectors as the motion between the previous and the current
frame with x left-positive and y up-positive.  Motion from t-1 to t, negated on both axes, is
exactly the displacement from the current pixel back to the previous one, so with that
documentation the file values *are* the internal backward flow (signs +1, +1).  Because this
must hold on real data rather than on paper, the signs are a setting, and
``scripts/check_flow_convention.py`` measures which setting warps frames best on a data set.
Two more settings cover files that differ from the documentation in ways a sign cannot: the
units (pixels, or fractions of the image size) and the timing (each file one step early).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MOTION_BOUNDARY_TOLERANCE_PX = 0.5
OCCLUSION_RELATIVE_DEPTH_JUMP = 0.1

CONVENTIONS: dict[str, tuple[float, float]] = {
    # Replicator as documented: motion prev->cur, x left+, y up+  ==  backward flow, x right+, y down+.
    "replicator": (1.0, 1.0),
    # Files that store motion prev->cur with x right+, y down+ at the current pixel.
    "forward_xy_down": (-1.0, -1.0),
    "flip_x": (-1.0, 1.0),
    "flip_y": (1.0, -1.0),
}

FLOW_UNITS: dict[str, tuple[float, float]] = {
    # (a, b): one file unit is a + b * size pixels along an axis of that size (width or height).
    "pixels": (1.0, 0.0),
    "fraction": (0.0, 1.0),  # fractions of the image width / height
    "ndc": (0.0, 0.5),  # [-1, 1] across the image: 2 units span the width / height
}

FLOW_TIMINGS: dict[str, int] = {
    # File index minus simulator step: where the flow of step t (motion t-1 -> t) is stored.
    "current": 0,  # file t (as documented)
    "shifted": -1,  # file t-1: every file one step early (file t holds the motion t -> t+1)
}


def unit_scale(units: str, height: int, width: int) -> tuple[float, float]:
    """(x, y) factors that turn file values in ``units`` into pixels of an (H, W) file."""
    if units not in FLOW_UNITS:
        raise ValueError(f"unknown flow units {units!r}; choose from {sorted(FLOW_UNITS)}")
    a, b = FLOW_UNITS[units]
    return a + b * width, a + b * height


@dataclass(frozen=True)
class FlowConvention:
    """How file motion vectors map to the internal backward flow: per-axis sign, units, timing."""

    name: str = "replicator"
    units: str = "pixels"
    timing: str = "current"

    def __post_init__(self) -> None:
        if self.name not in CONVENTIONS:
            raise ValueError(f"unknown flow convention {self.name!r}; choose from {sorted(CONVENTIONS)}")
        unit_scale(self.units, 1, 1)
        if self.timing not in FLOW_TIMINGS:
            raise ValueError(f"unknown flow timing {self.timing!r}; choose from {sorted(FLOW_TIMINGS)}")

    def to_internal(self, file_flow: np.ndarray) -> np.ndarray:
        """(2, H, W) file channels 0, 1 (``read_flow_file``) -> (2, H, W) internal backward flow.

        The units are converted with the file's own size, before any resize of the window.
        Replicator's signs in pixels return ``file_flow`` itself, not a copy.
        """
        sx, sy = CONVENTIONS[self.name]
        ux, uy = unit_scale(self.units, *file_flow.shape[-2:])
        if (sx * ux, sy * uy) == (1.0, 1.0):
            return file_flow
        return file_flow * np.asarray([sx * ux, sy * uy], dtype=np.float32)[:, None, None]

    def file_index(self, step: int) -> int:
        """Index of the file holding the one-step flow of simulator ``step`` (motion step-1 -> step)."""
        index = step + FLOW_TIMINGS[self.timing]
        if index < 0:
            raise ValueError(f"step {step} has no motion-vector file with timing {self.timing!r}")
        return index


def pixel_grid(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(2, H, W) pixel coordinates (x, y) with pixel centres on integers."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys])


def _normalised(positions: torch.Tensor) -> torch.Tensor:
    """(..., 2, H, W) pixel positions -> (..., H, W, 2) grid_sample coordinates.

    Written straight into the interleaved layout: stacking x and y afterwards cost 4x as much,
    and the loader builds one grid per composed step.
    """
    height, width = positions.shape[-2:]
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=positions.dtype,
                         device=positions.device)
    grid = torch.empty((*positions.shape[:-3], height, width, 2), dtype=positions.dtype, device=positions.device)
    return torch.mul(positions.movedim(-3, -1), scale, out=grid).sub_(1.0)


def inside_frame(positions: torch.Tensor) -> torch.Tensor:
    """(..., 2, H, W) positions -> (..., H, W) bool: inside the image (pixel-centre extent)."""
    height, width = positions.shape[-2:]
    x, y = positions[..., 0, :, :], positions[..., 1, :, :]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def backward_warp(
    previous: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``previous`` at p + flow(p): the prediction of the current frame.

    previous: (B, C, H, W); flow: (B, 2, H, W) internal convention.
    Returns (warped (B, C, H, W), inside (B, H, W) bool).
    """
    grid = pixel_grid(*flow.shape[-2:], device=flow.device) + flow
    warped = F.grid_sample(previous, _normalised(grid), mode=mode, padding_mode="border", align_corners=True)
    return warped, inside_frame(grid)


def _sample_at(values: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """values (1, C, H, W) sampled at a grid_sample grid (1, H, W, 2) (see ``_normalised``)."""
    return F.grid_sample(values, grid, mode=mode, padding_mode="border", align_corners=True)


def _same_surface(
    chain: tuple[torch.Tensor, torch.Tensor], seen: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """True where the distance seen at the chained position continues the tracked surface.

    A tracked point moves little along its ray in one simulator step; a jump of more than
    OCCLUSION_RELATIVE_DEPTH_JUMP (or a switch between background and an object) means the
    chain landed on a different surface, i.e. the point is hidden in that frame.
    """
    (chain_d, chain_v), (seen_d, seen_v) = chain, seen
    both = chain_v & seen_v
    jump = (seen_d - chain_d).abs() <= OCCLUSION_RELATIVE_DEPTH_JUMP * torch.where(both, chain_d, torch.ones_like(chain_d))
    return (both & jump) | (~chain_v & ~seen_v)


def compose_backward(
    one_step: list[np.ndarray],
    distances: list[np.ndarray] | None = None,
    distance_valid: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Chain one-step backward flows into the flow over all of them.

    one_step: [f_{s+1}, ..., f_{s+k}], each (2, H, W) internal flow of step s+i (motion from
    s+i-1 to s+i); distances / distance_valid: the (H, W) distance maps and masks of the
    same steps s+1 ... s+k (optional but recommended).
    Returns (F, valid): F (2, H, W) maps frame s+k back to frame s.  ``valid`` (H, W) is
    False where the chain leaves the frame, straddles a motion boundary (bilinear and
    nearest samples disagree) or, with distances, passes through a frame where the point is
    hidden behind another surface: there the intermediate flow belongs to the occluder, so
    the composed target would be wrong rather than merely unknown.
    """
    flows = [torch.from_numpy(np.ascontiguousarray(f)).unsqueeze(0) for f in one_step]
    total = flows[-1].clone()
    height, width = total.shape[-2:]
    valid = torch.ones(1, height, width, dtype=torch.bool)
    base = pixel_grid(height, width)
    # What the chain reads at a position with nearest sampling, one grid_sample per step: the
    # step's flow (channels 0, 1) and, with distances, its distance and mask (channels 2, 3).
    nearest_reads = flows[:-1]
    if distances is not None:
        maps = [(torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))[None, None],
                 torch.from_numpy(np.ascontiguousarray(m))[None, None].float()) for d, m in zip(distances, distance_valid)]
        nearest_reads = [torch.cat([f, d, m], dim=1) for f, (d, m) in zip(flows[:-1], maps[:-1])]
        chain = (maps[-1][0][:, 0], maps[-1][1][:, 0] > 0.5)
    for i in range(len(flows) - 2, -1, -1):
        position = base + total
        valid &= inside_frame(position)
        grid = _normalised(position)
        nearest = _sample_at(nearest_reads[i], grid, "nearest")
        if distances is not None:
            seen = (nearest[:, 2], nearest[:, 3] > 0.5)
            valid &= _same_surface(chain, seen)
            chain = seen
        smooth = _sample_at(flows[i], grid, "bilinear")
        gap = smooth - nearest[:, :2]  # squared norm by hand: torch's vector norm over dim 1 is ~10x slower here
        valid &= gap[:, 0] * gap[:, 0] + gap[:, 1] * gap[:, 1] <= MOTION_BOUNDARY_TOLERANCE_PX**2
        total = total + smooth
    valid &= inside_frame(base + total)
    return total[0].numpy(), valid[0].numpy()
