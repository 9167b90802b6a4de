"""The trainable part of stage 1: flow and depth heads side by side, built for a backbone preset."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from data.metadata_split import describe_split
from heads.config import HeadConfig
from heads.depth import DepthHead
from heads.flow import MotionVectorHead
from heads.io import load_heads
from heads.metrics import (
    CLASSICAL_FLOW_LABELS,
    HEAD_METRIC_ROWS,
    add_head_outputs,
    classical_flow_key,
    depth_from_log,
    head_accumulator,
)
from heads.visualize import sheet_row
from stages.trainer.sections import HeadsConfig
from world_model.presets import BackbonePreset


class HeadPair(nn.Module):
    """taps num_taps x (B, C, F', H', W') + rgb (B, T, 3, H, W) -> flow (B, T, 2, H, W), log depth (B, T, H, W)."""

    def __init__(self, flow: MotionVectorHead, depth: DepthHead) -> None:
        super().__init__()
        self.flow, self.depth = flow, depth

    @classmethod
    def build(cls, config: HeadConfig) -> HeadPair:
        return cls(MotionVectorHead(config), DepthHead(config))

    @classmethod
    def load(cls, directory: str) -> HeadPair:
        """Both heads of a stage-1 (or stage-2 heads/) export, strictly."""
        flow, depth = load_heads(directory)
        if flow is None or depth is None:
            raise FileNotFoundError(f"{directory}: the export must hold both a flow and a depth head")
        return cls(flow, depth)

    def forward(self, taps: list[torch.Tensor], rgb: torch.Tensor | None, frame_index: torch.Tensor | None = None,
                prev_rgb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``frame_index`` (B, K): rgb / prev_rgb are the frames at / before it, outputs have K frames."""
        taps = [t.float() for t in taps]  # cached grids are bf16; the heads keep fp32 weights
        return self.flow(taps, rgb, frame_index, prev_rgb), self.depth(taps, rgb, frame_index)


def head_inputs(batch: dict) -> tuple[torch.Tensor | None, ...]:
    """HeadPair's arguments after the taps for a data batch: only the supervised frames when it
    names them ('frame_index'), else the whole window.  Called through the (DDP-)wrapped model."""
    if "frame_index" in batch:
        return batch["frame_rgb"], batch["frame_index"], batch["prev_rgb"]
    return (batch["rgb"],)


def contiguous_frames(batch: int, frames: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """(B, K) window frames s..s+K-1, s drawn per sample, for stage 2's heads and physics terms: the
    heads' cost grows with the frames they decode while the DiT's does not, and the physics terms
    difference consecutive frames, so the subset is one run.  None when K is 0 or covers the window."""
    if k <= 0 or k >= frames:
        return None
    start = torch.randint(0, frames - k + 1, (batch, 1), generator=generator)
    return start + torch.arange(k)[None]


def at_frames(x: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
    """Rows of (B, T, ...) ``x`` at the (B, K) window frames ``frame_index``."""
    index = frame_index.to(x.device)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


def head_config(heads: HeadsConfig, preset: BackbonePreset, num_taps: int) -> HeadConfig:
    """Geometry from the backbone preset, architecture knobs from the run config."""
    frames_per_latent, spatial, _ = preset.token_stride
    return HeadConfig(in_channels=preset.hidden_dim, num_taps=num_taps, spatial_factor=spatial,
                      temporal_factor=frames_per_latent, features=heads.features,
                      temporal_levels=heads.temporal_levels, convex_upsample=heads.convex_upsample,
                      rgb_refine=heads.rgb_refine, rgb_refine_stride=heads.rgb_refine_stride, rgb_cost_radius=heads.rgb_cost_radius,
                      rgb_cost_pool=heads.rgb_cost_pool,
                      rgb_cost_temperature=heads.rgb_cost_temperature, rgb_cost_confidence=heads.rgb_cost_confidence,
                      rgb_body_reach=heads.rgb_body_reach, temporal_heads=4 if heads.features % 4 == 0 else 1)


def build_heads(heads: HeadsConfig, preset: BackbonePreset, num_taps: int) -> HeadPair:
    pair = HeadPair.build(head_config(heads, preset, num_taps))
    for head in (pair.flow, pair.depth):
        head.set_memory_options(frame_chunk=heads.frame_chunk, gradient_checkpointing=heads.checkpoint_decoder,
                                channels_last=heads.channels_last)
    if heads.compile:
        # The pair as one graph: with CUDA graphs (reduce-overhead) a no-grad call of a second
        # compiled head would overwrite the first head's output in validation.  In place
        # (nn.Module.compile): parameter names, checkpoints and exports stay as in eager.
        pair.compile(mode=None if heads.compile == "default" else heads.compile, backend=heads.compile_backend)
    return pair


@torch.no_grad()
def validate(model: HeadPair, batches, taps_fn, moving_threshold: float, far: float,
             flow_baselines: bool = False, keep: Callable[[dict, torch.Tensor, torch.Tensor], None] | None = None
             ) -> dict[str, float]:
    """Dataset-level head metrics with the baselines beside them (zero flow, median depth through
    each depth alignment; with ``flow_baselines`` also OpenCV DIS and Farneback flow from the
    batch's frames), through `heads.metrics.add_head_outputs`, as the evaluation computes them.
    ``keep(batch, flow, log_depth)`` sees every batch's predictions (e.g. `SheetRows`)."""
    accumulator = head_accumulator(moving_threshold, far)
    was_training = model.training
    model.eval()
    for batch in batches:
        flow, log_depth = model(taps_fn(batch), batch["rgb"])
        add_head_outputs([accumulator], flow, log_depth, batch, flow_baselines=flow_baselines)
        if keep is not None:
            keep(batch, flow, log_depth)
    model.train(was_training)
    return accumulator.compute()


class SheetRows:
    """Contact-sheet rows (`heads.visualize.sheet_row`) of the first ``limit`` windows of validation
    batches, from the predictions the metrics score: pass as ``validate(..., keep=rows)``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.rows = limit, []

    def __call__(self, batch: dict, flow: torch.Tensor, log_depth: torch.Tensor) -> None:
        if len(self.rows) >= self.limit:
            return
        depth = depth_from_log(log_depth.float())
        for b in range(min(flow.shape[0], self.limit - len(self.rows))):
            self.rows.append(sheet_row(str(batch["scene"][b]), *(batch[k][b].cpu() for k in
                                       ("rgb", "flow", "flow_valid", "depth", "depth_valid")),
                                       flow[b].float().cpu(), depth[b].cpu()))


def finite_means(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the rows where it is finite (NaN where it never is): a term
    undefined on one window (a fitted g with no free-flight pixel) must not blank the average
    of the windows where it is defined."""
    keys = dict.fromkeys(k for row in rows for k in row)
    means = {}
    for key in keys:
        values = [float(row[key]) for row in rows if key in row and math.isfinite(float(row[key]))]
        means[key] = sum(values) / len(values) if values else math.nan
    return means


def validation_holds(config) -> str:
    """What a run's validation split holds relative to its training split, read from the metadata
    (e.g. 'unseen scenes of seen families (split val, 2 scenes)'); '' without validation."""
    run, data = config.run, config.data
    return describe_split(data.root, data.metadata, run.val_split, run.train_split) if run.val_split else ""


VALIDATION_LEGEND = (
    "baseline: zero flow / per-clip median depth, aligned like the heads (scale: x median(gt)/median(pred);",
    "affine: least squares in inverse depth; the median is constant per clip, so scale alignment leaves it",
    "as is and affine alignment makes it the clip's harmonic-mean depth). DIS, Farneback: OpenCV flow",
    "between the same frames, scored on the same pixels. Lower is better except delta<1.25.",
)


def print_validation(metrics: dict[str, float], holds: str = "") -> None:
    """Validation metrics beside the baselines, the way the demo ends; ``holds`` says what the
    validation split is (`data.metadata_split.describe_split`). Classical flow columns appear
    only when the metrics have them (run.val_flow_baselines)."""
    if not metrics:
        print("\nvalidation: none (run.val_split is empty or has no windows)")
        return
    if holds:
        print(f"\nvalidation: {holds}")
    classical = [(m, title) for m, title in CLASSICAL_FLOW_LABELS.items() if classical_flow_key(m, "flow_epe") in metrics]
    print(f"\n{'validation':<34}{'heads':>10}{'baseline':>10}" + "".join(f"{t:>11}" for _, t in classical))
    for label, ours, base, _ in HEAD_METRIC_ROWS:
        if ours in metrics:
            extra = [metrics.get(classical_flow_key(m, ours) or "") for m, _ in classical]
            print((f"{label:<34}{metrics[ours]:>10.4f}{metrics[base]:>10.4f}"
                   + "".join(f"{v:>11.4f}" if v is not None else " " * 11 for v in extra)).rstrip())
    print("\n".join(VALIDATION_LEGEND))


PERCEPTION_JUDGED = {"depth_abs_rel": "depth AbsRel", "flow_epe_moving": "flow EPE, moving pixels"}
"""Validation metrics stage 2 must keep (issue 17: within PERCEPTION_WITHIN of stage 1's, or better)."""
PERCEPTION_SHOWN = {**PERCEPTION_JUDGED, "depth_moving_abs_rel": "depth AbsRel, moving pixels"}
"""Shown beside them: where the physics terms are meant to help."""
PERCEPTION_WITHIN = 0.05


def perception_change(start: dict[str, float], end: dict[str, float], within: float = PERCEPTION_WITHIN) -> dict:
    """Stage 2's validation at its end against its start (the stage-1 heads on the unadapted
    backbone: LoRA starts at zero) on the same windows: per metric start, end and relative change,
    the judged metrics that end worse than ``within`` above their start, and whether none does
    (None when none is there)."""
    rows = {key: {"start": start[key], "end": end[key], "change": end[key] / start[key] - 1.0 if start[key] else math.nan}
            for key in PERCEPTION_SHOWN
            if math.isfinite(start.get(key, math.nan)) and math.isfinite(end.get(key, math.nan))}
    judged = [key for key in PERCEPTION_JUDGED if key in rows]
    worse = [key for key in judged if rows[key]["end"] > rows[key]["start"] * (1.0 + within)]
    return {"rows": rows, "kept": not worse if judged else None, "worse": worse, "within": within}


def print_perception_change(change: dict) -> None:
    """The table `perception_change` returns, and its verdict in one line."""
    if change["kept"] is None:
        print("\nperception: not compared (no validation at the start or the end)")
        return
    print(f"\n{'perception (validation)':<34}{'start':>10}{'end':>10}{'change':>10}")
    for key, row in change["rows"].items():
        percent = f"{row['change'] * 100:+.1f} %"
        print(f"{PERCEPTION_SHOWN[key]:<34}{row['start']:>10.4f}{row['end']:>10.4f}{percent:>10}")
    worse = [f"{PERCEPTION_JUDGED[k]} {change['rows'][k]['change'] * 100:+.1f} %" for k in change["worse"]]
    verdict = "yes" if change["kept"] else f"no ({', '.join(worse)})"
    print(f"perception kept within {change['within'] * 100:.0f} % of the start: {verdict}")


def print_terms(start: dict[str, float], end: dict[str, float]) -> None:
    """Every loss term on the fixed training windows at the start and end of a stage-2 run, with
    the pixels that supported it (its '_px' entry)."""
    print(f"\n{'term (training windows)':<26}{'start':>11}{'end':>11}   pixels start/end")
    for key in sorted(start):
        if key.startswith(("loss", "phys_", "flow_epe", "depth_")) and not key.endswith("_px"):
            pixels = f"   {start[key + '_px']:.0f}/{end.get(key + '_px', 0):.0f}" if key + "_px" in start else ""
            print(f"{key:<26}{start[key]:>11.4f}{end.get(key, float('nan')):>11.4f}{pixels}")
