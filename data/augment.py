"""Training augmentation: what may vary in a window without changing its physics.

A ``View`` is everything random about how one training sample is cut from its scene: the
window stride, the crop (position, area, aspect), a horizontal flip and a colour jitter.
Targets follow each choice exactly (data.transforms: flow scaled by the resize and mirrored by
the flip, depth and masks resized with the masked resize, intrinsics and the gravity direction
updated; the stride sets which simulator steps the flow is composed over, and dt).

Time is never reversed: played backwards, a falling ball rises and gravity points up, so no
view can express it and ``check_forward_in_time`` refuses any window whose frames do not
increase.

Draws are a pure function of the generator they are given (keyed by seed, epoch and item by
the callers), and always take the same count of numbers in the same order, so switching one
augmentation on or off leaves the draws of the others unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from data.colour import ColourJitter

UNIFORMS_PER_VIEW = 10
"""stride, crop x, crop y, flip, crop area, crop aspect, brightness, contrast, saturation, hue."""


def _check_range(name: str, bounds: tuple[float, float], low: float, high: float) -> None:
    first, last = bounds
    if not (low < first <= last <= high):
        raise ValueError(f"{name} must be a range (min, max) with {low} < min <= max <= {high}, got {bounds}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation on top of data.hflip_prob and data.random_crop; each is off at
    its default.  Validation and evaluation windows are never augmented."""

    brightness: float = 0.0
    """Colour jitter: brightness factor drawn from [1 - b, 1 + b] (0 = off); one draw per window."""
    contrast: float = 0.0
    """Colour jitter: contrast factor drawn from [1 - c, 1 + c] about mid-grey (0 = off)."""
    saturation: float = 0.0
    """Colour jitter: saturation factor drawn from [1 - s, 1 + s] (0 = off)."""
    hue: float = 0.0
    """Colour jitter: hue rotation drawn from [-h, h] turns, at most 0.5 (0 = off)."""
    crop_scale: tuple[float, float] = (1.0, 1.0)
    """Random resized crop: area of the cut region as a fraction of the largest region of the
    output's aspect ratio, drawn uniformly from (min, max); (1, 1) = off.  The crop is resized to
    the output size: flow vectors scale with it, intrinsics follow."""
    crop_ratio: tuple[float, float] = (1.0, 1.0)
    """Random resized crop: the region's aspect ratio over the output's, log-uniform in (min, max);
    values != 1 stretch one axis (fx != fy).  (1, 1) = off."""
    strides: tuple[int, ...] = ()
    """Stride jitter: each window's stride is drawn uniformly from these simulator-step counts
    (empty = always data.window.stride).  Flow is composed over the drawn stride and dt follows;
    every scene must be long enough for the largest."""

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5] turns, got {self.hue}")
        _check_range("crop_scale", self.crop_scale, 0.0, 1.0)
        _check_range("crop_ratio", self.crop_ratio, 0.0, math.inf)
        if any(int(s) != s or s < 1 for s in self.strides):
            raise ValueError(f"strides must be positive whole simulator steps (time runs forward), got {self.strides}")

    @property
    def colour_on(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))

    @property
    def active(self) -> bool:
        """True when any of these augmentations changes a window."""
        return self.colour_on or self.crop_scale != (1.0, 1.0) or self.crop_ratio != (1.0, 1.0) or bool(self.strides)


@dataclass(frozen=True)
class ViewOptions:
    """What a view may draw: the augmentation config plus the data config's stride, crop and flip."""

    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stride: int = 1
    random_crop: bool = True
    hflip_prob: float = 0.0

    @property
    def max_stride(self) -> int:
        return max(self.augment.strides or (self.stride,))


@dataclass(frozen=True)
class View:
    """One sample's augmentation; the defaults are the un-augmented centre view."""

    stride: int
    crop_xy_fraction: tuple[float, float] = (0.5, 0.5)
    flip: bool = False
    crop_area: float = 1.0
    crop_aspect: float = 1.0
    colour: ColourJitter | None = None

    def key(self) -> tuple:
        """Plain values identifying the view (part of a feature-cache key)."""
        colour = None if self.colour is None else (self.colour.brightness, self.colour.contrast,
                                                    self.colour.saturation, self.colour.hue)
        return (self.stride, tuple(self.crop_xy_fraction), self.flip, self.crop_area, self.crop_aspect, colour)


def _factor(u: float, amount: float) -> float:
    return 1.0 + amount * (2.0 * u - 1.0)


def draw_view(rng: np.random.Generator, options: ViewOptions) -> View:
    """A random view; every call takes exactly ``UNIFORMS_PER_VIEW`` numbers from ``rng``."""
    u = rng.random(UNIFORMS_PER_VIEW)
    a = options.augment
    strides = a.strides or (options.stride,)
    stride = int(strides[min(int(u[0] * len(strides)), len(strides) - 1)])
    crop = (float(u[1]), float(u[2])) if options.random_crop else (0.5, 0.5)
    area = a.crop_scale[0] + (a.crop_scale[1] - a.crop_scale[0]) * float(u[4])
    log_ratio = np.log(a.crop_ratio)
    aspect = float(np.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[5]))
    colour = None
    if a.colour_on:
        colour = ColourJitter(_factor(u[6], a.brightness), _factor(u[7], a.contrast), _factor(u[8], a.saturation),
                              a.hue * (2.0 * float(u[9]) - 1.0))
    return View(stride, crop, bool(u[3] < options.hflip_prob), area, aspect, colour)


def check_forward_in_time(frames: np.ndarray, where: object) -> None:
    """Refuse a window whose frames do not strictly increase: reversed or repeated time would
    make gravity point up (or vanish) in the targets."""
    if len(frames) > 1 and not np.all(np.diff(np.asarray(frames)) > 0):
        raise ValueError(f"{where}: window frames {list(map(int, frames))} do not increase; windows run forward "
                         "in time only (reversed, a falling body would rise)")
