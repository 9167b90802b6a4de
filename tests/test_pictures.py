"""heads.visualize on synthetic windows (fast): the perception contact sheet's exact layout, grey
where the ground truth has no target, one shared scale per row; the preview GIF's frames and size.
The sheets stage 1 and the evaluation write are checked in tests/test_stage1.py
(test_report_splits_...) and tests/test_evaluate_physics.py (test_perception_sheets_...), which
already run them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from heads import visualize as vis
from tests.helpers import assert_perception_sheet


def _window(t: int = 5, h: int = 48, w: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    flow = torch.randn(t, 2, h, w, generator=g) * 2
    flow_valid = torch.ones(t, h, w, dtype=torch.bool)
    flow_valid[0] = False  # frame 0 has no flow target
    flow_valid[:, :8] = False
    flow[3] *= 5  # the frame that moves most
    depth = 1 + 4 * torch.rand(t, h, w, generator=g)
    depth_valid = torch.ones(t, h, w, dtype=torch.bool)
    depth_valid[:, :8] = False  # sky
    return {"rgb": torch.rand(t, 3, h, w, generator=g), "flow": flow, "flow_valid": flow_valid, "depth": depth,
            "depth_valid": depth_valid}


def _row(window: dict, name: str = "scene") -> vis.SheetRow:
    return vis.sheet_row(name, window["rgb"], window["flow"], window["flow_valid"], window["depth"],
                         window["depth_valid"], window["flow"] * 0.5, window["depth"] * 1.2)


def test_sheet_layout_is_five_panels_per_scene_row(tmp_path):
    rows = [_row(_window(seed=s), f"scene_{s}_with_a_name_longer_than_the_label_column") for s in range(3)]
    path = tmp_path / "sheet.png"
    vis.perception_sheet(rows).save(path)
    assert_perception_sheet(path, 3, (48, 64))
    with Image.open(path) as image:  # 64 px wide frames -> SHEET_PX wide panels, 48 -> 96 high
        assert image.size == (vis.LABEL_PX + 5 * 128 + 4 * vis.GAP_PX, vis.TITLE_PX + 3 * 96 + 2 * vis.GAP_PX)


def test_a_row_is_the_most_moving_frame_grey_where_gt_is_missing_with_one_scale():
    window = _window()
    row = _row(window)
    assert row.frame == 3 and len(row.panels) == len(vis.COLUMNS)
    _, gt_flow, pred_flow, gt_depth, pred_depth = row.panels
    assert all(p.shape == (48, 64, 3) and p.dtype == np.uint8 for p in row.panels)
    assert (gt_flow[:8] == vis.GREY).all() and (gt_depth[:8] == vis.GREY).all()
    assert not (pred_flow[:8] == vis.GREY).all(axis=-1).all() and not (pred_depth[:8] == vis.GREY).all(axis=-1).all()
    # one scale per row: the prediction (half the GT flow) is paler than the GT, not equally saturated
    saturation = lambda p: (p.max(-1).astype(int) - p.min(-1)).mean()
    assert saturation(pred_flow[8:]) < 0.8 * saturation(gt_flow[8:])
    scale = vis.flow_scale(window["flow"][3:4], window["flow_valid"][3:4])
    assert f"flow: {scale:.3g} px = full" in row.notes and "frame 3" in row.notes


def test_a_window_without_flow_targets_uses_its_middle_frame():
    window = _window()
    window["flow_valid"][:] = False
    assert _row(window).frame == 2


@pytest.mark.parametrize(("t", "size", "frames", "panel"), [(5, 64, 5, 64), (33, 256, vis.PREVIEW_FRAMES, 128)])
def test_preview_gif_has_every_frame_up_to_the_cap_at_panel_size(t, size, frames, panel):
    window = _window(t=t, h=size, w=size)
    still = torch.zeros_like(window["rgb"])  # identical frames must still give one GIF frame each
    data = vis.preview_gif(still, torch.zeros_like(window["flow"]), window["depth"], 1.0, (0.0, 1.5))
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.format == "GIF" and gif.n_frames == frames
        assert gif.size == (3 * panel + 2 * vis.GAP_PX, panel + vis.PREVIEW_BAR_PX)
