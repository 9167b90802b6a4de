"""Score a folder of generated videos against a benchmark in the official Physics-IQ layout.

Works on the real dataset and on our takes exported by `physics_iq_export`. Per (scenario,
perspective): the generated video named by the take-1 ID, take 1 and take 2 are decoded with
OpenCV (as the official tool does), cut to the first ``EVAL_SECONDS * fps`` frames (or fewer when
the real videos are shorter), and compared by `heads.video_metrics.physics_iq_metrics`; the score
and its breakdown per category (family) come from `heads.iq_score`. Motion masks are computed
from the decoded videos with the official algorithm; the dataset's precomputed ``video-masks``
(the same algorithm, stored as lossy mp4) are not read.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from data import physics_iq_layout as layout
from data.errors import DataFormatError
from data.video_io import read_mp4, video_fps, write_mp4
from heads import iq_score
from heads.video_metrics import (
    EVAL_DOWNSAMPLE,
    EVAL_SECONDS,
    METRIC_NAMES,
    physics_iq_metrics,
)

log = logging.getLogger(__name__)


def folder_fps(videos: dict[str, Path]) -> int:
    """The one frame rate of a folder of generated videos (the official tool requires one)."""
    rates = {round(video_fps(p)) for p in videos.values()}
    if len(rates) != 1:
        raise DataFormatError(next(iter(videos.values())).parent, f"videos have different frame rates {sorted(rates)}")
    return rates.pop()


def case_metrics(case: layout.Case, generated: Path, fps: int, downsample: int = EVAL_DOWNSAMPLE) -> dict:
    """The four metrics of one generated video and of take 2, both against take 1."""
    limit = EVAL_SECONDS * fps
    take1, take2 = read_mp4(case.take1.path, limit), read_mp4(case.take2.path, limit)
    frames = min(len(take1), len(take2))
    prediction = read_mp4(generated, frames)
    if len(prediction) < frames:
        raise DataFormatError(generated, f"has {len(prediction)} frames; the real videos have {frames} "
                                         f"(generate {frames / fps:g} s at {fps} fps)")
    metrics = physics_iq_metrics(prediction, take1[:frames], take2[:frames], downsample=downsample)
    return {"id": case.take1.id, "scene": case.take1.scenario, "view": case.take1.perspective,
            "family": case.category or case.take1.scenario, "frames": frames, **metrics}


def score_folder(benchmark: str | Path, generated: str | Path, fps: int = 0, downsample: int = EVAL_DOWNSAMPLE,
                 samples: int = iq_score.BOOTSTRAP_SAMPLES, seed: int = 0, subset: bool = False) -> dict:
    """{model, fps, downsample, records, all, per_family} for one folder of generated videos;
    ``subset`` scores only the cases the folder has (a smoke run), else a missing video is an error."""
    videos = layout.generated_videos(generated)
    if not videos:
        raise DataFormatError(generated, "no .mp4 files")
    fps = fps or folder_fps(videos)
    cases = layout.read_cases(benchmark, fps)
    missing = [c.generated_name for c in cases if c.take1.id not in videos]
    if subset:
        log.warning("scoring %d of %d case(s): not comparable with a full run", len(cases) - len(missing), len(cases))
        cases, missing = [c for c in cases if c.take1.id in videos], []
    if missing:
        raise DataFormatError(generated, f"{len(missing)} of {len(cases)} generated videos missing, e.g. {missing[:3]}")
    records = [case_metrics(c, videos[c.take1.id], fps, downsample) for c in cases]
    return {"model": Path(generated).name, "fps": fps, "downsample": downsample, "records": records,
            **iq_score.score_table(records, "family", samples, seed)}


def leaderboard(results: list[dict]) -> str:
    """A markdown table, best score first: score, interval, the four metrics, then per family."""
    head = "| model | score % | 95 % interval | " + " | ".join(METRIC_NAMES) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRIC_NAMES))]
    for r in sorted(results, key=lambda r: -np.nan_to_num(r["all"]["score"], nan=-1.0)):
        a = r["all"]
        lines.append(f"| {r['model']} | {a['score']:.2f} | [{a['ci_low']:.2f}, {a['ci_high']:.2f}] | "
                     + " | ".join(f"{a['metrics'][k]:.4f}" for k in METRIC_NAMES) + " |")
    lines += ["", "| model | family | score % | scenes |", "|---|---|---|---|"]
    for r in results:
        lines += [f"| {r['model']} | {f} | {s['score']:.2f} | {s['scenes']} |" for f, s in r["per_family"].items()]
    return "\n".join(lines)


def copy_takes_as_generated(benchmark: str | Path, out: str | Path, fps: int) -> Path:
    """Each case's take-2 file copied under its take-1 ID, as a model's output would be named: the
    ideal model, which scores 100 % (the same decoded frames as the physical variance)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for case in layout.read_cases(benchmark, fps):
        shutil.copyfile(case.take2.path, out / case.generated_name)
    return out


def frozen_as_generated(benchmark: str | Path, out: str | Path, fps: int) -> Path:
    """A model that never moves: the first test frame of each take 1 repeated for its length."""
    out = Path(out)
    for case in layout.read_cases(benchmark, fps):
        first = read_mp4(case.take1.path)
        write_mp4(out / case.generated_name, np.repeat(first[:1], len(first), axis=0), fps)
    return out
