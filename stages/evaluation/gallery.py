"""Frame strips, one contact sheet per model, and a self-contained gallery.html.

A strip is STRIP_FRAMES evenly spaced frames of a clip side by side, at most THUMB_PX wide each.
Flow is drawn with the usual colour wheel (hue = direction, saturation = magnitude relative to
the scene's 99th-percentile GT speed); distance as log-distance through viridis over the scene's
GT range, invalid GT pixels black. The HTML embeds every image as a base64 data URI, so the file
can be mailed or archived alone.

What the heads see (`heads.visualize`): per model a perception contact sheet,
perception_sheet_<model>.png (one row per scene: RGB | GT flow | predicted flow | GT depth |
predicted depth at the scene's representative frame, from the predictions the perception metrics
score), shown in report.md and at the top of the gallery; and per scene and model an animated
preview, previews/<scene>_<model>.gif (RGB | predicted flow | predicted depth over the window's
frames), embedded in the scene's section.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from heads.metrics import depth_from_log
from heads.visualize import (
    depth_frames,
    flow_frames,
    flow_scale,
    log_depth_range,
    perception_sheet,
    preview_gif,
    rgb_frames,
    sheet_row,
)
from stages.evaluation import iq

STRIP_FRAMES = 8
THUMB_PX = 128
LABEL_PX = 150
MODEL_ROWS = (("generated", "generated"), ("gen_flow", "flow (heads on generated)"),
              ("gen_depth", "depth (heads on generated)"))
"""Contact-sheet rows after the GT row (key in the visuals dict, label)."""


def _pick(t: int) -> np.ndarray:
    return np.unique(np.linspace(0, t - 1, num=min(t, STRIP_FRAMES)).round().astype(int))


def _thumbs(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> picked frames resized to at most THUMB_PX, (k, h, w, 3) uint8."""
    picked = frames[_pick(frames.shape[0])]
    h, w = picked.shape[1:3]
    scale = min(1.0, THUMB_PX / max(h, w))
    if scale == 1.0:
        return picked
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in picked])


def scene_visuals(sample: dict) -> dict:
    """GT strips and the colour scales every model's strips of this scene reuse."""
    flow, valid = sample["flow"], sample["flow_valid"]
    speed = torch.linalg.vector_norm(flow, dim=1)[valid]
    scale = float(torch.quantile(speed, 0.99)) if speed.numel() else 1.0
    log_d = torch.log(sample["depth"][sample["depth_valid"]].clamp_min(1e-6))
    lo, hi = (float(log_d.min()), float(log_d.max())) if log_d.numel() else (0.0, 1.0)
    scales = {"flow": max(scale, 1.0), "depth": (lo, hi)}
    return {"scales": scales, "gt": _thumbs(rgb_frames(sample["rgb"])),
            "gt_flow": _thumbs(flow_frames(torch.where(valid[:, None], flow, 0.0), scales["flow"])),
            "gt_depth": _thumbs(depth_frames(sample["depth"], lo, hi, sample["depth_valid"]))}


def model_visuals(scene: dict, generated: torch.Tensor, flow: torch.Tensor, depth: torch.Tensor,
                  gen_flow: torch.Tensor, gen_depth: torch.Tensor) -> dict:
    """Strips of one model: its predictions on GT frames, the rollout and its predictions on it."""
    s, (lo, hi) = scene["scales"]["flow"], scene["scales"]["depth"]
    return {"flow": _thumbs(flow_frames(flow, s)), "depth": _thumbs(depth_frames(depth, lo, hi)),
            "generated": _thumbs(rgb_frames(generated)), "gen_flow": _thumbs(flow_frames(gen_flow, s)),
            "gen_depth": _thumbs(depth_frames(gen_depth, lo, hi))}


def perception_pictures(sample: dict, flow: torch.Tensor, log_depth: torch.Tensor) -> dict:
    """A scene's contact-sheet row and preview GIF from the heads' predictions on its window, flow
    (T, 2, H, W) px and log distance (T, H, W); merged into the model's visuals."""
    depth = depth_from_log(log_depth)
    row = sheet_row(sample["scene"], sample["rgb"], sample["flow"], sample["flow_valid"], sample["depth"],
                    sample["depth_valid"], flow, depth)
    preview = preview_gif(sample["rgb"], flow, depth, flow_scale(sample["flow"], sample["flow_valid"]),
                          log_depth_range(sample["depth"], sample["depth_valid"], fallback=depth))
    return {"sheet": row, "preview": preview}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def perception_sheet_name(model: str) -> str:
    return f"perception_sheet_{_safe(model)}.png"


def preview_name(scene: str, model: str) -> str:
    return f"previews/{_safe(scene)}_{_safe(model)}.gif"


def strip_image(frames: np.ndarray, gap: int = 2) -> Image.Image:
    """(k, h, w, 3) uint8 -> one image with the frames side by side."""
    k, h, w, _ = frames.shape
    canvas = Image.new("RGB", (k * w + (k - 1) * gap, h), (255, 255, 255))
    for i, frame in enumerate(frames):
        canvas.paste(Image.fromarray(frame), (i * (w + gap), 0))
    return canvas


