"""Fixed windows of a data set: the unit that feature caches, validation and evaluation index.

A window is a scene and its first frame; its frames follow the data config's stride.  A window
may have several *views*: view 0 is the window itself, un-augmented (what validation, evaluation
and a single-view feature cache use); view v >= 1 is an augmented copy (stride, crop, flip,
colour) drawn from (seed, window, v) alone, so a cached view's features and the targets loaded
with it always describe the same pixels.  Training draws (which view, which supervised frames)
come from (seed, epoch, index), so a resumed run reads exactly what the uninterrupted run read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from data.augment import View
from data.dataset import SimPhysicsDataset
from data.sampling import training_subset

VIEW_CHOICE_STREAM = 3
"""Last key of the generator that picks a training item's view (1: frame subset, 2: view draws)."""


@dataclass(frozen=True)
class WindowRef:
    """One fixed window: a scene of the base data set and its first frame index."""

    scene_index: int
    start: int


class FixedWindows(Dataset):
    """Fixed windows of a data set, repeated ``repeat`` times per epoch.

    ``supervised_frames`` K > 0 (training) draws K frames per item to supervise, from
    (seed, epoch, index) like every other training draw; ``video`` False leaves out the
    whole-window RGB, which only the backbone needs (the cached path never runs it).
    ``views`` V > 1 makes each item one of V views of its window, picked from (seed, epoch, index);
    views >= 1 are augmented as the base data set's ``view_options`` say.
    """

    def __init__(self, base: SimPhysicsDataset, per_scene: int, repeat: int = 1, supervised_frames: int = 0,
                 seed: int = 0, video: bool = True, views: int = 1) -> None:
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.base, self.repeat, self.supervised_frames, self.seed, self.video = base, repeat, supervised_frames, seed, video
        self.views, self.epoch = views, 0
        self.refs = [WindowRef(s, start) for s in range(len(base.scenes)) for start in base.fixed_window_starts(s, per_scene)]

    def view(self, window: int, view: int) -> View | None:
        """View ``view`` of window ``window``: None (un-augmented) for view 0."""
        return None if view == 0 else self.base.draw_view([self.seed, window, view])

    def frames(self, ref: WindowRef, stride: int | None = None) -> np.ndarray:
        """The window's frames at its own stride, or at ``stride`` (a view's), starting at the
        window's start or as late as a longer span still fits."""
        spec = self.base.config.window
        stride = spec.stride if stride is None else stride
        span = (spec.num_frames - 1) * stride + 1
        start = min(ref.start, self.base.scenes[ref.scene_index].num_frames - span)
        return start + stride * np.arange(spec.num_frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.refs) * self.repeat

    def scene_of(self, index: int) -> int:
        """The scene (index into the base data set's ``scenes``) that item ``index`` shows."""
        return self.refs[index % len(self.refs)].scene_index

    def pick_view(self, index: int) -> int:
        """Which view item ``index`` shows this epoch, each equally likely."""
        if self.views == 1:
            return 0
        return int(np.random.default_rng([self.seed, self.epoch, index, VIEW_CHOICE_STREAM]).integers(self.views))

    def draw(self, index: int) -> tuple[int, np.ndarray | None, int]:
        """What item ``index`` shows this epoch: (window, supervised frames or None, view)."""
        select = training_subset(self.base.config.window.num_frames, self.supervised_frames, self.seed,
                                 self.epoch, index)
        return index % len(self.refs), select, self.pick_view(index)

    def __getitem__(self, index: int) -> dict:
        window, select, view = self.draw(index)
        return self.load(window, select=select, video=self.video, view=view)

    def load(self, window: int, select: np.ndarray | None = None, video: bool = True, view: int = 0) -> dict:
        """View ``view`` of window ``window`` (an index into ``refs``), all targets unless ``select`` is given."""
        ref, augmentation = self.refs[window], self.view(window, view)
        frames = self.frames(ref, None if augmentation is None else augmentation.stride)
        sample = self.base.load_window(ref.scene_index, frames, augmentation, select=select, video=video)
        sample["window"], sample["view"] = window, view
        return sample
