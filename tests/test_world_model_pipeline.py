"""The tiny preset plugs into diffsynth's WanVideoPipeline for TI2V generation, offline."""
import socket

import numpy as np
import torch
from PIL import Image

from world_model.models import build_dit, build_stand_in_tokenizer, build_text_encoder, build_vae


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8"))


def test_tiny_ti2v_generation_runs_offline(monkeypatch):
    """With the network shut, the tiny models generate a 9-frame TI2V video whose frame 0 is the
    input image through the VAE (TI2V fuses the image latent into latent frame 0 and keeps it
    clean), whatever the seed; the later frames depend on the seed and the prompt."""
    from diffsynth.pipelines.wan_video import WanVideoPipeline

    def no_network(*args, **kwargs):
        raise AssertionError("the tiny pipeline tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)

    pipe = WanVideoPipeline(device="cpu", torch_dtype=torch.float32)
    pipe.dit, pipe.vae = build_dit("tiny"), build_vae("tiny")
    pipe.text_encoder, pipe.tokenizer = build_text_encoder("tiny"), build_stand_in_tokenizer("tiny")
    pipe.height_division_factor = pipe.width_division_factor = 32
    image = _image(0)

    def generate(prompt="a ball falls", seed=0, input_image=image) -> np.ndarray:
        frames = pipe(prompt=prompt, input_image=input_image, num_frames=9, height=64, width=64,
                      num_inference_steps=2, cfg_scale=1.0, seed=seed, progress_bar_cmd=lambda x: x)
        assert len(frames) == 9 and all(f.size == (64, 64) for f in frames)
        return np.stack([np.asarray(f, dtype=np.float32) for f in frames])

    video = generate()
    with torch.no_grad():
        latent = pipe.vae.encode([pipe.preprocess_image(image).transpose(0, 1)], device="cpu")
        decoded = pipe.vae.decode(latent, device="cpu")[0, :, 0].clamp(-1, 1)
    reconstruction = ((decoded + 1) * 127.5).permute(1, 2, 0).numpy()
    assert np.abs(video[0] - reconstruction).max() <= 1.0  # uint8 rounding only

    other_seed = generate(seed=1)
    np.testing.assert_array_equal(other_seed[0], video[0])
    assert np.abs(other_seed[1:] - video[1:]).max() > 10
    assert np.abs(generate(prompt="two dominoes topple over")[1:] - video[1:]).max() > 0
    assert np.abs(generate(input_image=_image(1))[0] - video[0]).mean() > 2
