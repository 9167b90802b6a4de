"""Stage 1: train motion-vector and depth heads on a frozen WAN 2.2 backbone.

    accelerate launch -m stages.stage1 --config stages/configs/stage1_demo.toml [section.field=value ...]

Usually started through stages/stage1_heads.sh.  Every config field can be overridden as
``section.field=value``, ``--section.field value`` or ``PWM_SECTION__FIELD=value``.
A run resumes from its newest checkpoint by default; ``--resume none|latest|PATH`` chooses.

The recipe in one file: its config (``Stage1Config``), how a run is built from it (features
cached or online, data, heads, optimizer: ``build_stage1``) and its loss (``heads_loss``, which
the benchmarks time too).  The machinery it shares with stage 2 is in stages/trainer.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from data.augment import AugmentConfig
from data.complexity import complexity_ranks, scene_complexity
from data.dataset import DataConfig, SimPhysicsDataset
from data.metadata import read_metadata
from data.metadata_split import describe_split
from data.scene_meta import read_scene_meta
from data.windows import FixedWindows
from heads.io import atomic_write, save_heads
from heads.losses import HeadLoss, LossConfig
from heads.visualize import perception_sheet
from stages.features import (
    CachedFeatureWindows,
    FeatureCache,
    FeatureSource,
    check_budget,
    estimate_bytes,
)
from stages.model import (
    HeadPair,
    SheetRows,
    build_heads,
    head_inputs,
    print_validation,
    validate,
    validation_holds,
)
from stages.target_cache import TargetCache, entry_bytes
from stages.trainer import seed_everything
from stages.trainer.assemble import make_train_run
from stages.trainer.curriculum import CurriculumConfig, CurriculumSampler
from stages.trainer.loop import TrainRun
from stages.trainer.preemption import Preempted, StopRequest
from stages.trainer.prefetch import to_device
from stages.trainer.runner import ema_weights, run_entry, run_script
from stages.trainer.sections import (
    BackboneConfig,
    CheckpointConfig,
    EMAConfig,
    FeatureConfig,
    GuardConfig,
    HeadsConfig,
    LogConfig,
    OptimConfig,
    RunConfig,
)
from world_model.presets import get_preset


@dataclass
class Stage1RunConfig(RunConfig):
    """Stage 1's run section: the shared one plus the splits reported once at the end."""

    report_splits: list[str] = field(default_factory=list)
    """Further metadata splits validated once after training with the final (EMA) heads, each printed with what
    it holds relative to training and written to final/validation.json with the val split's numbers: e.g.
    ["holdout", "holdout_look"] for families and looks never seen in training."""


@dataclass
class Stage1Config:
    """Stage 1: heads on tapped features of the frozen WAN backbone (see stages/configs/*.toml)."""

    run: Stage1RunConfig = field(default_factory=Stage1RunConfig)
    """Output directory, seed, batching and validation cadence."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data root, metadata CSV, window size/stride, resize, crop position and flips."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation: colour jitter, random resized crops, stride jitter (each off by default)."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """Sample simple scenes more often early in training (off by default)."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """Backbone preset and weights, feature extraction timestep/noise/taps."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Cached or online features, cache location and budget."""
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    """Head architecture knobs."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Flow/depth loss weights and thresholds."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """AdamW, clipping, accumulation and warmup + cosine schedule."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence, retention and resume."""
    ema: EMAConfig = field(default_factory=EMAConfig)
    """EMA of the head weights (used for validation and the final export when enabled)."""
    guard: GuardConfig = field(default_factory=GuardConfig)
    """Non-finite loss handling."""
    log: LogConfig = field(default_factory=LogConfig)
    """Tracking backend and cadence."""

    def __post_init__(self) -> None:
        augmenting = self.augment.active or self.data.hflip_prob > 0
        if self.features.mode == "cached" and augmenting and self.features.views_per_window < 2:
            raise ValueError("features.mode=cached with augmentation (augment.*, data.hflip_prob) needs "
                             "features.views_per_window >= 2: view 0 of each window is un-augmented and only "
                             "views >= 1 are augmented copies (or use features.mode=online)")


