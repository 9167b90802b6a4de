"""The sim_physics data set as a torch Dataset of windows with consistent targets.

One item is a window of ``num_frames`` frames with:
  rgb (T, 3, H, W) float32 in [0, 1]
  flow (T, 2, H, W) float32, internal backward flow composed over the stride (data.flow)
  flow_valid (T, H, W) bool; frame 0 is always invalid (its previous frame is not in the window)
  depth (T, H, W) float32 metres along the ray, 0 where invalid
  depth_valid (T, H, W) bool
  intrinsics (4,) float32 fx, fy, cx, cy of the output frames (pixel centres on integers)
  down_cam (3,) unit gravity direction in the camera frame (x right, y down, z forward)
  dt () seconds between consecutive window frames (the window's stride / fps)
  steps (T,) int64 simulator step of each frame; plus 'scene', 'video', 'prompt' strings.

Training with ``window.supervised_frames = K`` reads targets for K random frames only: flow,
depth and their masks are (K, ...), and 'frame_index' (K,), 'frame_rgb' and 'prev_rgb'
(K, 3, H, W) tell the heads which frames to decode (see ``load_window``).

Training items are augmented by a ``data.augment.View`` drawn from (seed, epoch, index): stride,
crop, flip and colour (``AugmentConfig``); the window start comes from a stream of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data import transforms
from data.augment import AugmentConfig, View, ViewOptions, check_forward_in_time, draw_view
from data.colour import apply_colour
from data.errors import DataFormatError
from data.flow import FlowConvention, compose_backward
from data.layout import SceneFiles, scan_scene, take_directory
from data.metadata import ClipEntry, read_metadata
from data.scene_meta import down_from_meta, fps_from_meta, intrinsics_from_meta, read_scene_meta
from data.readers import DEFAULT_FAR_CLIP_M, read_depth, read_flow_file, read_rgb
from data.sampling import WindowSpec, training_subset, window_indices


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides what a window looks like."""

    root: str = "runs/scenes/demo"
    """Data root holding <scene>/env_0/0/0/... (repo-relative paths are fine)."""
    metadata: str = "metadata/demo.csv"
    """CSV with columns video,prompt[,split]."""
    height: int = 480
    """Output height; a multiple of 32 (VAE 16x times the DiT's 2x2 patches)."""
    width: int = 480
    """Output width; a multiple of 32."""
    window: WindowSpec = field(default_factory=WindowSpec)
    """Frames per window, their stride and the evaluation anchor (data.sampling.WindowSpec)."""
    flow_convention: str = "replicator"
    """Sign convention of the motion-vector files (see data.flow.CONVENTIONS)."""
    flow_units: str = "pixels"
    """Units of the motion-vector files: pixels, fraction (of width/height) or ndc (see data.flow.FLOW_UNITS)."""
    flow_timing: str = "current"
    """Which file holds step t's motion: current (file t) or shifted (file t-1; see data.flow.FLOW_TIMINGS)."""
    far_clip_m: float = DEFAULT_FAR_CLIP_M
    """Distances at or beyond this are background: masked, never used as values."""
    fov_deg: float = 60.0
    """Horizontal field of view used for intrinsics when a scene has no scene.json."""
    fps: float = 30.0
    """Simulator frame rate when a scene has no scene.json (window dt = stride / fps)."""
    hflip_prob: float = 0.0
    """Training-only probability of a horizontal flip (negates x-flow, mirrors the gravity direction)."""
    random_crop: bool = True
    """Training crops at a random offset; evaluation always crops the centre."""
    repeat: int = 1
    """Each scene appears this many times per epoch (dataset_repeat)."""
    on_error: str = "skip"
    """A training sample that cannot be read (a corrupt frame, a damaged cache entry): 'skip' logs it
    to <run>/bad_samples.jsonl and trains on a deterministic replacement; 'stop' checkpoints and
    exits with status 2 naming the file (stages/trainer/bad_samples.py)."""
    max_bad_samples: int = 16
    """With on_error=skip, the run stops as 'stop' would once more samples than this were skipped."""

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if value <= 0 or value % 32:
                raise ValueError(f"{name} must be a positive multiple of 32, got {value}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {self.hflip_prob}")
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {self.repeat}")
        if self.on_error not in ("skip", "stop"):
            raise ValueError(f"on_error must be 'skip' or 'stop', got {self.on_error!r}")
        if self.max_bad_samples < 0:
            raise ValueError(f"max_bad_samples must be >= 0, got {self.max_bad_samples}")
        FlowConvention(self.flow_convention, self.flow_units, self.flow_timing)


