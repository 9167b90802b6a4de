"""Load one window the way training does, print what it holds, and save a picture of it.

    python scripts/inspect_window.py --root R --metadata M [--size 128 --frames 9 --stride 2]

The PNG (default runs/inspect_window.png) shows, per frame: RGB | flow (hue = direction,
brightness = magnitude, black = invalid) | distance (dark = near, black = invalid).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402

from data.dataset import DataConfig, SimPhysicsDataset  # noqa: E402
from data.sampling import WindowSpec  # noqa: E402


def flow_to_rgb(flow: torch.Tensor, valid: torch.Tensor, scale: float) -> np.ndarray:
    """(2, H, W) flow -> (H, W, 3) colour image; invalid pixels black."""
    x, y = flow[0].numpy(), flow[1].numpy()
    hue = (np.arctan2(y, x) / (2 * np.pi)) % 1.0
    value = np.clip(np.hypot(x, y) / max(scale, 1e-6), 0, 1) * valid.numpy()
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1))


def save_strip(sample: dict, path: Path, columns: int = 5) -> None:
    frames = np.linspace(0, sample["rgb"].shape[0] - 1, num=min(columns, sample["rgb"].shape[0])).round().astype(int)
    scale = float(sample["flow"].norm(dim=1)[sample["flow_valid"]].max()) if sample["flow_valid"].any() else 1.0
    depth = sample["depth"][sample["depth_valid"]]
    near, far = (float(depth.min()), float(depth.max())) if depth.numel() else (0.0, 1.0)
    figure, axes = plt.subplots(3, len(frames), figsize=(2.2 * len(frames), 6.6), squeeze=False)
    for column, t in enumerate(frames):
        axes[0, column].imshow(sample["rgb"][t].permute(1, 2, 0).numpy())
        axes[1, column].imshow(flow_to_rgb(sample["flow"][t], sample["flow_valid"][t], scale))
        shown = np.ma.masked_where(~sample["depth_valid"][t].numpy(), sample["depth"][t].numpy())
        axes[2, column].imshow(shown, cmap="magma", vmin=near, vmax=far)
        axes[0, column].set_title(f"step {int(sample['steps'][t])}", fontsize=8)
    for axis in axes.ravel():
        axis.set_axis_off()
    figure.suptitle(f"{sample['scene']}: {sample['prompt']}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, facecolor="black")
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--index", type=int, default=0, help="which row of the CSV")
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--out", default="runs/inspect_window.png")
    args = parser.parse_args(argv)
    config = DataConfig(root=args.root, metadata=args.metadata, height=args.size, width=args.size,
                        window=WindowSpec(num_frames=args.frames, stride=args.stride))
    sample = SimPhysicsDataset(config)[args.index]
    moving = sample["flow_valid"] & (sample["flow"].norm(dim=1) > 0.5)
    print(f"{sample['video']} '{sample['prompt']}' steps {sample['steps'].tolist()}")
    for key in ("rgb", "flow", "flow_valid", "depth", "depth_valid", "intrinsics"):
        print(f"  {key:<12} {tuple(sample[key].shape)} {sample[key].dtype}")
    print(f"  valid flow {sample['flow_valid'].float().mean():.1%}, moving {moving.float().mean():.2%}, "
          f"max |flow| {sample['flow'].norm(dim=1).max():.2f} px; valid depth {sample['depth_valid'].float().mean():.1%}")
    save_strip(sample, Path(args.out))
    print(f"  picture: {args.out}")


if __name__ == "__main__":
    main()
