"""Decoding hour-long videos at 1 frame per second without holding full-resolution frames.

`probe_video` reads the container's metadata (demuxing, never decoding, when the stream hides its length);
`sample_frame_indices` is the reference's sampling rule; `decode_frames` decodes only what the sampled frames need
and resizes each one while decoding, into one preallocated uint8 tensor (an hour at 384 px is 1.6 GB).

Backends: torchcodec when FFmpeg's shared libraries are present, PyAV (which ships its own FFmpeg) otherwise;
`backend="pyav" | "torchcodec" | "auto"` overrides. The PyAV path uses every core (frame threads), skips decoding
non-reference frames that lie between two samples, and converts only the sampled frames.

Every failure is a `VideoDecodeError` naming the file and the reason.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch

BACKENDS = ("auto", "pyav", "torchcodec")


class VideoDecodeError(ValueError):
    """A video that cannot be used: `path` names the file, `reason` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class VideoLimits:
    """What a sane video looks like; anything outside is refused instead of decoded."""

    max_duration: float = 24 * 3600.0
    max_fps: float = 1000.0
    max_frames: int = 10_000_000


@dataclass
class VideoInfo:
    """Metadata of a video stream. `num_frames` and `duration` are estimates where the container has none."""

    path: str
    fps: float
    num_frames: int
    duration: float
    width: int
    height: int
    start_time: float = 0.0


def sample_frame_indices(
    num_frames: int, fps: float, sample_fps: float = 1.0, min_frames: int = 128, max_frames: int | None = None
) -> np.ndarray:
    """The reference's sampling: every `round(fps / sample_fps)`-th frame; when that gives fewer than `min_frames`,
    `min(total, min_frames)` frames spread evenly instead; no upper bound unless `max_frames` is given (then an even
    subsample). Returns ascending frame indices (int64)."""
    if num_frames < 1:
        return np.zeros(0, np.int64)
    step = max(1, round(fps / sample_fps))
    indices = np.arange(0, num_frames, step, dtype=np.int64)
    if len(indices) < min_frames:
        indices = np.linspace(0, num_frames - 1, min(num_frames, min_frames), dtype=np.int64)
    if max_frames is not None and len(indices) > max_frames:
        indices = indices[np.linspace(0, len(indices) - 1, max_frames, dtype=np.int64)]
    return indices