log = logging.getLogger(__name__)

SHEET_SCENES = 4
"""Windows (one per scene) of each split drawn on its final/perception_<split>.png."""


def sheet_name(split: str) -> str:
    """final/'s contact-sheet file of a split."""
    return f"perception_{re.sub(r'[^A-Za-z0-9_.-]', '_', split)}.png"


def heads_loss(model: HeadPair, head_loss: HeadLoss, taps: list[torch.Tensor], batch: dict) -> tuple[torch.Tensor, dict]:
    """Stage 1's loss of one batch: both heads on the tapped grids (and the batch's RGB, for all
    frames or its supervised ones), scored against the batch's targets.  Training and the
    benchmarks both run it."""
    flow, log_depth = model(taps, *head_inputs(batch))
    return head_loss(flow, batch["flow"], batch["flow_valid"], log_depth, batch["depth"], batch["depth_valid"],
                     frame_index=batch.get("frame_index"))


@dataclass
class Stage1:
    """A built stage-1 run: the generic TrainRun plus what the recipe needs to compute losses."""

    run: TrainRun
    loss_fn: Callable
    val_batches: Callable[[], list[dict]] | None
    taps_fn: Callable[[dict], list[torch.Tensor]]
    source: FeatureSource | None
    report_batches: dict[str, Callable[[], list[dict]]] = field(default_factory=dict)

    def validate(self, batches_fn: Callable[[], list[dict]] | None = None, keep: SheetRows | None = None
                 ) -> dict[str, float]:
        """Head metrics beside the trivial baselines on the validation windows (or ``batches_fn``'s);
        ``keep`` collects contact-sheet rows from the same predictions."""
        batches_fn = batches_fn or self.val_batches
        if batches_fn is None:
            return {}
        device, loss = self.run.accelerator.device, self.run.config.loss
        batches = (to_device(b, device) for b in batches_fn())
        return validate(self.run.unwrapped, batches, self.taps_fn, loss.moving_threshold, loss.depth_far,
                        flow_baselines=self.run.config.run.val_flow_baselines, keep=keep)

    def before_training(self) -> None:
        """Nothing to record before stage 1."""

    def report(self, metrics: dict[str, float]) -> None:
        """The validation table, then one per report split (final EMA heads), all saved to
        final/validation.json: what a user reads at the end of a run, kept beside the heads; and
        per split a contact sheet of its first SHEET_SCENES windows, final/perception_<split>.png
        (`heads.visualize.perception_sheet`; the val split's metrics came from the loop, so its
        windows get one more forward here)."""
        config = self.run.config
        holds = validation_holds(config) if metrics else ""
        print_validation(metrics, holds)
        tables = {config.run.val_split: {"holds": holds, "metrics": metrics}} if metrics else {}
        sheets = {}
        with ema_weights(self):
            if metrics and self.val_batches is not None:
                sheets[config.run.val_split] = SheetRows(SHEET_SCENES)
                self.validate(lambda: itertools.islice(self.val_batches(), SHEET_SCENES), keep=sheets[config.run.val_split])
            for split, batches_fn in self.report_batches.items():
                sheets[split] = SheetRows(SHEET_SCENES)
                split_metrics = self.validate(batches_fn, keep=sheets[split])
                holds = describe_split(config.data.root, config.data.metadata, split, config.run.train_split)
                print_validation(split_metrics, holds)
                tables[split] = {"holds": holds, "metrics": split_metrics}
        final = self.run.run_dir / "final"
        if tables and final.is_dir():
            text = json.dumps(tables, indent=2, sort_keys=True) + "\n"
            atomic_write(final / "validation.json", lambda tmp: Path(tmp).write_text(text))
        for split, rows in sheets.items():
            if rows.rows and final.is_dir():
                image = perception_sheet(rows.rows)
                atomic_write(final / sheet_name(split), lambda tmp, image=image: image.save(tmp, format="PNG"))

    def export(self, final: Path) -> None:
        save_heads(final, self.run.unwrapped.flow, self.run.unwrapped.depth)


