"""Classical optical-flow baselines (OpenCV DIS and Farneback) in the project's flow convention.

Zero flow is a weak baseline on moving pixels; a classical method computed from the same two frames
is what a reader expects a learned head to beat. The target at window frame t is backward flow
(data.flow): I_t(p) ~ I_{t-1}(p + f_t(p)). OpenCV's calc(I0, I1) returns f with
I0(p) ~ I1(p + f(p)), so the baselines run with I0 = frame t and I1 = frame t-1: the same pair,
the same direction and the same pixel grid as the target. Frame 0 has no previous frame: zero.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
"""DIS preset: MEDIUM (finest scale 1, 8 px patches at stride 3, 25 gradient-descent and 5
variational-refinement iterations): more accurate than FAST/ULTRAFAST, still cheap at 128^2."""

FARNEBACK_PARAMS = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
                    "poly_sigma": 1.2, "flags": 0}
"""Farneback settings: OpenCV's documented example values (3-level pyramid halving each level,
15 px averaging window, 3 iterations, 5-px polynomial neighbourhood with sigma 1.2)."""


def _gray_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) float RGB in [0, 1] -> (H, W) uint8 luma, the input both OpenCV methods take."""
    image = (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def dis_flow(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """(H, W) uint8 frames t and t-1 -> (H, W, 2) backward flow of frame t (DIS, DIS_PRESET)."""
    return cv2.DISOpticalFlow_create(DIS_PRESET).calc(current, previous, None)


def farneback_flow(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """(H, W) uint8 frames t and t-1 -> (H, W, 2) backward flow of frame t (FARNEBACK_PARAMS)."""
    return cv2.calcOpticalFlowFarneback(current, previous, None, **FARNEBACK_PARAMS)


CLASSICAL_FLOW_METHODS = {"dis": dis_flow, "farneback": farneback_flow}
"""Method name (the prefix of its metric keys) -> (current, previous) -> (H, W, 2) backward flow."""


def classical_backward_flow(rgb: torch.Tensor, method: str) -> torch.Tensor:
    """rgb (B, T, 3, H, W) in [0, 1] -> (B, T, 2, H, W) px, backward flow of each frame to the one
    before it in the window (frame 0: zero), in the convention of the window's flow target."""
    if method not in CLASSICAL_FLOW_METHODS:
        raise ValueError(f"unknown classical flow method {method!r}; choose from {sorted(CLASSICAL_FLOW_METHODS)}")
    flow_fn = CLASSICAL_FLOW_METHODS[method]
    batch, frames, _, height, width = rgb.shape
    out = torch.zeros(batch, frames, 2, height, width)
    for b in range(batch):
        gray = [_gray_uint8(rgb[b, t]) for t in range(frames)]
        for t in range(1, frames):
            out[b, t] = torch.from_numpy(flow_fn(gray[t], gray[t - 1])).permute(2, 0, 1)
    return out
