"""Stage 2: LoRA on the WAN 2.2 DiT with flow-matching, head, temporal-consistency and physics losses.

    accelerate launch -m stages.stage2 --config stages/configs/stage2_demo.toml [section.field=value ...]

Usually started through stages/stage2_lora.sh.  Every config field can be overridden as
``section.field=value``, ``--section.field value`` or ``PWM_SECTION__FIELD=value``.
A run resumes from its newest checkpoint by default; ``--resume none|latest|PATH`` chooses.

The recipe: its config (``Stage2Config``, stages/stage2_config.py, re-exported here), how a run is
built (LoRA on the DiT, the stage-1 heads: ``build_stage2``) and its loss (``stage2_objective``,
which the benchmarks time too).  The machinery it shares with stage 1 is in stages/trainer.

Per micro-batch: VAE latents and text context come from the caches; a training sigma is drawn
(shifted towards high noise), the first latent frame stays clean (TI2V); one forward of the
adapted DiT gives both the velocity (flow-matching loss, weighted over timesteps as diffsynth
weighs it unless `objective.fm_weighting` says "uniform") and the tapped grids, which the heads
turn into flow and log distance (head losses + temporal/physics terms against ground truth).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from data.dataset import SimPhysicsDataset
from data.windows import FixedWindows
from heads.io import atomic_write, save_heads
from heads.losses import HeadLoss
from heads.physics import PhysicsLoss
from stages.features import FeatureSource
from stages.loss_weights import sigma_weights, weighted_per_sample
from stages.model import (
    HeadPair,
    at_frames,
    contiguous_frames,
    finite_means,
    perception_change,
    print_perception_change,
    print_terms,
    print_validation,
    validate,
    validation_holds,
)
from stages.reward import RewardWorldModel, reward_objective
from stages.stage2_config import LoraConfig, ObjectiveConfig, Stage2Config  # noqa: F401  (re-exported)
from stages.trainer import seed_everything
from stages.trainer.assemble import make_train_run
from stages.trainer.loop import TrainRun
from stages.trainer.prefetch import to_device
from stages.trainer.runner import run_entry, run_script
from world_model.features import dit_forward, make_noise, noisy_latents
from world_model.flow_matching import flow_matching_loss, sigma_to_timestep
from world_model.lora import add_lora
from world_model.lora_export import export_lora_for_diffsynth

log = logging.getLogger(__name__)


class AdaptedWorldModel(nn.Module):
    """The LoRA-adapted DiT and the heads as one module, so DDP sees every trainable parameter."""

    def __init__(self, dit: nn.Module, heads: HeadPair, taps: tuple[int, ...], checkpointing: bool) -> None:
        super().__init__()
        self.dit, self.heads, self.taps, self.checkpointing = dit, heads, taps, checkpointing

    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, rgb: torch.Tensor,
                frame_index: torch.Tensor | None = None):
        """-> velocity (B, C, T', h, w), flow (B, T, 2, H, W), log distance (B, T, H, W); with
        ``frame_index`` (B, K) the heads decode only those frames (T = K)."""
        out = dit_forward(self.dit, x_t, timestep, context, taps=self.taps, return_output=True,
                          gradient_checkpointing=self.checkpointing and self.training)
        return out.output, *self.decode(out.as_list(), rgb, frame_index)

    def decode(self, taps: list[torch.Tensor], rgb: torch.Tensor,
               frame_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads on tapped features: -> flow, log distance (all frames, or those at ``frame_index``)."""
        if frame_index is None:
            return self.heads(taps, rgb)
        prev = at_frames(rgb, (frame_index - 1).clamp_min(0))
        return self.heads(taps, at_frames(rgb, frame_index), frame_index, prev)


def shifted_sigmas(batch: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Wan's shifted sigma: s = k u / (1 + (k - 1) u), u ~ U(0, 1); k > 1 favours high noise."""
    u = torch.rand(batch, generator=generator)
    return shift * u / (1 + (shift - 1) * u)


def load_stage1_heads(directory: str) -> HeadPair:
    return HeadPair.load(directory)


def stage2_objective(model: nn.Module, latents: torch.Tensor, context: torch.Tensor, batch: dict,
                     sigma: torch.Tensor, noise: torch.Tensor, head_loss: HeadLoss, physics: PhysicsLoss,
                     objective: ObjectiveConfig, frame_index: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The stage-2 loss of one batch from its VAE latents (B, C, T', h, w) and text context: the
    weighted flow-matching loss at ``sigma`` (B,) with ``noise``, the head losses and the
    physics terms on the adapted features, each sample's weighted by w(sigma) (``sigma_weights``);
    with ``frame_index`` (B, K) those on the K frames it names (``contiguous_frames``).
    Training, the probes and the benchmarks all run it."""
    sigma = sigma.to(latents.device, torch.float32)
    timestep = sigma_to_timestep(sigma)
    x_t = noisy_latents(latents, sigma, noise.to(latents))
    velocity, flow, log_depth = model(x_t, timestep, context, batch["rgb"], frame_index)
    fm = flow_matching_loss(velocity, noise.to(latents) - latents, timestep, objective.fm_weighting,
                            objective.timestep_shift)
    heads, metrics = head_terms(flow, log_depth, batch, sigma_weights(sigma, objective), head_loss, physics,
                                objective, frame_index)
    return objective.fm_weight * fm + heads, {"loss_fm": fm.detach(), **metrics}


def head_terms(flow: torch.Tensor, log_depth: torch.Tensor, batch: dict, weights: torch.Tensor, head_loss: HeadLoss,
               physics: PhysicsLoss, objective: ObjectiveConfig,
               frame_index: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The heads' share of the stage-2 loss: head losses (times heads_weight) plus physics terms on
    the decoded frames, each sample's weighted by ``weights`` (B,)."""
    keys = ("flow", "flow_valid", "depth", "depth_valid", "rgb")
    t = {k: batch[k] if frame_index is None else at_frames(batch[k], frame_index) for k in keys}
    heads, head_metrics = weighted_per_sample(head_loss, weights, flow, t["flow"], t["flow_valid"], log_depth,
                                              t["depth"], t["depth_valid"], frame_index=frame_index)
    terms, physics_metrics = heads.new_zeros(()), {}
    if objective.physics_weight > 0:
        terms, physics_metrics = weighted_per_sample(
            physics, weights, log_depth.float(), flow.float(), t["depth"], t["depth_valid"], t["flow"],
            t["flow_valid"], batch["intrinsics"], batch["dt"], frames=t["rgb"], down_cam=batch["down_cam"])
    head_metrics.pop("loss", None)  # the heads' own total; 'loss' is the stage-2 total
    return (objective.heads_weight * heads + objective.physics_weight * terms,
            {"loss_heads": heads.detach(), **head_metrics, **physics_metrics})


@dataclass
class Stage2:
    """A built stage-2 run: the generic TrainRun plus the objective."""

    run: TrainRun
    source: FeatureSource
    val_set: Dataset | None
    probe_set: Dataset
    head_loss: HeadLoss
    physics: PhysicsLoss
    _start_terms: dict = field(default_factory=dict)

    def losses(self, batch: dict, sigma: torch.Tensor, noise: torch.Tensor,
               model: nn.Module | None = None, frame_index: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Total loss and every term for one batch at given sigmas (B,) and noise. Training goes
        through the distributed wrapper (``run.model``); one-rank probes must pass the plain module,
        since a wrapper's forward may start collectives the other ranks never join."""
        latents, context = self.source.encode(batch["rgb"], list(batch["prompt"]))
        if self.run.config.objective.mode == "reward":
            return reward_objective(model or self.run.model, latents, context, batch, sigma, noise, self.head_loss,
                                    self.physics, self.run.config)
        return stage2_objective(model or self.run.model, latents, context, batch, sigma, noise, self.head_loss,
                                self.physics, self.run.config.objective, frame_index)

    def loss_fn(self, batch: dict, micro: int) -> tuple[torch.Tensor, dict]:
        """Training: sigmas and noise drawn from (seed, step, micro-batch, rank) alone, so a resumed
        run draws exactly what the uninterrupted run drew, whatever else touched the global RNG."""
        run = self.run
        generator = torch.Generator().manual_seed(
            hash((run.config.run.seed, run.step, micro, run.accelerator.process_index)) & 0x7FFF_FFFF_FFFF)
        batch_size = batch["rgb"].shape[0]
        shape = self.source.preset.latent_shape(batch["rgb"].shape[1], *batch["rgb"].shape[3:])
        sigma = shifted_sigmas(batch_size, run.config.objective.timestep_shift, generator)
        noise = torch.randn(batch_size, *shape, generator=generator)
        frames = contiguous_frames(batch_size, batch["rgb"].shape[1], run.config.objective.heads_frames, generator)
        return self.losses(batch, sigma, noise, frame_index=frames)

    @torch.no_grad()
    def probe_terms(self, sigmas: tuple[float, ...] = (0.3, 0.7)) -> dict[str, float]:
        """Every loss term averaged over fixed training windows at fixed sigmas and noise: the
        same numbers before and after training say whether each term went down."""
        model, device, seed = self.run.unwrapped, self.run.accelerator.device, self.run.config.objective.noise_seed
        was_training = model.training
        model.eval()
        rows: list[dict[str, float]] = []
        for index, batch in enumerate(DataLoader(self.probe_set, batch_size=1)):
            batch = to_device(batch, device)
            shape = self.source.preset.latent_shape(batch["rgb"].shape[1], *batch["rgb"].shape[3:])
            for k, sigma in enumerate(sigmas):
                noise = make_noise((1, *shape), seed=seed + 1000 * index + k)
                total, metrics = self.losses(batch, torch.tensor([sigma]), noise, model)
                rows.append({key: float(value) for key, value in {"loss": total, **metrics}.items()})
        model.train(was_training)
        return finite_means(rows)

    def validate(self) -> dict[str, float]:
        """Head metrics on adapted features at the extraction timestep, beside the baselines."""
        if self.val_set is None:
            return {}
        device, loss = self.run.accelerator.device, self.run.config.loss
        model = self.run.unwrapped
        batches = (to_device(b, device) for b in DataLoader(self.val_set, batch_size=1))

        def taps(batch: dict) -> list[torch.Tensor]:
            latents, context = self.source.encode(batch["rgb"], list(batch["prompt"]))
            with torch.no_grad():
                return self.source.backbone.extract(latents, context, self.source.extraction).as_list()

        return validate(model.heads, batches, taps, loss.moving_threshold, loss.depth_far,
                        flow_baselines=self.run.config.run.val_flow_baselines)

    def _kept_across_resumes(self, name: str, compute: Callable[[], dict]) -> dict:
        """``compute()`` on the main process once per run, saved as run_dir/``name`` and read back
        on a resume, so that start and end are compared on the same footing."""
        path = self.run.run_dir / name
        found = path.is_file()
        # Every rank looks before rank 0 may write the file: all take the same branch below, so
        # all reach the same barriers (a rank that saw a fresh file once skipped one and hung the run).
        self.run.accelerator.wait_for_everyone()
        if found:
            return json.loads(path.read_text())
        main = self.run.accelerator.is_main_process
        values = compute() if main else {}
        if main:
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(values, indent=2)  # atomic: a run killed here must resume, not fail to parse
            atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        self.run.accelerator.wait_for_everyone()
        return values

    def before_training(self) -> None:
        """Loss terms on fixed training windows, and the validation table (the stage-1 heads on
        the unadapted backbone: LoRA starts at zero), before training (kept across resumes)."""
        self._start_terms = self._kept_across_resumes("terms_start.json", self.probe_terms)
        self._start_validation = self._kept_across_resumes("validation_start.json", self.validate)

    def report(self, metrics: dict[str, float]) -> None:
        """Start vs end of every loss term (also in final/terms.json), the validation table, and
        perception at the end against the start (also in final/validation.json)."""
        start, end = self._start_terms, self.probe_terms()
        final = self.run.run_dir / "final"
        (final / "terms.json").write_text(json.dumps({"start": start, "end": end}, indent=2))
        print_terms(start, end)
        holds = validation_holds(self.run.config) if metrics else ""
        print_validation(metrics, holds)
        change = perception_change(self._start_validation, metrics)
        print_perception_change(change)
        if metrics:
            table = {self.run.config.run.val_split: {"holds": holds, "metrics": metrics,
                                                     "start": self._start_validation, "perception": change}}
            text = json.dumps(table, indent=2, sort_keys=True) + "\n"
            atomic_write(final / "validation.json", lambda tmp: Path(tmp).write_text(text))

    def export(self, final: Path) -> None:
        model = self.run.unwrapped
        export_lora_for_diffsynth(model.dit, final / "lora.safetensors", dtype=torch.float32)
        save_heads(final / "heads", model.heads.flow, model.heads.depth)


def build_stage2(config: Stage2Config, accelerator) -> Stage2:
    seed_everything(config.run.seed)
    heads = load_stage1_heads(config.objective.heads_dir).to(accelerator.device)
    heads.requires_grad_(config.lora.train_heads)
    source = FeatureSource(config.backbone, accelerator.device, config.features.cache_dir)
    dit = add_lora(source.backbone.dit, config.lora.rank, config.lora.alpha, config.lora.targets)
    model = AdaptedWorldModel(dit, heads, source.taps, config.lora.gradient_checkpointing)
    if config.objective.mode == "reward":
        model = RewardWorldModel(dit, heads, source.taps, config.lora.gradient_checkpointing, source.extraction,
                                 config.reward, config.objective.timestep_shift)
    train_set = SimPhysicsDataset(config.data, split=config.run.train_split, train=True, seed=config.run.seed)
    probe_base = SimPhysicsDataset(config.data, split=config.run.train_split)
    probe_set = Subset(FixedWindows(probe_base, 1), range(min(len(probe_base), 8)))
    val_set = None
    if config.run.val_split:
        val_base = SimPhysicsDataset(config.data, split=config.run.val_split)
        val_set = Subset(FixedWindows(val_base, 1), range(min(len(val_base), config.run.val_max_windows)))
    run = make_train_run(config, accelerator, model, train_set, lr_scales={"heads.": config.lora.heads_lr_scale})
    return Stage2(run=run, source=source, val_set=val_set,
                  probe_set=probe_set, head_loss=HeadLoss(config.loss), physics=PhysicsLoss(config.physics))


def main(argv: list[str] | None = None) -> dict[str, float]:
    return run_entry(Stage2Config, build_stage2, argv, __doc__)


if __name__ == "__main__":
    run_script(main)