def _cached(split_base: SimPhysicsDataset, config: Stage1Config, source: FeatureSource, accelerator,
            per_scene: int, repeat: int, train: bool) -> CachedFeatureWindows:
    """Fixed windows with features computed once, sharded over processes, then shared by all.

    With ``window.supervised_frames`` K > 0, training windows supervise K random frames each and
    skip the whole-window RGB (only the backbone, which the cached path never runs, reads it).
    """
    supervised = config.data.window.supervised_frames if train else 0
    views = config.features.views_per_window if train else 1
    windows = FixedWindows(split_base, per_scene, repeat, supervised_frames=supervised, seed=config.run.seed,
                           video=not supervised, views=views)
    cache = FeatureCache(config.features.cache_dir, windows, source)
    targets = TargetCache(config.features.cache_dir, windows) if config.features.cache_targets else None
    if accelerator.is_main_process:
        for name, entries in (("feature", cache), ("target", targets)):
            for line in entries.repair(full=config.features.verify_cache == "full") if entries else ():
                log.warning("%s cache: removed a damaged entry, to be recomputed: %s", name, line)
    accelerator.wait_for_everyone()
    data = config.data
    needed = estimate_bytes(source, len(cache.missing()), data.window.num_frames, data.height, data.width)
    if targets is not None:
        needed += len(targets.missing()) * entry_bytes(data.window.num_frames, data.height, data.width)
    with StopRequest() as stop:  # a SIGTERM ends the build after the window in hand (stages/trainer/preemption.py)
        if accelerator.is_main_process:
            log.info("feature cache: %d windows x %d views, %d to compute (targets: %s), %.2f GB to write",
                     len(windows.refs), views, len(cache.missing()),
                     f"{len(targets.missing())} to compute" if targets else "not cached", needed / 1e9)
            check_budget(needed, config.features.max_cache_gb, Path(config.features.cache_dir))
        accelerator.wait_for_everyone()
        rank, world, progress = accelerator.process_index, accelerator.num_processes, accelerator.is_local_main_process
        skip = train and config.data.on_error == "skip"
        written = cache.build(source, rank, world, progress, should_stop=lambda: stop.received, skip_bad_windows=skip,
                              loaded=targets.store_sample if targets is not None else None)
        if targets is not None:  # the windows whose features were cached already
            targets.build(rank, world, progress, should_stop=lambda: stop.received, skip_bad_windows=skip)
    if stop.received:
        log.warning("SIGTERM: stopped building the feature cache (this rank wrote %d windows); run the same "
                    "command to continue it", written)
        raise Preempted()
    accelerator.wait_for_everyone()
    return CachedFeatureWindows(windows, cache, targets)


def _datasets(config: Stage1Config, source: FeatureSource, accelerator) -> tuple[Dataset, dict[str, Dataset]]:
    """The training set and the scored ones, keyed by split: the validation split (if any), then the
    report splits (one fixed window per scene each)."""
    run, online = config.run, config.features.mode == "online"
    train_base = SimPhysicsDataset(config.data, split=run.train_split, train=online, seed=run.seed,
                                   augment=config.augment)
    scored = [s for s in dict.fromkeys([run.val_split, *_present(config, run.report_splits)]) if s]
    bases = {split: SimPhysicsDataset(config.data, split=split, train=False) for split in scored}
    if online:
        return train_base, {split: FixedWindows(base, 1) for split, base in bases.items()}
    train = _cached(train_base, config, source, accelerator, config.features.windows_per_scene, config.data.repeat,
                    train=True)
    return train, {split: _cached(base, config, source, accelerator, 1, 1, train=False) for split, base in bases.items()}


