"""Measure, on a data set, how its motion-vector files should be read.

A reading is a sign convention, a unit and a timing.  For every reading the file flow of step t
is converted, the frame it points at is warped and compared with the frame it claims to
predict, on the pixels where the file reports motion.  The right reading brings the error far
below the others (on generated scenes ~10x); a near tie means the files cannot be told apart on
this evidence, and the check says so instead of guessing.

Timings (the frames that file t relates):
  current  I_t(p) ~ I_{t-1}(p + f(p))   the internal convention: file t is the flow of step t
  shifted  I_{t+1}(p) ~ I_t(p + f(p))   each file one step early: file t is the flow of step t+1
  forward  I_t(p) ~ I_{t+1}(p - f(p))   file t holds the motion t -> t+1 at the pixels of frame t
The loader converts the first two (DataConfig.flow_timing); forward files need inverting,
which the loader does not do, so a data set read best that way fails the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.flow import CONVENTIONS, FLOW_TIMINGS, FLOW_UNITS, FlowConvention, pixel_grid, unit_scale
from data.layout import SceneFiles, scan_scene
from data.metadata import read_metadata
from data.readers import read_flow_file, read_rgb

MOVING_PX = 0.5
TIMINGS = ("current", "shifted", "forward")
ASPECTS = ("name", "units", "timing")
DOCUMENTED: Reading = ("replicator", "pixels", "current")
# Timings told apart only by a change of velocity between steps: a near tie is expected on
# steadily moving scenes and then both readings give nearly the same targets.
WEAK_TIES = {frozenset({"current", "forward"})}
SETTINGS = {"name": "data.flow_convention", "units": "data.flow_units", "timing": "data.flow_timing"}
Reading = tuple[str, str, str]  # (sign convention, units, timing)


@dataclass(frozen=True)
class ConventionScore:
    """Mean absolute photometric error (0-1 scale) of warping with one reading of the files."""

    name: str
    error: float
    pixels: int
    units: str = "pixels"
    timing: str = "current"

    @property
    def reading(self) -> Reading:
        return self.name, self.units, self.timing

    @property
    def label(self) -> str:
        return f"{self.name}/{self.units}/{self.timing}"


@dataclass(frozen=True)
class Verdict:
    """What the scores say: the best reading, whether it is clear, and the message to print."""

    ok: bool
    best: ConventionScore | None
    lines: tuple[str, ...]


def all_readings() -> list[Reading]:
    return [(n, u, t) for n in CONVENTIONS for u in FLOW_UNITS for t in TIMINGS]


def _frame(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1).float().unsqueeze(0) / 255.0


def _warp(source: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``source`` sampled at p + flow(p), border-padded: a reading that points outside the image
    is scored on what it points at rather than dropped (dropping would favour absurd units)."""
    height, width = flow.shape[-2:]
    grid = (pixel_grid(height, width) + flow).movedim(-3, -1)
    grid = grid * torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)]) - 1.0
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _moving(file_flow: np.ndarray) -> torch.Tensor:
    """Pixels where the file reports motion of at least MOVING_PX in some unit: one mask for all
    readings, so that every reading is judged on the same pixels."""
    largest = max(max(unit_scale(u, *file_flow.shape[-2:])) for u in FLOW_UNITS)
    return torch.from_numpy(np.linalg.norm(file_flow, axis=0) * largest > MOVING_PX)


def _pair_errors(frames: tuple[torch.Tensor, ...], file_flow: np.ndarray, moving: torch.Tensor) -> dict[Reading, float]:
    """Summed error on ``moving`` of every reading of the file of step t; frames = (t-1, t, t+1)."""
    previous, current, following = frames
    sums = {}
    for name in CONVENTIONS:
        for units in FLOW_UNITS:
            flow = torch.from_numpy(FlowConvention(name, units).to_internal(file_flow)).unsqueeze(0)
            cases = {"current": (previous, flow, current), "shifted": (current, flow, following),
                     "forward": (following, -flow, current)}
            for timing, (source, used, target) in cases.items():
                error = (_warp(source, used) - target).abs().mean(dim=1)[0][moving]
                sums[(name, units, timing)] = float(error.sum())
    return sums


def scene_errors(scene: SceneFiles, max_pairs: int = 8) -> dict[Reading, tuple[float, int]]:
    """Sum of warp errors and pixel counts per reading over up to ``max_pairs`` frame triples."""
    totals = {reading: [0.0, 0] for reading in all_readings()}
    if scene.num_frames < 3:
        return {k: (0.0, 0) for k in totals}
    pairs = np.linspace(1, scene.num_frames - 2, num=min(max_pairs, scene.num_frames - 2)).round().astype(int)
    for t in sorted(set(pairs.tolist())):
        file_flow = read_flow_file(scene.flow[t])
        moving = _moving(file_flow)
        if not moving.any():
            continue
        frames = tuple(_frame(scene.rgb[i]) for i in (t - 1, t, t + 1))
        for reading, error in _pair_errors(frames, file_flow, moving).items():
            totals[reading][0] += error
            totals[reading][1] += int(moving.sum())
    return {k: (v[0], v[1]) for k, v in totals.items()}


def _scores(totals: dict[Reading, tuple[float, int]]) -> list[ConventionScore]:
    scores = [ConventionScore(n, e / max(p, 1), p, u, t) for (n, u, t), (e, p) in totals.items()]
    return sorted(scores, key=lambda s: (s.pixels == 0, s.error))


def check_scenes(root: str | Path, metadata: str | Path, max_scenes: int = 8) -> dict[str, list[ConventionScore]]:
    """Scores of every reading per scene (metadata ``video`` path), best first."""
    entries = read_metadata(metadata, root=root)[:max_scenes]
    return {e.video: _scores(scene_errors(scan_scene(Path(root) / e.video))) for e in entries}


