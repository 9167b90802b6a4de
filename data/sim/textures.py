"""Procedural textures for floors, backdrops and objects, all numpy and deterministic from the RNG.

Every kind has fine structure at several scales, because flat or strictly periodic surfaces give
optical flow nothing to lock on to (or let it alias by one period).  ``tones`` are two RGB colours
in [0, 1]: the pattern alternates between them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Texture = Callable[[np.random.Generator, int, np.ndarray], np.ndarray]


def _finish(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _grain(rng: np.random.Generator, size: int, strength: float = 0.08) -> np.ndarray:
    """Per-pixel brightness noise (H, W, 1) so no two cells of a pattern look alike."""
    return 1.0 + strength * rng.standard_normal((size, size, 1))


def value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) smooth noise in [0, 1]: a random grid bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _near_edge(size: int, cells: int, width: float) -> np.ndarray:
    """(size,) mask of pixels within ``width`` (a fraction of a cell) of a cell's first edge."""
    return (np.arange(size) * cells % size) < width * size


def checker(rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    squares = int(rng.integers(16, 48))
    idx = np.arange(size) * squares // size
    parity = (idx[:, None] + idx[None, :]) % 2
    return _finish(tones[parity] * _grain(rng, size))


def stripes(rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    period = size / rng.integers(8, 24)
    x = np.arange(size)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * x / period)
    image = tones[0] * wave[None, :, None] + tones[1] * (1 - wave[None, :, None])
    lines = np.where((x % int(4 * period)) < 3, 0.7, 1.0)[:, None, None]
    return _finish(image * lines * _grain(rng, size))


def tiles(rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    """Square tiles of varied shade with dark grout."""
    count = int(rng.integers(10, 28))
    idx = np.arange(size) * count // size
    shade = 0.8 + 0.4 * rng.random((count, count, 1))
    image = tones[0] * shade[idx[:, None], idx[None, :]]
    grout = _near_edge(size, count, 0.08)
    image[grout] = tones[1]
    image[:, grout] = tones[1]
    return _finish(image * _grain(rng, size, 0.05))


def bricks(rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    """Running-bond bricks: every other row shifted by half a brick."""
    rows = int(rng.integers(12, 30))
    row = np.arange(size) * rows // size
    brick_w = 2.0 * size / rows
    x = np.arange(size)[None, :] + (row[:, None] % 2) * brick_w / 2
    col = (x // brick_w).astype(int)
    shade = 0.75 + 0.5 * value_noise(rng, 64, 63)[row[:, None] % 64, col % 64]
    image = tones[0] * shade[..., None]
    mortar = _near_edge(size, rows, 0.12)[:, None] | ((x % brick_w) < 2)
    image[mortar] = tones[1]
    return _finish(image * _grain(rng, size, 0.05))


def planks(rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    """Wooden boards: long strips with a stretched grain and dark seams."""
    boards = int(rng.integers(8, 20))
    row = np.arange(size) * boards // size
    grain = value_noise(rng, size, 64)[:, ::8].repeat(8, axis=1)[:, :size]
    offset = rng.random(boards)[row][:, None]
    mix = np.clip(0.5 + 0.8 * (grain - 0.5) + 0.3 * (offset - 0.5), 0, 1)[..., None]
    image = tones[0] * mix + tones[1] * (1 - mix)
    seams = _near_edge(size, boards, 0.06)
    image[seams] *= 0.5
    return _finish(image * _grain(rng, size, 0.04))


def noise(rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    """Multi-scale value noise between the two tones (grass, gravel, concrete)."""
    field = sum(value_noise(rng, size, cells) / k for k, cells in enumerate((6, 24, 96), start=1))
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    image = tones[0] * field[..., None] + tones[1] * (1 - field[..., None])
    return _finish(image * _grain(rng, size, 0.1))


def dots(rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    """Randomly placed discs of one tone on the other."""
    image = np.broadcast_to(tones[0], (size, size, 3)).copy()
    count = int(rng.integers(40, 160))
    for cx, cy, r in zip(rng.random(count) * size, rng.random(count) * size, rng.uniform(0.01, 0.04, count) * size):
        x0, x1, y0, y1 = int(max(cx - r, 0)), int(min(cx + r + 1, size)), int(max(cy - r, 0)), int(min(cy + r + 1, size))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = tones[1]
    return _finish(image * _grain(rng, size, 0.05))


TEXTURES: dict[str, Texture] = {
    "checker": checker,
    "stripes": stripes,
    "tiles": tiles,
    "bricks": bricks,
    "planks": planks,
    "noise": noise,
    "dots": dots,
}


def make_texture(kind: str, rng: np.random.Generator, size: int, tones: np.ndarray) -> np.ndarray:
    """(size, size, 3) uint8 texture of ``kind`` (one of ``TEXTURES``)."""
    if kind not in TEXTURES:
        raise ValueError(f"unknown texture kind {kind!r}; known: {sorted(TEXTURES)}")
    return TEXTURES[kind](rng, size, np.asarray(tones, dtype=np.float64))


def sky_gradient(height: int, width: int, horizon: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 vertical gradient from ``zenith`` (top row) to ``horizon`` (bottom row)."""
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    image = zenith * (1 - t) + horizon * t
    return _finish(np.broadcast_to(image, (height, width, 3)))


BODY_DARK = 0.45
"""Grey of a body pattern's dark parts: pybullet multiplies a texture by the body's colour, so a
grey pattern keeps the named colour (a red ball stays red) in a lighter and a darker shade."""


def body_pattern(kind: str, cells: int, size: int = 64) -> np.ndarray:
    """(size, size, 3) uint8 grey pattern for a moving body with ``cells`` (even) cells around.

    On a sphere the texture wraps once around the equator (u, columns: ``cells``) and once pole to
    pole (v, rows: ``cells / 2``, as v spans half the angle), so cells come out about square.
    """
    n = cells
    col = np.arange(size) * n // size
    row = np.arange(size) * (n // 2) // size
    if kind == "stripes":
        light = np.broadcast_to(col[None, :] % 2 == 0, (size, size))
    elif kind == "checker":
        light = (row[:, None] + col[None, :]) % 2 == 0
    elif kind == "dots":
        in_col = (np.arange(size) * n % size + 0.5) / size - 0.5  # offset from the cell centre, in cells
        in_row = (np.arange(size) * (n // 2) % size + 0.5) / size - 0.5
        light = np.hypot(in_row[:, None], in_col[None, :]) > 0.3
    else:
        raise ValueError(f"unknown body pattern {kind!r}; known: checker, dots, stripes")
    grey = np.where(light, 1.0, BODY_DARK)[..., None] * np.ones(3)
    return _finish(grey)


def body_pattern_cells(radius_px: float, most: int = 10) -> int:
    """Cells around a body of apparent radius ``radius_px``: an even number up to ``most`` that
    keeps each visible cell at least 6 px wide (half the cells span the 2 r visible), or 0
    (plain) when fewer than 4 would fit.  Finer patterns alias: TinyRenderer samples texels
    without filtering, so sub-pixel motion turns them into flicker the motion vectors cannot
    explain (measured: a 4-cell pattern on a ball of radius 4 px makes photometric warping with
    the true motion about as bad as with the negated one)."""
    cells = min(most, 2 * int(radius_px // 3))
    return cells if cells >= 4 else 0