def _present(config: Stage1Config, splits: list[str]) -> list[str]:
    """The report splits the metadata has; a missing one is named in a warning and skipped (the demo
    recipe asks for holdout and holdout_look, which metadata without held-out looks lacks)."""
    present = {e.split for e in read_metadata(config.data.metadata)}
    for split in splits:
        if split not in present:
            log.warning("run.report_splits: %s has no rows with split %r (splits there: %s); not reported",
                        config.data.metadata, split, ", ".join(sorted(present)))
    return [s for s in splits if s in present]


def curriculum_sampler(config: Stage1Config, accelerator, train_set: Dataset) -> CurriculumSampler | None:
    """The curriculum over the training items (None when off): each item ranked by the complexity
    of its scene's scene.json among the training scenes."""
    if not config.curriculum.enabled:
        return None
    base = getattr(getattr(train_set, "windows", None), "base", train_set)
    complexity = [scene_complexity(read_scene_meta(scene.directory)) for scene in base.scenes]
    scene_ranks = complexity_ranks([None if c is None else c.score for c in complexity])
    unscored = sum(c is None for c in complexity)
    if unscored and accelerator.is_main_process:
        log.warning("curriculum: %d of %d training scenes have no scene.json objects to score; they rank in the "
                    "middle", unscored, len(complexity))
    ranks = [float(scene_ranks[train_set.scene_of(i)]) for i in range(len(train_set))]
    return CurriculumSampler(ranks, config.curriculum, accelerator.num_processes, accelerator.process_index,
                             seed=config.run.seed)


def build_stage1(config: Stage1Config, accelerator) -> Stage1:
    """Everything training needs (the runner writes the resolved config once resume has succeeded)."""
    seed_everything(config.run.seed)
    preset = get_preset(config.backbone.preset)
    # Heads first, straight after seeding: their initialisation must not depend on the cache state.
    model = build_heads(config.heads, preset, len(preset.taps(tuple(config.backbone.taps) or None)))
    source = FeatureSource(config.backbone, accelerator.device, config.features.cache_dir)
    train_set, scored_sets = _datasets(config, source, accelerator)
    if config.features.mode == "cached":
        source.release_encoders()
        source = None  # the cached path never touches the backbone again
    return _assemble(config, accelerator, model, train_set, scored_sets, source)


def _assemble(config: Stage1Config, accelerator, model: HeadPair, train_set, scored_sets: dict[str, Dataset],
              source) -> Stage1:
    run = make_train_run(config, accelerator, model, train_set, curriculum_sampler(config, accelerator, train_set))
    model = run.model
    head_loss = HeadLoss(config.loss)

    def taps_fn(batch: dict) -> list[torch.Tensor]:
        return batch["taps"] if "taps" in batch else source.extract(batch["rgb"], list(batch["prompt"]))

    # An augmented online window is never seen twice: caching its latents would only fill the disk.
    store = not (config.augment.active or config.data.hflip_prob > 0)

    def loss_fn(batch: dict, micro: int = 0):
        taps = batch["taps"] if "taps" in batch else source.extract(batch["rgb"], list(batch["prompt"]), store)
        return heads_loss(model, head_loss, taps, batch)

    def batches_of(dataset: Dataset) -> Callable[[], DataLoader]:
        limit = min(len(dataset), config.run.val_max_windows)
        return lambda: DataLoader(torch.utils.data.Subset(dataset, range(limit)), batch_size=1)

    scored = {split: batches_of(dataset) for split, dataset in scored_sets.items()}
    return Stage1(run=run, loss_fn=loss_fn, val_batches=scored.get(config.run.val_split), taps_fn=taps_fn,
                  source=source, report_batches={s: scored[s] for s in config.run.report_splits if s in scored})


def main(argv: list[str] | None = None) -> dict[str, float]:
    return run_entry(Stage1Config, build_stage1, argv, __doc__)


if __name__ == "__main__":
    run_script(main)