def contact_sheet(visuals: dict, model: str) -> Image.Image:
    """Per scene: a title line, then rows GT | generated | predicted flow | predicted depth."""
    blocks = []
    for scene, vis in visuals.items():
        rows = [("ground truth", vis["gt"])] + [(label, vis[model][key]) for key, label in MODEL_ROWS]
        strips = [(label, strip_image(frames)) for label, frames in rows]
        width = LABEL_PX + max(s.width for _, s in strips)
        height = 18 + sum(s.height + 4 for _, s in strips)
        block = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(block)
        draw.text((4, 2), f"{scene}  [{model}]", fill=(0, 0, 0))
        y = 18
        for label, strip in strips:
            draw.text((4, y + strip.height // 2 - 5), label, fill=(0, 0, 0))
            block.paste(strip, (LABEL_PX, y))
            y += strip.height + 4
        blocks.append(block)
    sheet = Image.new("RGB", (max(b.width for b in blocks), sum(b.height + 8 for b in blocks)), (255, 255, 255))
    y = 0
    for block in blocks:
        sheet.paste(block, (0, y))
        y += block.height + 8
    return sheet


def _data_uri(image: Image.Image | bytes, kind: str = "png") -> str:
    """A PNG of ``image``, or ``image``'s bytes as they are (e.g. a GIF), as a data URI."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image = buffer.getvalue()
    return f"data:image/{kind};base64," + base64.b64encode(image).decode("ascii")


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _scene_section(record: dict, vis: dict, models: list[str]) -> str:
    rows = [("ground truth", vis["gt"]), ("GT flow", vis["gt_flow"]), ("GT depth", vis["gt_depth"])]
    for m in models:
        rows += [(f"{m}: flow on GT", vis[m]["flow"]), (f"{m}: depth on GT", vis[m]["depth"])]
        rows += [(f"{m}: {label}", vis[m][key]) for key, label in MODEL_ROWS]
    cells = "".join(f"<tr><th>{html.escape(label)}</th><td><img alt=\"{html.escape(label)}\" "
                    f"src=\"{_data_uri(strip_image(frames))}\"></td></tr>" for label, frames in rows)
    cells = "".join(f"<tr><th>{html.escape(m)}: RGB | flow | depth (animated)</th><td><img alt=\"{html.escape(m)} "
                    f"preview\" src=\"{_data_uri(vis[m]['preview'], 'gif')}\"></td></tr>" for m in models) + cells
    stats = "".join(
        f"<li><b>{html.escape(m)}</b>: depth AbsRel {_fmt(r['perception'].get('depth_abs_rel'))}, flow EPE moving "
        f"{_fmt(r['perception'].get('flow_epe_moving'))} px, spatiotemporal IoU "
        f"{_fmt(r['prediction']['spatiotemporal_iou'])}, g_fit(heads) {_fmt(r['physics_heads']['g_fit'])} m/s&sup2;, "
        f"g_fit(generated) {_fmt(r['physics_generated']['g_fit'])} m/s&sup2;</li>"
        for m, r in record["models"].items())
    name = html.escape(record["scene"])
    return (f"<section class=\"scene\" id=\"{name}\"><h2>{name}</h2><p>{html.escape(record['prompt'])}</p>"
            f"<p>GT g_fit {_fmt(record['physics_gt']['g_fit'])} m/s&sup2; (scene g "
            f"{_fmt(record['g_scene'])})</p><ul>{stats}</ul><table>{cells}</table></section>")


def gallery_html(payload: dict, visuals: dict) -> str:
    sections = "\n".join(_scene_section(r, visuals[r["scene"]], payload["models"]) for r in payload["scenes"])
    score = html.escape("\n".join(iq.summary_lines(payload.get("physics_iq"))))
    sheets = "".join(f"<h2>What the heads see: {html.escape(m)}</h2><p>RGB | GT flow | predicted flow | GT depth | "
                     "predicted depth, one frame per scene (grey: no ground truth)</p><img alt=\"perception "
                     f"{html.escape(m)}\" src=\"{_data_uri(perception_sheet(_sheet_rows(payload, visuals, m)))}\">"
                     for m in payload["models"])
    style = ("body{font-family:sans-serif;margin:1em}th{text-align:left;padding-right:1em;font-weight:normal}"
             "section{border-top:1px solid #ccc;margin-top:1em}img{image-rendering:pixelated}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Physics evaluation gallery</title>"
            f"<style>{style}</style></head><body><h1>Physics evaluation: split {html.escape(payload['args']['split'])}"
            f"</h1><p>{html.escape(' '.join(payload['notes']))}</p>\n<pre>{score}</pre>\n{sheets}\n{sections}\n"
            "</body></html>\n")


def _sheet_rows(payload: dict, visuals: dict, model: str) -> list:
    return [visuals[r["scene"]][model]["sheet"] for r in payload["scenes"]]


def write_all(out: Path, payload: dict, visuals: dict) -> list[str]:
    """contact_sheet_<model>.png and perception_sheet_<model>.png for each model, previews/<scene>_<model>.gif
    and gallery.html; returns their names."""
    names = []
    for model in payload["models"]:
        name = f"contact_sheet_{model}.png"
        contact_sheet(visuals, model).save(out / name)
        perception_sheet(_sheet_rows(payload, visuals, model)).save(out / perception_sheet_name(model))
        names += [name, perception_sheet_name(model)]
    (out / "previews").mkdir(exist_ok=True)
    for record in payload["scenes"]:
        for model in payload["models"]:
            name = preview_name(record["scene"], model)
            (out / name).write_bytes(visuals[record["scene"]][model]["preview"])
            names.append(name)
    (out / "gallery.html").write_text(gallery_html(payload, visuals), encoding="utf-8")
    return names + ["gallery.html"]