@functools.lru_cache(maxsize=1)
def torchcodec_available() -> bool:
    """True when torchcodec imports and finds FFmpeg's shared libraries."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception:  # ImportError, or OSError/RuntimeError when FFmpeg's libraries are missing
        return False
    return True


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"video backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "torchcodec" if torchcodec_available() else "pyav"
    if backend == "torchcodec" and not torchcodec_available():
        raise ImportError("torchcodec is not usable here (not installed, or FFmpeg's shared libraries are missing)")
    return backend


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _open(path: str) -> av.container.InputContainer:
    _check_file(path)
    try:
        return av.open(path, metadata_errors="ignore")
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"not a readable video container ({error})") from error


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(path, "no video stream (audio-only or data file)")
    return container.streams.video[0]


def probe_video(path: str | os.PathLike, limits: VideoLimits | None = None) -> VideoInfo:
    """Frame rate, frame count, duration, size and rotation of the first video stream.

    Where the container stores no frame count or duration (webm, mkv, some avi), they are derived from each other,
    and as a last resort from demuxing every packet (no decoding). Absurd values are refused.
    """
    path, limits = os.fspath(path), limits or VideoLimits()
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        time_base = float(stream.time_base) if stream.time_base else 0.0
        start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else 0.0
        duration = float(stream.duration * time_base) if stream.duration and time_base else 0.0
        if not duration and container.duration:
            duration = container.duration / av.time_base
        num_frames = int(stream.frames or 0)
        if not num_frames and duration and fps:
            num_frames = int(round(duration * fps))
        if not num_frames or not fps:
            num_frames, last_pts = _count_packets(container, stream, path)
            if not fps and last_pts > start and num_frames > 1:
                fps = (num_frames - 1) / (last_pts - start)
            duration = duration or (num_frames / fps if fps else 0.0)
        if not duration and fps:
            duration = num_frames / fps
        info = VideoInfo(
            path=path,
            fps=fps,
            num_frames=num_frames,
            duration=duration,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            start_time=start,
        )
    _check_info(info, limits)
    return info


def _count_packets(container, stream, path: str) -> tuple[int, float]:
    count, last = 0, 0.0
    try:
        for packet in container.demux(stream):
            if packet.size:
                count += 1
                if packet.pts is not None:
                    last = max(last, float(packet.pts * packet.time_base))
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"damaged stream while counting frames ({error})") from error
    return count, last


def _check_info(info: VideoInfo, limits: VideoLimits) -> None:
    if info.num_frames < 1:
        raise VideoDecodeError(info.path, "the video stream has zero frames")
    if not info.fps or not math.isfinite(info.fps) or info.fps > limits.max_fps:
        raise VideoDecodeError(info.path, f"absurd frame rate {info.fps!r} fps")
    if not math.isfinite(info.duration) or info.duration > limits.max_duration:
        raise VideoDecodeError(info.path, f"absurd duration {info.duration:.0f} s (limit {limits.max_duration:.0f} s)")
    if info.num_frames > limits.max_frames:
        raise VideoDecodeError(info.path, f"absurd frame count {info.num_frames} (limit {limits.max_frames})")
    if info.width < 1 or info.height < 1:
        raise VideoDecodeError(info.path, f"invalid frame size {info.width}x{info.height}")


def _displayed(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """The frame as shown: resized to (height, width) and turned by its display matrix (phones store portrait
    video sideways and say so there). (H, W, 3) uint8."""
    quarter_turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
    if quarter_turns % 2:
        height, width = width, height
    image = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BICUBIC")
    return np.ascontiguousarray(np.rot90(image, k=quarter_turns)) if quarter_turns else image


def _iter_pyav(
    info: VideoInfo, targets: np.ndarray, size: tuple[int, int], threads: int
) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (target index, (H, W, 3) uint8 frame, its time) for every target time, in order.

    A target takes the first frame shown at or after it (within half a frame). Between targets, the decoder drops
    non-reference frames (nothing depends on them), and only the chosen frames are converted and resized.
    """
    height, width = size
    half_frame = 0.5 / info.fps
    # Frames still in flight: reordering (B-frames) and frame threads; decode everything this close to a target.
    margin = (threads + 4) / info.fps
    with _open(info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        context = stream.codec_context
        k, total = 0, len(targets)
        try:
            for packet in container.demux(stream):
                if packet.dts is not None:
                    time = float(packet.dts * packet.time_base) - info.start_time
                    context.skip_frame = "NONREF" if time < targets[k] - margin else "DEFAULT"
                for frame in packet.decode():
                    time = float(frame.time) - info.start_time if frame.time is not None else None
                    if time is None or time < targets[k] - half_frame:
                        continue
                    image = _displayed(frame, height, width)
                    while k < total and time >= targets[k] - half_frame:
                        yield k, image, time
                        k += 1
                    if k == total:
                        return
        except av.FFmpegError as error:
            if k == 0:
                raise VideoDecodeError(info.path, f"undecodable video stream ({error})") from error
            # A damaged tail: the caller decides whether what was decoded covers the video.


def _iter_torchcodec(
    info: VideoInfo, targets: np.ndarray, size: tuple[int, int], threads: int, chunk: int = 256
) -> Iterator[tuple[int, np.ndarray, float]]:
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    try:
        decoder = VideoDecoder(
            info.path, seek_mode="approximate", num_ffmpeg_threads=threads, transforms=[Resize(size=size)]
        )
        last = decoder.metadata.end_stream_seconds or info.duration
        for start in range(0, len(targets), chunk):
            times = np.minimum(targets[start : start + chunk] + info.start_time, max(last - 1e-3, 0.0))
            batch = decoder.get_frames_played_at(seconds=times.tolist())
            for offset in range(batch.data.shape[0]):
                yield start + offset, batch.data[offset].permute(1, 2, 0).numpy(), float(batch.pts_seconds[offset])
    except (RuntimeError, ValueError, IndexError) as error:
        raise VideoDecodeError(info.path, f"torchcodec could not decode ({error})") from error


def decode_frames(
    path: str | os.PathLike,
    size: int | tuple[int, int] = 384,
    sample_fps: float = 1.0,
    min_frames: int = 128,
    max_frames: int | None = None,
    backend: str = "auto",
    threads: int = 0,
    limits: VideoLimits | None = None,
    info: VideoInfo | None = None,
) -> tuple[torch.Tensor, VideoInfo, np.ndarray]:
    """Decode the frames the reference samples, resized while decoding.

    Returns frames (T, 3, H, W) uint8 RGB (as displayed: rotation applied), the video's info, and the presentation time
    in seconds of every returned frame. A stream that ends well before its stated duration is refused as truncated;
    a few missing frames at the very end (metadata slop) repeat the last decoded frame.
    """
    path = os.fspath(path)
    info = info or probe_video(path, limits)
    size = (size, size) if isinstance(size, int) else tuple(size)
    indices = sample_frame_indices(info.num_frames, info.fps, sample_fps, min_frames, max_frames)
    targets = indices / info.fps
    threads = threads or os.cpu_count() or 1
    iterator = _iter_pyav if resolve_backend(backend) == "pyav" else _iter_torchcodec
    frames = torch.empty((len(targets), size[0], size[1], 3), dtype=torch.uint8)
    times = np.full(len(targets), np.nan)
    decoded = 0
    for k, image, time in iterator(info, targets, size, threads):
        frames[k] = torch.from_numpy(image)
        times[k] = time
        decoded = k + 1
    if decoded == 0:
        raise VideoDecodeError(path, "no decodable frames")
    if decoded < len(targets):
        covered = times[decoded - 1]
        slack = max(2.0 / info.fps, 2.0 / sample_fps)
        if targets[-1] - covered > slack:
            raise VideoDecodeError(
                path, f"truncated: frames end at {covered:.2f} s, but the video claims {info.duration:.2f} s"
            )
        frames[decoded:] = frames[decoded - 1]
        times[decoded:] = times[decoded - 1]
    return frames.permute(0, 3, 1, 2).contiguous(), info, times


__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "VideoLimits",
    "decode_frames",
    "probe_video",
    "resolve_backend",
    "sample_frame_indices",
    "torchcodec_available",
]