VIEW_STREAM = 2
"""Last key of the generator of a training item's view (1 is the supervised-frame subset's)."""


class SimPhysicsDataset(Dataset):
    """Windows of sim_physics scenes.  Structure is checked up front; contents when read.

    ``augment`` adds colour jitter, random resized crops and stride jitter to training items.
    """

    def __init__(self, config: DataConfig, split: str | None = None, train: bool = False, seed: int = 0,
                 augment: AugmentConfig | None = None) -> None:
        self.config, self.train, self.seed, self.epoch = config, train, seed, 0
        self.view_options = ViewOptions(augment or AugmentConfig(), config.window.stride, config.random_crop,
                                        config.hflip_prob)
        self.convention = FlowConvention(config.flow_convention, config.flow_units, config.flow_timing)
        self.entries: list[ClipEntry] = read_metadata(config.metadata, root=config.root, split=split)
        self.scenes: list[SceneFiles] = [scan_scene(Path(config.root) / e.video) for e in self.entries]
        longest = replace(config.window, stride=self.view_options.max_stride)
        jittered = " (the largest of augment.strides)" if longest.stride != config.window.stride else ""
        for scene in self.scenes:
            if scene.num_frames < longest.span:
                raise DataFormatError(
                    scene.directory,
                    f"has {scene.num_frames} frames but a window of {longest.num_frames} frames at "
                    f"stride {longest.stride}{jittered} needs {longest.span}",
                )

    def __len__(self) -> int:
        return len(self.scenes) * self.config.repeat

    def has_take(self, scene_index: int, take: int) -> bool:
        """Whether the scene has a recording ``take`` (``data.layout.TAKE_SUBPATHS``)."""
        return take_directory(self.scenes[scene_index].directory, take).is_dir()

    def take(self, take: int) -> SimPhysicsDataset:
        """The same scenes and settings read from recording ``take`` (2: the perturbed re-simulation
        beside take 1, for Physics-IQ's physical variance). Raises DataFormatError naming a missing take."""
        other = copy.copy(self)
        other.scenes = [scan_scene(take_directory(scene.directory, take)) for scene in self.scenes]
        for first, second in zip(self.scenes, other.scenes):
            if second.num_frames != first.num_frames:
                raise DataFormatError(second.directory, f"take {take} has {second.num_frames} frames, "
                                                        f"take 1 {first.num_frames}")
        return other

    def set_epoch(self, epoch: int) -> None:
        """Training randomness is a pure function of (seed, epoch, index): resumable exactly."""
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator | None:
        return np.random.default_rng([self.seed, self.epoch, index]) if self.train else None

    def draw_view(self, key: list[int]) -> View:
        """The view of a training item keyed by ``key`` (e.g. seed, epoch, index)."""
        return draw_view(np.random.default_rng([*key, VIEW_STREAM]), self.view_options)

    def scene_of(self, index: int) -> int:
        """The scene (index into ``scenes``) that item ``index`` is cut from."""
        return index % len(self.scenes)

    def __getitem__(self, index: int) -> dict:
        scene_index, rng = self.scene_of(index), self._rng(index)
        view = self.draw_view([self.seed, self.epoch, index]) if rng is not None else None
        spec = self.config.window if view is None else replace(self.config.window, stride=view.stride)
        frames = window_indices(self.scenes[scene_index].num_frames, spec, rng)
        select = None
        if rng is not None:
            select = training_subset(len(frames), self.config.window.supervised_frames, self.seed, self.epoch, index)
        return self.load_window(scene_index, frames, view, select=select)

    def fixed_window_starts(self, scene_index: int, count: int) -> list[int]:
        """Up to ``count`` distinct window starts spread evenly over a scene (for cached features)."""
        slack = self.scenes[scene_index].num_frames - self.config.window.span
        return sorted({int(round(x)) for x in np.linspace(0, slack, num=max(count, 1))})

    def load_window(self, scene_index: int, frames: np.ndarray, view: View | None = None,
                    select: np.ndarray | None = None, video: bool = True) -> dict:
        """The window of the given frame indices (strictly increasing), cut and coloured as ``view``
        says (None = no augmentation, centre crop).

        ``select`` (window-relative indices, sorted) restricts the targets to those frames and
        adds 'frame_index', 'frame_rgb' (the frames at ``select``) and 'prev_rgb' (the frames
        before them; frame 0 pairs with itself) for the heads.  ``video`` False drops the
        whole-window 'rgb', which only the backbone's encoder needs.
        """
        scene = self.scenes[scene_index]
        check_forward_in_time(frames, scene.directory)
        at = np.arange(len(frames)) if select is None else np.asarray(select, dtype=np.int64)
        prev = np.maximum(at - 1, 0)
        needed = sorted(set(range(len(frames))) if video else set(at.tolist()) | set(prev.tolist()))
        decoded, hw = self._decode_rgb(scene, frames, needed)
        depth, depth_valid = zip(*(read_depth(scene.depth[frames[i]], hw, self.config.far_clip_m) for i in at))
        flow, flow_valid = self._window_flow(scene, frames, hw, at)
        geometry = self._geometry(hw, view)
        colour = None if view is None else view.colour

        def rgb(indices) -> torch.Tensor:
            stack = np.stack([decoded[int(i)] for i in indices])
            frames_rgb = transforms.apply_rgb_uint8(torch.from_numpy(stack), geometry)
            return frames_rgb if colour is None else apply_colour(frames_rgb, colour)

        sample = self._scene_fields(scene_index, frames, hw, geometry)
        if video:
            sample["rgb"] = rgb(range(len(frames)))
        if select is not None:
            sample.update(frame_index=torch.from_numpy(at), frame_rgb=rgb(at), prev_rgb=rgb(prev))
        sample["flow"], sample["flow_valid"] = transforms.apply_flow(
            torch.from_numpy(flow), torch.from_numpy(flow_valid), geometry)
        sample["depth"], sample["depth_valid"] = transforms.apply_depth(
            torch.from_numpy(np.stack(depth)), torch.from_numpy(np.stack(depth_valid)), geometry
        )
        return sample

    @staticmethod
    def _decode_rgb(scene: SceneFiles, frames: np.ndarray,
                    needed: list[int]) -> tuple[dict[int, np.ndarray], tuple[int, int]]:
        """PNGs of the window frames ``needed``; the first one fixes the size the others must have."""
        decoded = {needed[0]: read_rgb(scene.rgb[frames[needed[0]]])}
        hw = decoded[needed[0]].shape[:2]
        decoded.update({i: read_rgb(scene.rgb[frames[i]], hw) for i in needed[1:]})
        return decoded, hw

    def _scene_fields(self, scene_index: int, frames: np.ndarray, hw: tuple[int, int],
                      geometry: transforms.Geometry) -> dict:
        """Camera, gravity, timing and names of a window (scene.json, else the config's fallbacks);
        dt is the spacing of the window's first two frames, so a jittered stride keeps its own."""
        scene, entry = self.scenes[scene_index], self.entries[scene_index]
        meta = read_scene_meta(scene.directory)
        intrinsics = intrinsics_from_meta(meta, hw, self.config.fov_deg, scene.directory)
        spacing = frames[1] - frames[0] if len(frames) > 1 else self.config.window.stride
        return {
            "intrinsics": transforms.apply_intrinsics(torch.from_numpy(intrinsics), geometry),
            "down_cam": transforms.apply_direction(torch.from_numpy(down_from_meta(meta)), geometry),
            "dt": torch.tensor(float(spacing) / fps_from_meta(meta, self.config.fps)),
            "steps": torch.tensor([scene.steps[i] for i in frames], dtype=torch.int64),
            "scene": entry.scene,
            "video": entry.video,
            "prompt": entry.prompt,
        }

    def _window_flow(self, scene: SceneFiles, frames: np.ndarray, hw: tuple[int, int],
                     at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow from window frames ``at`` back to their previous window frame, composed over the stride.

        The distance maps of the intermediate steps are read too: composition needs them to
        detect points hidden behind another surface on the way (data.flow.compose_backward).
        Window frame 0 has no previous frame: zero and invalid.
        """
        flows = np.zeros((len(at), 2, *hw), dtype=np.float32)
        valid = np.zeros((len(at), *hw), dtype=bool)
        for k, t in enumerate(at):
            if t == 0:
                continue
            steps = range(frames[t - 1] + 1, frames[t] + 1)
            files = [scene.flow[self.convention.file_index(i)] for i in steps]
            one_step = [self.convention.to_internal(read_flow_file(path, hw)) for path in files]
            if len(one_step) == 1:
                flows[k], valid[k] = one_step[0], True
                continue
            distance, distance_valid = zip(*(read_depth(scene.depth[i], hw, self.config.far_clip_m) for i in steps))
            flows[k], valid[k] = compose_backward(one_step, list(distance), list(distance_valid))
        return flows, valid

    def _geometry(self, hw: tuple[int, int], view: View | None) -> transforms.Geometry:
        out_hw = (self.config.height, self.config.width)
        if view is None:
            return transforms.plan_geometry(hw, out_hw)
        return transforms.plan_geometry(hw, out_hw, view.crop_xy_fraction, view.flip, view.crop_area,
                                        view.crop_aspect)
