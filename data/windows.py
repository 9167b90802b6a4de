"""Fixed windows of a data set: the unit that feature caches, validation and evaluation index.

A window is a scene and its first frame; its frames follow the data config's stride.  Fixed
windows carry no augmentation (a cached feature or a validation score must be reproducible), and
training draws of supervised frames come from (seed, epoch, index) alone, so a resumed run reads
exactly what the uninterrupted run read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from data.dataset import SimPhysicsDataset
from data.sampling import training_subset


@dataclass(frozen=True)
class WindowRef:
    """One fixed window: a scene of the base data set and its first frame index."""

    scene_index: int
    start: int


class FixedWindows(Dataset):
    """Fixed windows of a data set, repeated ``repeat`` times per epoch, without augmentation.

    ``supervised_frames`` K > 0 (training) draws K frames per item to supervise, from
    (seed, epoch, index) like every other training draw; ``video`` False leaves out the
    whole-window RGB, which only the backbone needs (the cached path never runs it).
    """

    def __init__(self, base: SimPhysicsDataset, per_scene: int, repeat: int = 1, supervised_frames: int = 0,
                 seed: int = 0, video: bool = True) -> None:
        self.base, self.repeat, self.supervised_frames, self.seed, self.video = base, repeat, supervised_frames, seed, video
        self.epoch = 0
        self.refs = [WindowRef(s, start) for s in range(len(base.scenes)) for start in base.fixed_window_starts(s, per_scene)]

    def frames(self, ref: WindowRef) -> np.ndarray:
        spec = self.base.config.window
        return ref.start + spec.stride * np.arange(spec.num_frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.refs) * self.repeat

    def __getitem__(self, index: int) -> dict:
        select = training_subset(self.base.config.window.num_frames, self.supervised_frames, self.seed,
                                 self.epoch, index)
        return self.load(index % len(self.refs), select=select, video=self.video)

    def load(self, window: int, select: np.ndarray | None = None, video: bool = True) -> dict:
        """Window ``window`` (an index into ``refs``), all targets unless ``select`` is given."""
        ref = self.refs[window]
        sample = self.base.load_window(ref.scene_index, self.frames(ref), select=select, video=video)
        sample["window"] = window
        return sample
