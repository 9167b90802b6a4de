"""diffsynth's own progress bars (denoising steps, the Wan VAE's tiled encode and decode) are drawn
as transient bars of ours named by the caller, or not at all: a tiny random rollout on the CPU."""

from __future__ import annotations

import re

import pytest
import torch

from world_model import progress


@pytest.fixture(scope="module")
def pipe():
    from scripts.gpu_item_best_of import random_pipeline

    return random_pipeline("tiny", torch.device("cpu"), torch.float32)


@pytest.fixture
def restore_mode():
    before = progress.mode()
    yield
    progress.set_mode(before)


def _rollout(pipe) -> torch.Tensor:
    from stages.evaluation import rollout

    return rollout.generate(pipe, torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)), "a ball falls",
                            seed=3, frames=5, steps=2, cfg_scale=1.0)


def test_a_rollout_folds_diffsynth_bars_into_ours_or_is_silent(pipe, capsys, restore_mode):
    from diffsynth.models import wan_video_vae

    original = wan_video_vae.tqdm
    progress.set_mode("fold")
    folded = _rollout(pipe)
    err = capsys.readouterr().err
    lines = re.split(r"[\r\n]", err)
    assert any(line.startswith("rollout seed 3: VAE encoding:") for line in lines), err[-2000:]
    assert any(line.startswith("rollout seed 3: VAE decoding:") for line in lines), err[-2000:]
    # The denoising steps (2): tqdm redraws at most every 0.1 s, so which percentages show depends on speed.
    assert any(re.match(r"rollout seed 3: +\d+%.*\| [0-2]/2 ", line) for line in lines), err[-2000:]
    assert not any(line.startswith(("VAE encoding", "VAE decoding", "  0%")) for line in lines), err[-2000:]
    assert wan_video_vae.tqdm is original

    progress.set_mode("silent")
    silent = _rollout(pipe)
    err = capsys.readouterr().err
    assert "rollout seed" not in err and "VAE" not in err, err[-2000:]
    assert torch.equal(folded, silent) and wan_video_vae.tqdm is original


def test_unknown_mode_is_refused(restore_mode):
    with pytest.raises(ValueError, match="fold, silent"):
        progress.set_mode("loud")
