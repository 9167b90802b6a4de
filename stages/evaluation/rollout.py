"""TI2V rollouts with diffsynth's WanVideoPipeline, assembled in memory around the evaluated DiT.

The pipeline gets the *same* DiT module the feature source taps, so fusing the stage-2 LoRA into it
(`world_model.lora_export.load_lora_into_dit`, diffsynth's own loader) changes generation and the
heads' features together. Its VAE and text encoder are shared with the feature source's encoders
(same cache ids), so each big module is resident once. Generated videos are compared with the
ground-truth window, resampled to the backbone's frame rate, by the Physics-IQ metrics
(`heads.video_metrics.physics_iq_metrics`) on generated frames only.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from heads.video_metrics import physics_iq_metrics
from stages.features import FeatureSource
from stages.trainer.sections import BackboneConfig
from world_model.encoders import PromptEncoder, VideoLatentEncoder
from world_model.progress import diffsynth_progress

log = logging.getLogger(__name__)

FULL_RES_DOWNSAMPLE = 4
"""Physics-IQ's official comparison size is 1/4 of the ground truth (EVAL_DOWNSAMPLE)."""
SMALL_FRAME_PX = 256
"""Below this frame size /4 would erase small objects, so the comparison runs at full resolution."""


def _modules(config: BackboneConfig, device: torch.device, dtype: torch.dtype):
    """VAE, text encoder and tokenizer of the backbone: local weights, or the tiny preset's seeded ones."""
    from world_model import loading, models

    if config.model_dir:
        return (loading.load_vae(config.model_dir, config.preset, device=device, dtype=dtype),
                loading.load_text_encoder(config.model_dir, config.preset, device=device, dtype=dtype),
                loading.load_tokenizer(config.model_dir, config.preset))
    return (models.build_vae(config.preset, seed=config.seed, device=device, dtype=dtype),
            models.build_text_encoder(config.preset, seed=config.seed, device=device, dtype=dtype),
            models.build_stand_in_tokenizer(config.preset))


def build_pipeline(source: FeatureSource):
    """A WanVideoPipeline around ``source``'s DiT; rebinds the source's encoders to its modules."""
    from diffsynth.pipelines.wan_video import WanVideoPipeline

    device, dtype = source.device, source.dtype
    pipe = WanVideoPipeline(device=str(device), torch_dtype=dtype)
    vae, text_encoder, tokenizer = _modules(source.config, device, dtype)
    pipe.dit, pipe.vae, pipe.text_encoder, pipe.tokenizer = source.backbone.dit, vae, text_encoder, tokenizer
    _, spatial, _ = source.preset.token_stride
    pipe.height_division_factor = pipe.width_division_factor = spatial
    old_video, old_prompt = source.video_encoder, source.prompt_encoder
    source.video_encoder = VideoLatentEncoder(vae, old_video.model_id, source.preset, device=device, dtype=dtype,
                                              cache=old_video.cache, tiled=old_video.tiled)
    source.prompt_encoder = PromptEncoder(text_encoder, tokenizer, old_prompt.encoder_id, device=device,
                                          dtype=dtype, cache=old_prompt.cache)
    return pipe


@torch.no_grad()
def generate(pipe, first_frame: torch.Tensor, prompt: str, *, seed: int, frames: int, steps: int,
             cfg_scale: float) -> torch.Tensor:
    """first_frame (3, H, W) in [0, 1] -> generated video (T, 3, H, W) in [0, 1] (fp32, CPU)."""
    h, w = first_frame.shape[-2:]
    image = Image.fromarray((first_frame.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    with diffsynth_progress(f"rollout seed {seed}") as bar:  # steps and VAE passes: transient bars of ours
        video = pipe(prompt=prompt, input_image=image, num_frames=frames, height=h, width=w, seed=seed,
                     num_inference_steps=steps, cfg_scale=cfg_scale, progress_bar_cmd=bar)
    array = np.stack([np.asarray(frame.convert("RGB")) for frame in video]).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def iq_downsample(requested: int, size: int) -> int:
    """The Physics-IQ comparison factor: the requested one, or 4 at >= 256 px and 1 below."""
    return requested or (FULL_RES_DOWNSAMPLE if size >= SMALL_FRAME_PX else 1)


def prediction_metrics(generated: torch.Tensor, gt: torch.Tensor, downsample: int,
                       take2: torch.Tensor | None = None) -> dict[str, float]:
    """Physics-IQ spatial / spatiotemporal / weighted spatial IoU and MSE, (T, 3, H, W) x2 in [0, 1].

    Frame 0 of a rollout is the conditioning image (the ground truth's own frame 0), so it is dropped
    from both videos: only generated frames are scored. ``gt`` must be on the rollout's time base
    (`stages.evaluation.timebase.backbone_window`). ``take2`` (the scene's second take on the same
    time base) adds the `variance_<metric>` keys the Physics-IQ score divides by."""
    if generated.shape[0] != gt.shape[0]:
        raise ValueError(f"rollout has {generated.shape[0]} frames, ground truth {gt.shape[0]}")
    second = None if take2 is None else take2[1:].permute(0, 2, 3, 1).numpy()
    return physics_iq_metrics(generated[1:].permute(0, 2, 3, 1).numpy(), gt[1:].permute(0, 2, 3, 1).numpy(),
                              gt_video_take2=second, downsample=downsample)
