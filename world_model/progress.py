"""diffsynth's own progress bars, folded into ours or silenced: one helper every diffsynth call goes through.

diffsynth 2.1.12 draws two kinds of tqdm bars of its own.  ``WanVideoPipeline.__call__`` loops over
the denoising steps through its ``progress_bar_cmd`` argument (plain ``tqdm`` by default), and the
Wan VAE's tiled encode and decode loop over tiles through the module-level ``tqdm`` of
``diffsynth.models.wan_video_vae`` ("VAE encoding", "VAE decoding"), which no argument reaches; the
pipeline encodes its conditioning image and decodes its video tiled by default.  Left alone, each
rollout of an evaluation printed a bar per step loop and per VAE pass that stayed on screen under
our per-scene bar.

Inside ``diffsynth_progress(desc)`` both kinds become a tqdm of ours with ``leave=False``, named
``desc`` (plus diffsynth's own name for a VAE pass), so it is drawn below the enclosing bar while it
runs and erased when done; in mode "silent" they draw nothing.  The mode is "fold" unless
``set_mode`` (scripts/evaluate_physics.py --diffsynth-progress) or PWM_DIFFSYNTH_PROGRESS says
otherwise.  Pass the yielded callable as a pipeline's ``progress_bar_cmd``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from tqdm import tqdm

MODES = ("fold", "silent")
_state = {"mode": os.environ.get("PWM_DIFFSYNTH_PROGRESS", "fold")}


def set_mode(mode: str) -> None:
    """"fold": diffsynth's bars become transient bars of ours; "silent": none are drawn."""
    if mode not in MODES:
        raise ValueError(f"diffsynth progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    _state["mode"] = mode


def mode() -> str:
    return _state["mode"] if _state["mode"] in MODES else "fold"


def _bar_factory(name: str) -> Callable[..., tqdm]:
    """A drop-in for diffsynth's ``tqdm(iterable, desc=...)`` calls and ``progress_bar_cmd(iterable)``:
    a transient bar named ``name`` (and diffsynth's ``desc``), or a silent one."""
    def bar(iterable=None, *args, desc: str | None = None, **kwargs) -> tqdm:
        kwargs.update(leave=False, disable=mode() == "silent")
        return tqdm(iterable, *args, desc=f"{name}: {desc}" if desc else name, **kwargs)

    return bar


@contextlib.contextmanager
def diffsynth_progress(desc: str) -> Iterator[Callable[..., tqdm]]:
    """Within: the Wan VAE's tile bars are ours (see the module docstring); yields the
    ``progress_bar_cmd`` for a pipeline call made inside."""
    from diffsynth.models import wan_video_vae

    bar = _bar_factory(desc)
    previous = wan_video_vae.tqdm
    wan_video_vae.tqdm = bar
    try:
        yield bar
    finally:
        wan_video_vae.tqdm = previous
