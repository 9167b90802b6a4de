"""The tiny preset plugs into diffsynth's WanVideoPipeline for TI2V generation, offline."""
import numpy as np
import torch
from PIL import Image

from world_model.models import build_dit, build_stand_in_tokenizer, build_text_encoder, build_vae


def test_tiny_ti2v_generation_runs_offline():
    from diffsynth.pipelines.wan_video import WanVideoPipeline

    pipe = WanVideoPipeline(device="cpu", torch_dtype=torch.float32)
    pipe.dit, pipe.vae = build_dit("tiny"), build_vae("tiny")
    pipe.text_encoder, pipe.tokenizer = build_text_encoder("tiny"), build_stand_in_tokenizer("tiny")
    pipe.height_division_factor = pipe.width_division_factor = 32
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8"))
    frames = pipe(prompt="a ball falls", input_image=image, num_frames=9, height=64, width=64,
                  num_inference_steps=2, cfg_scale=1.0, seed=0, progress_bar_cmd=lambda x: x)
    assert len(frames) == 9 and frames[0].size == (64, 64)