def combine(per_scene: dict[str, list[ConventionScore]]) -> list[ConventionScore]:
    """Pixel-weighted scores over all scenes, best first."""
    totals = {reading: [0.0, 0] for reading in all_readings()}
    for scores in per_scene.values():
        for score in scores:
            totals[score.reading][0] += score.error * score.pixels
            totals[score.reading][1] += score.pixels
    return _scores({k: (v[0], v[1]) for k, v in totals.items()})


def check_conventions(root: str | Path, metadata: str | Path, max_scenes: int = 8) -> list[ConventionScore]:
    """Scores for every reading, best first, over up to ``max_scenes`` scenes."""
    return combine(check_scenes(root, metadata, max_scenes))


def _variant(scores: list[ConventionScore], reading: Reading) -> ConventionScore:
    return next(s for s in scores if s.reading == reading)


def choose(scores: list[ConventionScore], margin: float) -> ConventionScore:
    """The best reading, except that an aspect keeps its documented value (DOCUMENTED) unless the
    evidence beats it clearly (error ratio <= ``margin``): a near tie is no reason to convert."""
    chosen = scores[0]
    for index, aspect in enumerate(ASPECTS):
        reading = list(chosen.reading)
        reading[index] = DOCUMENTED[index]
        documented = _variant(scores, tuple(reading))
        if chosen.error > margin * documented.error:
            chosen = documented
    return chosen


def aspect_ratios(scores: list[ConventionScore], chosen: ConventionScore | None = None) -> dict[str, tuple[float, ConventionScore]]:
    """Per aspect (sign, units, timing): error of ``chosen`` (default the best) / error of the best
    reading that differs from it in that aspect alone, and that rival."""
    chosen = chosen or scores[0]
    ratios = {}
    for index, aspect in enumerate(ASPECTS):
        rivals = [s for s in scores if s.pixels and s.reading[index] != chosen.reading[index]
                  and all(s.reading[i] == chosen.reading[i] for i in range(len(ASPECTS)) if i != index)]
        rival = min(rivals, key=lambda s: s.error)
        ratios[aspect] = (chosen.error / max(rival.error, 1e-12), rival)
    return ratios


def _settings(score: ConventionScore) -> str:
    return " ".join(f"{SETTINGS[a]}={getattr(score, a)}" for a in ASPECTS)


def _scene_lines(per_scene: dict[str, list[ConventionScore]], chosen: ConventionScore, margin: float) -> list[str]:
    """One line per scene whose own best reading beats the data set's clearly (a mixed data set)."""
    lines = []
    for video, scores in per_scene.items():
        own, theirs = scores[0], _variant(scores, chosen.reading)
        if own.pixels and own.reading != chosen.reading and own.error <= margin * theirs.error:
            lines.append(f"scene {video} reads best as {own.label} (error {own.error:.4f}), "
                         f"unlike the data set ({chosen.label}: {theirs.error:.4f})")
    return lines


def _aspect_problems(scores: list[ConventionScore], chosen: ConventionScore, margin: float) -> tuple[list[str], list[str]]:
    """(report lines, problems): an aspect whose value is not clearly better than a rival is a
    problem, except a weak tie (WEAK_TIES), which is reported only."""
    lines, problems = [], []
    for aspect, (ratio, rival) in aspect_ratios(scores, chosen).items():
        mine, theirs = getattr(chosen, aspect), getattr(rival, aspect)
        lines.append(f"  {aspect:>6}: {mine} vs {theirs} error ratio {ratio:.2f}")
        if ratio <= margin:
            continue
        if frozenset({mine, theirs}) in WEAK_TIES:
            lines.append(f"  note: {aspect} {mine} and {theirs} are not told apart (the motion barely changes "
                         f"from step to step); keeping {mine}")
        else:
            problems.append(f"{aspect} unclear: {mine} is not clearly better than {theirs} (ratio {ratio:.2f} > {margin})")
    return lines, problems


def verdict(per_scene: dict[str, list[ConventionScore]], margin: float = 0.5,
            expected: FlowConvention | None = None, dataset: str = "data set") -> Verdict:
    """Judge the scores: fail on a near tie in an aspect, on scenes that disagree clearly, on a
    reading the loader cannot convert, and (when given) on a reading unlike the ``expected`` settings."""
    scores = combine(per_scene)
    if scores[0].pixels == 0:
        return Verdict(False, None, (f"{dataset}: no moving pixels found; cannot tell how to read the motion vectors",))
    chosen = choose(scores, margin)
    lines = [f"{dataset}: files read best as {chosen.label} (warp error {chosen.error:.4f} over {chosen.pixels} "
             f"moving pixels; documented: {'/'.join(DOCUMENTED)})"]
    aspect_lines, problems = _aspect_problems(scores, chosen, margin)
    lines += aspect_lines
    problems += _scene_lines(per_scene, chosen, margin)
    if chosen.timing not in FLOW_TIMINGS:
        problems.append("the files hold the motion t -> t+1 at the pixels of frame t (forward flow of the earlier "
                        "frame); no loader setting converts this: invert them into backward flow of frame t+1 first")
    elif expected is not None and chosen.reading != (expected.name, expected.units, expected.timing):
        problems.append(f"the files read best as {chosen.label}, but the settings say "
                        f"{expected.name}/{expected.units}/{expected.timing}: set {_settings(chosen)}")
    else:
        lines.append(f"settings: {_settings(chosen)}")
    lines += [f"FAIL: {p}" for p in problems]
    return Verdict(not problems, chosen, tuple(lines))
