"""mp4 files in and out with OpenCV (opencv-python-headless), the library the official Physics-IQ tool reads with.

Reading through the same decoder as `code/calculate_and_write_metrics_to_csv.py` (cv2.VideoCapture)
means a video scores here as it would there. Writing uses OpenCV's FFmpeg backend with the MPEG-4
Part 2 codec (fourcc ``mp4v``, what the official mask writer uses); ``codec="libx264"`` writes
H.264 through imageio-ffmpeg's bundled ffmpeg instead (OpenCV's pip wheels cannot encode H.264).
Both are lossy with 4:2:0 chroma, so a round trip changes pixel values a little;
``docs/physics_iq.md`` gives what that does to the metrics.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data.errors import DataFormatError

CODEC = "mp4v"
X264_CRF = 18
"""H.264 constant rate factor for ``codec="libx264"`` (18: visually lossless for x264's authors)."""


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, codec: str = CODEC) -> Path:
    """Write (T, H, W, 3) RGB uint8 frames to ``path`` at ``fps``; odd sizes lose their last row/column
    (4:2:0 video needs even sizes, as the official tool's writers also crop)."""
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"{path}: expected (T, H, W, 3) uint8 RGB frames, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1] - frames.shape[1] % 2, frames.shape[2] - frames.shape[2] % 2
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "libx264":
        return _write_x264(path, frames[:, :h, :w], fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write {codec!r} video here (is its FFmpeg backend present?)")
    try:
        for frame in frames[:, :h, :w]:
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def _write_x264(path: Path, frames: np.ndarray, fps: float) -> Path:
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), (frames.shape[2], frames.shape[1]), fps=float(fps),
                                         codec="libx264", quality=None, macro_block_size=1, pix_fmt_out="yuv420p",
                                         ffmpeg_log_level="error", output_params=["-crf", str(X264_CRF)])
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


def video_fps(path: str | Path) -> float:
    """The frame rate the container declares (what the official tool groups videos by)."""
    capture = _open(path)
    try:
        return float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()


def read_mp4(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """(T, H, W, 3) RGB uint8 frames of ``path`` (the first ``max_frames`` when given)."""
    capture = _open(path)
    frames = []
    try:
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise DataFormatError(path, "video has no decodable frames")
    return np.stack(frames)


def _open(path: str | Path) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise DataFormatError(path, "video file does not exist")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataFormatError(path, "OpenCV cannot open this video")
    return capture
