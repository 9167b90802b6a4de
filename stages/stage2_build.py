"""Assemble a stage-2 run: LoRA on the DiT, stage-1 heads, and the joint objective.

Per micro-batch: VAE latents and text context come from the caches; a training sigma is drawn
(shifted towards high noise), the first latent frame stays clean (TI2V); one forward of the
adapted DiT gives both the velocity (flow-matching loss, weighted over timesteps as diffsynth
weighs it unless `objective.fm_weighting` says "uniform") and the tapped grids, which the heads
turn into flow and log distance (head losses + temporal/physics terms against ground truth).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from data.dataset import SimPhysicsDataset
from heads.io import save_heads
from heads.losses import HeadLoss
from heads.physics import PhysicsLoss
from stages.trainer.assemble import make_train_run
from stages.trainer import seed_everything
from stages.trainer.prefetch import to_device
from data.windows import FixedWindows
from stages.features import FeatureSource
from stages.trainer.loop import TrainRun
from stages.model import HeadPair, print_validation, validate, validation_holds
from stages.stage2_config import Stage2Config
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

    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, rgb: torch.Tensor):
        """-> velocity (B, C, T', h, w), flow (B, T, 2, H, W), log distance (B, T, H, W)."""
        out = dit_forward(self.dit, x_t, timestep, context, taps=self.taps, return_output=True,
                          gradient_checkpointing=self.checkpointing and self.training)
        flow, log_depth = self.heads(out.as_list(), rgb)
        return out.output, flow, log_depth


def shifted_sigmas(batch: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Wan's shifted sigma: s = k u / (1 + (k - 1) u), u ~ U(0, 1); k > 1 favours high noise."""
    u = torch.rand(batch, generator=generator)
    return shift * u / (1 + (shift - 1) * u)


def load_stage1_heads(directory: str) -> HeadPair:
    return HeadPair.load(directory)


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
               model: nn.Module | None = None) -> tuple[torch.Tensor, dict]:
        """Total loss and every term for one batch at given sigmas (B,) and noise. Training goes
        through the distributed wrapper (``run.model``); one-rank probes must pass the plain module,
        since a wrapper's forward may start collectives the other ranks never join."""
        config, model = self.run.config, model or self.run.model
        latents, context = self.source.encode(batch["rgb"], list(batch["prompt"]))
        objective = config.objective
        sigma = sigma.to(latents.device, torch.float32)
        timestep = sigma_to_timestep(sigma)
        x_t = noisy_latents(latents, sigma, noise.to(latents))
        velocity, flow, log_depth = model(x_t, timestep, context, batch["rgb"])
        fm = flow_matching_loss(velocity, noise.to(latents) - latents, timestep, objective.fm_weighting,
                                objective.timestep_shift)
        heads, head_metrics = self.head_loss(flow, batch["flow"], batch["flow_valid"], log_depth,
                                                     batch["depth"], batch["depth_valid"])
        physics, physics_metrics = self.physics(
            log_depth.float(), flow.float(), batch["depth"], batch["depth_valid"], batch["flow"], batch["flow_valid"],
            batch["intrinsics"], batch["dt"], frames=batch["rgb"], down_cam=batch["down_cam"])
        total = objective.fm_weight * fm + objective.heads_weight * heads + physics
        head_metrics.pop("loss", None)  # the heads' own total; 'loss' is the stage-2 total
        return total, {"loss_fm": fm.detach(), "loss_heads": heads.detach(), **head_metrics, **physics_metrics}

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
        return self.losses(batch, sigma, noise)

    @torch.no_grad()
    def probe_terms(self, sigmas: tuple[float, ...] = (0.3, 0.7)) -> dict[str, float]:
        """Every loss term averaged over fixed training windows at fixed sigmas and noise: the
        same numbers before and after training say whether each term went down."""
        model, device, seed = self.run.unwrapped, self.run.accelerator.device, self.run.config.objective.noise_seed
        was_training = model.training
        model.eval()
        totals: dict[str, float] = {}
        count = 0
        for index, batch in enumerate(DataLoader(self.probe_set, batch_size=1)):
            batch = to_device(batch, device)
            shape = self.source.preset.latent_shape(batch["rgb"].shape[1], *batch["rgb"].shape[3:])
            for k, sigma in enumerate(sigmas):
                noise = make_noise((1, *shape), seed=seed + 1000 * index + k)
                total, metrics = self.losses(batch, torch.tensor([sigma]), noise, model)
                for key, value in {"loss": total, **metrics}.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                count += 1
        model.train(was_training)
        return {k: v / max(count, 1) for k, v in totals.items()}

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

        return validate(model.heads, batches, taps, loss.moving_threshold, loss.depth_far)

    def before_training(self) -> None:
        """Loss terms on fixed training windows before training (kept across resumes)."""
        path = self.run.run_dir / "terms_start.json"
        found = path.is_file()
        # Every rank looks before rank 0 may write the file: all take the same branch below, so
        # all reach the same barriers (a rank that saw a fresh file once skipped one and hung the run).
        self.run.accelerator.wait_for_everyone()
        if found:
            self._start_terms = json.loads(path.read_text())
            return
        main = self.run.accelerator.is_main_process
        self._start_terms = self.probe_terms() if main else {}
        if main:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self._start_terms, indent=2))
        self.run.accelerator.wait_for_everyone()

    def report(self, metrics: dict[str, float]) -> None:
        """Start vs end of every loss term (also in final/terms.json), then the validation table."""
        start, end = self._start_terms, self.probe_terms()
        (self.run.run_dir / "final" / "terms.json").write_text(json.dumps({"start": start, "end": end}, indent=2))
        print(f"\n{'term (training windows)':<26}{'start':>11}{'end':>11}   pixels start/end")
        for key in sorted(start):
            if key.startswith(("loss", "phys_", "flow_epe", "depth_")) and not key.endswith("_px"):
                pixels = f"   {start[key + '_px']:.0f}/{end.get(key + '_px', 0):.0f}" if key + "_px" in start else ""
                print(f"{key:<26}{start[key]:>11.4f}{end.get(key, float('nan')):>11.4f}{pixels}")
        print_validation(metrics, validation_holds(self.run.config) if metrics else "")

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
    train_set = SimPhysicsDataset(config.data, split=config.run.train_split, train=True, seed=config.run.seed)
    probe_base = SimPhysicsDataset(config.data, split=config.run.train_split)
    probe_set = Subset(FixedWindows(probe_base, 1), range(min(len(probe_base), 8)))
    val_set = None
    if config.run.val_split:
        val_base = SimPhysicsDataset(config.data, split=config.run.val_split)
        val_set = Subset(FixedWindows(val_base, 1), range(min(len(val_base), config.run.val_max_windows)))
    return Stage2(run=make_train_run(config, accelerator, model, train_set), source=source, val_set=val_set,
                  probe_set=probe_set, head_loss=HeadLoss(config.loss), physics=PhysicsLoss(config.physics))
