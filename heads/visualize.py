"""Pictures of what the heads see: colour maps, a perception contact sheet and an animated preview.

Flow is drawn with the usual colour wheel (hue = direction of motion, saturation = magnitude
relative to a scale, |f| >= scale fully saturated); distance as log distance through viridis
(near = bright) over a range.  Both the ground truth and the prediction of one picture share the
scale and the range, so their colours compare.

``perception_sheet``: one row per scene, RGB | GT flow | predicted flow | GT depth | predicted depth
at one representative frame (``representative_frame``: the one whose valid GT pixels move most),
each panel resized to SHEET_PX on its longer side; a title line above the columns and a label
column on the left (scene, frame, the row's flow scale and depth range, and the predicted depth's
median: depth is drawn metric, not aligned, so a prediction off in scale shows as one colour).
GT pixels without a target are grey.  Its size is exactly ``LABEL_PX + 5 * w + 4 * GAP_PX`` by
``TITLE_PX + rows * h + (rows - 1) * GAP_PX`` for panels of w x h.

``preview_gif``: RGB | predicted flow | predicted depth over the clip (at most PREVIEW_FRAMES frames
evenly picked, panels at most PREVIEW_PX, never enlarged), with a PREVIEW_BAR_PX timeline below
showing where in the clip a frame is; ``3 * w + 2 * GAP_PX`` by ``h + PREVIEW_BAR_PX``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import cm
from matplotlib.colors import hsv_to_rgb
from PIL import Image, ImageDraw

GREY = (128, 128, 128)
"""Colour of ground-truth pixels without a target (sky, frame 0's flow, occlusions)."""
BACKGROUND = (40, 40, 40)
"""Sheet and preview background (dark: zero flow is white on the colour wheel)."""
TEXT = (235, 235, 235)
COLUMNS = ("RGB", "GT flow", "predicted flow", "GT depth", "predicted depth")
SHEET_PX = 128
"""Longer side of a contact-sheet panel (smaller frames are enlarged, nearest neighbour)."""
LABEL_PX = 150
TITLE_PX = 16
GAP_PX = 2
PREVIEW_PX = 128
PREVIEW_FRAMES = 17
PREVIEW_BAR_PX = 4
PREVIEW_MS = 150
"""Milliseconds each preview frame is shown."""


def rgb_frames(rgb: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    return (rgb.float().permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def flow_frames(flow: torch.Tensor, scale: float, valid: torch.Tensor | None = None,
                invalid: tuple[int, int, int] = GREY) -> np.ndarray:
    """(T, 2, H, W) px -> (T, H, W, 3) uint8 colour wheel; |f| >= scale is fully saturated;
    pixels outside ``valid`` (T, H, W) are ``invalid``."""
    f = torch.nan_to_num(flow.float()).numpy()
    angle = (np.arctan2(-f[:, 1], -f[:, 0]) + np.pi) / (2 * np.pi)  # hue of the motion direction (forward)
    magnitude = np.clip(np.hypot(f[:, 0], f[:, 1]) / max(scale, 1e-6), 0, 1)
    hsv = np.stack([angle, magnitude, np.ones_like(angle)], axis=-1)
    out = (hsv_to_rgb(hsv) * 255).round().astype(np.uint8)
    if valid is not None:
        out[~valid.bool().numpy()] = invalid
    return out


def depth_frames(depth: torch.Tensor, lo: float, hi: float, valid: torch.Tensor | None = None,
                 invalid: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """(T, H, W) m -> (T, H, W, 3) uint8 viridis of log distance in [lo, hi] (near = bright);
    pixels outside ``valid`` are ``invalid``."""
    d = torch.log(depth.float().clamp_min(1e-6)).numpy()
    x = np.clip((hi - d) / max(hi - lo, 1e-6), 0, 1)
    out = (cm.viridis(x)[..., :3] * 255).round().astype(np.uint8)
    if valid is not None:
        out[~valid.bool().numpy()] = invalid
    return out


def flow_scale(flow: torch.Tensor, valid: torch.Tensor) -> float:
    """99th percentile of the valid GT speed, at least 1 px: the saturation scale of a picture."""
    speed = torch.linalg.vector_norm(flow.float(), dim=-3)[valid.bool()]
    return max(float(torch.quantile(speed, 0.99)) if speed.numel() else 1.0, 1.0)


def log_depth_range(depth: torch.Tensor, valid: torch.Tensor, fallback: torch.Tensor | None = None) -> tuple[float, float]:
    """(min, max) log distance of the valid GT pixels (else of ``fallback``'s, else (0, 1))."""
    values = depth.float()[valid.bool()]
    if not values.numel() and fallback is not None:
        values = fallback.float().flatten()
    if not values.numel():
        return 0.0, 1.0
    log_d = torch.log(values.clamp_min(1e-6))
    return float(log_d.min()), float(log_d.max())


def representative_frame(flow: torch.Tensor, valid: torch.Tensor) -> int:
    """The frame (not 0: it has no flow target) whose valid GT pixels move most on average; the
    middle frame when no frame has valid flow."""
    t = flow.shape[0]
    speed = torch.linalg.vector_norm(torch.nan_to_num(flow.float()), dim=1) * valid.float()
    counts = valid.float().flatten(1).sum(1)
    means = speed.flatten(1).sum(1) / counts.clamp_min(1)
    means[0] = -1.0
    if t < 2 or not bool((counts[1:] > 0).any()):
        return t // 2
    return int(means.argmax())


@dataclass
class SheetRow:
    """One scene of a contact sheet: its five panels (H, W, 3) uint8 in COLUMNS order and its label."""

    name: str
    frame: int
    panels: list[np.ndarray]
    notes: list[str]


def sheet_row(name: str, rgb: torch.Tensor, flow: torch.Tensor, flow_valid: torch.Tensor, depth: torch.Tensor,
              depth_valid: torch.Tensor, pred_flow: torch.Tensor, pred_depth: torch.Tensor) -> SheetRow:
    """A window's row: rgb (T, 3, H, W) in [0, 1], GT flow (T, 2, H, W) px with flow_valid (T, H, W),
    GT distance (T, H, W) m with depth_valid, predicted flow px and distance m of the same shapes;
    drawn at ``representative_frame`` with one flow scale and one depth range for the row (GT's)."""
    t = representative_frame(flow, flow_valid)
    sl = slice(t, t + 1)
    scale = flow_scale(flow[sl], flow_valid[sl])
    lo, hi = log_depth_range(depth[sl], depth_valid[sl], fallback=pred_depth[sl])
    panels = [rgb_frames(rgb[sl])[0], flow_frames(flow[sl], scale, flow_valid[sl])[0],
              flow_frames(pred_flow[sl], scale)[0], depth_frames(depth[sl], lo, hi, depth_valid[sl], GREY)[0],
              depth_frames(pred_depth[sl], lo, hi)[0]]
    notes = [f"frame {t}", f"flow: {scale:.3g} px = full", f"depth {np.exp(lo):.3g}-{np.exp(hi):.3g} m",
             f"predicted median {float(pred_depth[t].float().median()):.3g} m"]
    return SheetRow(name=name, frame=t, panels=panels, notes=notes)


def _fit(frame: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """(H, W, 3) uint8 -> an image of ``size`` (w, h): nearest neighbour up, bilinear down."""
    image = Image.fromarray(frame)
    if image.size == size:
        return image
    enlarging = size[0] >= image.width and size[1] >= image.height
    return image.resize(size, Image.NEAREST if enlarging else Image.BILINEAR)


def panel_size(height: int, width: int, px: int, enlarge: bool = True) -> tuple[int, int]:
    """(w, h) of a panel whose longer side is ``px`` (no larger than the frame unless ``enlarge``)."""
    scale = px / max(height, width)
    if not enlarge:
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _clip_text(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """``text`` shortened with '...' until it fits ``width`` pixels."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def perception_sheet(rows: list[SheetRow]) -> Image.Image:
    """The contact sheet of ``rows`` (see the module docstring for its layout and size)."""
    if not rows:
        raise ValueError("a perception sheet needs at least one row")
    w, h = panel_size(*rows[0].panels[0].shape[:2], SHEET_PX)
    n = len(COLUMNS)
    sheet = Image.new("RGB", (LABEL_PX + n * w + (n - 1) * GAP_PX, TITLE_PX + len(rows) * h + (len(rows) - 1) * GAP_PX),
                      BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(COLUMNS):
        draw.text((LABEL_PX + c * (w + GAP_PX) + 2, 2), _clip_text(draw, title, w - 4), fill=TEXT)
    for r, row in enumerate(rows):
        y = TITLE_PX + r * (h + GAP_PX)
        for line, text in enumerate([row.name, *row.notes]):
            if 12 * (line + 1) <= h:
                draw.text((2, y + 12 * line), _clip_text(draw, text, LABEL_PX - 6), fill=TEXT)
        for c, panel in enumerate(row.panels):
            sheet.paste(_fit(panel, (w, h)), (LABEL_PX + c * (w + GAP_PX), y))
    return sheet


def preview_gif(rgb: torch.Tensor, pred_flow: torch.Tensor, pred_depth: torch.Tensor, scale: float,
                depth_range: tuple[float, float]) -> bytes:
    """An animated GIF of a clip (see the module docstring): rgb (T, 3, H, W) in [0, 1], predicted
    flow (T, 2, H, W) px drawn at ``scale``, predicted distance (T, H, W) m over the log ``depth_range``."""
    t, _, height, width = rgb.shape
    picked = np.unique(np.linspace(0, t - 1, num=min(t, PREVIEW_FRAMES)).round().astype(int))
    columns = [rgb_frames(rgb[picked]), flow_frames(pred_flow[picked], scale),
               depth_frames(pred_depth[picked], *depth_range)]
    w, h = panel_size(height, width, PREVIEW_PX, enlarge=False)
    frames = []
    for i in range(len(picked)):
        frame = Image.new("RGB", (3 * w + 2 * GAP_PX, h + PREVIEW_BAR_PX), BACKGROUND)
        for c, column in enumerate(columns):
            frame.paste(_fit(column[i], (w, h)), (c * (w + GAP_PX), 0))
        draw = ImageDraw.Draw(frame)
        draw.rectangle((0, h, frame.width - 1, frame.height - 1), fill=BACKGROUND)
        draw.rectangle((0, h, round(frame.width * (i + 1) / len(picked)) - 1, frame.height - 1), fill=TEXT)
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=PREVIEW_MS, loop=0)
    return buffer.getvalue()
