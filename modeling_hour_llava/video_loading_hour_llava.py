"""Decoding hour-long videos at 1 frame per second without holding full-resolution frames.

`probe_video` reads the container's metadata (demuxing, never decoding, when the stream hides its length);
`sample_frame_indices` is the reference's sampling rule; `decode_frames` decodes only what the sampled frames need
and resizes each one while decoding, into one preallocated uint8 tensor (an hour at 384 px is 1.6 GB);
`open_frame_stream` plans the same frames and decodes them a few chunks at a time (a `FrameStream`), so an hour
reaches the vision tower with at most one chunk per core in memory. Paths may start with `~` and hold environment
variables (`$DATA/videos/a.mp4`), as in a shell.

Backends: `backend="pyav"` (the default, also what "auto" picks) or "torchcodec". The PyAV path uses every core:
the sampled frames are cut into one time range per core, each decoded by its own single-threaded decoder that
seeks to the keyframe before its range (PyAV releases the GIL while decoding); between samples it skips
non-reference frames, and it converts only the sampled frames, straight to planar RGB. Ranges give the bytes of
one sequential decode (`tests/test_video_loading.py`). torchcodec (`pip install .[torchcodec]` and FFmpeg's shared
libraries) decodes every frame (it cannot skip non-reference ones): it used 39% to 50% more CPU than the PyAV path
on the benchmark's x264 files with B-frames and was slower on every file (docs/benchmarks.md), so "auto" does not
pick it; where it is asked for, it gives the same frames and times on constant-rate video
(`tests/test_video_backends.py`), and files whose frames it misplaces (its seeking in MPEG-TS) are decoded with PyAV.

Every failure is a `VideoDecodeError` naming the file and the reason.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np
import torch

from .errors_hour_llava import VideoDecodeError

BACKENDS = ("auto", "pyav", "torchcodec")
# A worker decodes at least this many sampled frames: fewer are not worth a seek and a decoder of their own.
MIN_FRAMES_PER_WORKER = 16
# Frame threads of each range's decoder (at least; more where ranges are fewer than workers). On an idle 2-core
# machine one is faster than two and spends 7% to 22% less CPU (10 min 360p x264: 2.37 s against 3.15 s; 720p
# VP9: 17.95 s against 19.13 s; medians of 3); on a machine shared with busy processes two keep more of its cores
# (single-threaded decoders never sleep, so they lose the scheduler's share): benchmarks/video_decoding.py,
# `ours, 2 threads per range`; docs/benchmarks.md.
FRAME_THREADS_PER_RANGE = 1
# While streaming, at most this many bytes of decoded frames are held (one chunk per worker, at least one chunk).
STREAM_SEGMENT_BYTES = 1 << 30


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
    """The backend `backend` names; "auto" is PyAV (see the module docstring for why)."""
    if backend not in BACKENDS:
        raise ValueError(f"video backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "pyav"
    if backend == "torchcodec" and not torchcodec_available():
        raise ImportError("torchcodec is not usable here (not installed, or FFmpeg's shared libraries are missing)")
    return backend


def expand_path(path: str | os.PathLike) -> str:
    """`path` with `~` and environment variables (`$HOME`, `${DATA}`) expanded, as a shell would."""
    return os.path.expandvars(os.path.expanduser(os.fspath(path)))


_STAT_REASONS = {
    errno.ENOENT: "file not found",
    errno.EACCES: "permission denied (a folder on the path cannot be entered)",
    errno.ELOOP: "symlink loop (a symbolic link on the path points back to itself)",
    errno.ENOTDIR: "not found (a part of the path is a file, not a folder)",
    errno.ENAMETOOLONG: "the path is too long",
}
_SPECIAL_FILES = {
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def _check_file(path: str) -> None:
    """Refuse what is not a readable, non-empty regular file, naming the real cause."""
    if not path:
        raise VideoDecodeError(path, "empty path: give the path of a video file")
    try:
        status = os.stat(path)
    except OSError as error:
        reason = _STAT_REASONS.get(error.errno, f"cannot be read ({error.strerror})")
        if error.errno == errno.ENOENT and os.path.islink(path):
            reason = f"broken symbolic link (it points to {os.readlink(path)!r}, which does not exist)"
        raise VideoDecodeError(path, reason) from None
    except ValueError as error:  # a NUL byte in the path
        raise VideoDecodeError(path, f"invalid path ({error})") from None
    if stat.S_ISDIR(status.st_mode):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _SPECIAL_FILES.items() if test(status.st_mode)), "a special file")
        raise VideoDecodeError(path, f"not a regular file: {kind}")
    if status.st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        reason = "permission denied (the file cannot be read)" if error.errno == errno.EACCES else error.strerror
        raise VideoDecodeError(path, reason) from None


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
    path, limits = expand_path(path), limits or VideoLimits()
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
    video sideways and say so there). (3, H, W) uint8 RGB.

    FFmpeg converts to planar RGB (`gbrp`), so each channel is one contiguous copy: converting to packed RGB and
    transposing to channels-first costs four times as much."""
    quarter_turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
    if quarter_turns % 2:
        height, width = width, height
    planar = frame.reformat(width=width, height=height, format="gbrp", interpolation="BICUBIC")
    green, blue, red = (
        np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width] for plane in planar.planes
    )
    image = np.stack((red, green, blue))
    return np.ascontiguousarray(np.rot90(image, k=quarter_turns, axes=(1, 2))) if quarter_turns else image


def _seek_before(container, stream, seconds: float) -> None:
    """Put the demuxer on the last keyframe at or before `seconds` (stream time)."""
    container.seek(max(0, int(seconds / stream.time_base)), stream=stream, backward=True, any_frame=False)


class _SeekMissed(Exception):
    """A seek that left the decoder after the first target, or with nothing to decode."""


def _iter_pyav(
    info: VideoInfo, targets: np.ndarray, size: tuple[int, int], threads: int, seek: bool = False
) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (target index, (3, H, W) uint8 frame, its time) for every target time, in order.

    A target takes the first frame shown at or after it (within half a frame). Between targets, the decoder drops
    non-reference frames (nothing depends on them), and only the chosen frames are converted and resized. With
    `seek`, decoding starts at the keyframe before the first target; where the container cannot seek precisely (the
    first frame comes after the target, or the seek leaves nothing to decode, as past the last keyframe of some
    MPEG-TS files) it starts over from the beginning.
    """
    if seek:
        try:
            yield from _decode_targets(info, targets, size, threads, seek=True)
            return
        except _SeekMissed:
            pass
    yield from _decode_targets(info, targets, size, threads, seek=False)


def _decode_targets(
    info: VideoInfo, targets: np.ndarray, size: tuple[int, int], threads: int, seek: bool
) -> Iterator[tuple[int, np.ndarray, float]]:
    """`_iter_pyav` with one decoder; raises `_SeekMissed` (before yielding anything) when a seek missed.

    The loop runs once per packet and once per decoded frame, so it stays on Python ints and floats: times in the
    stream's ticks are compared with precomputed bounds, and `skip_frame` is set only when it changes."""
    height, width = size
    half_frame = 0.5 / info.fps
    # Frames still in flight: reordering (B-frames) and frame threads; decode everything this close to a target.
    margin = (threads + 4) / info.fps
    with _open(info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO" if threads > 1 else "SLICE"
        context = stream.codec_context
        context.thread_count = threads
        tick = float(stream.time_base) if stream.time_base else 1.0 / info.fps
        origin = info.start_time
        # Per target: decode every frame from this tick on (packet dts), keep frames from this time on.
        decode_from = ((targets - margin + origin) / tick).tolist()
        keep_from = (targets - half_frame).tolist()
        k, total, checked, skipping = 0, len(targets), not seek, False
        try:
            if seek:
                _seek_before(container, stream, targets[0] + origin - margin)
            for packet in container.demux(stream):
                dts = packet.dts
                if dts is not None and (dts < decode_from[k]) != skipping:
                    skipping = not skipping
                    context.skip_frame = "NONREF" if skipping else "DEFAULT"
                for frame in context.decode(packet):
                    pts = frame.pts
                    if pts is None:
                        continue
                    time = pts * tick - origin
                    if not checked:
                        checked = True
                        if time > keep_from[0]:  # the seek overshot
                            raise _SeekMissed
                    if time < keep_from[k]:
                        continue
                    image = _displayed(frame, height, width)
                    while k < total and time >= keep_from[k]:
                        yield k, image, time
                        k += 1
                    if k == total:
                        return
        except av.FFmpegError as error:
            if seek and not checked:
                raise _SeekMissed from error
            if k == 0:
                raise VideoDecodeError(info.path, f"undecodable video stream ({error})") from error
            return  # a damaged tail: the caller decides whether what was decoded covers the video
        if not checked:  # the seek left nothing to decode
            raise _SeekMissed


def _iter_torchcodec(
    info: VideoInfo, targets: np.ndarray, size: tuple[int, int], threads: int, chunk: int = 256
) -> Iterator[tuple[int, torch.Tensor, float]]:
    """`_iter_pyav` through torchcodec (approximate seeking, FFmpeg's frame threads, resized while decoding; it turns
    frames by their display matrix itself).

    A target takes the frame shown half a frame after it, which on constant-rate video is the frame the PyAV
    backend takes (the first at or after the target, within half a frame); on variable-rate video the two may
    differ by one frame. Where a batch fails (a truncated file), the frames are asked for one by one up to the
    first that fails, and the caller checks coverage, as with PyAV. Where torchcodec answers with a frame not shown
    at the asked time (its seeking in MPEG-TS), `_SeekMissed` is raised and the caller decodes with PyAV."""
    try:  # inside `try`, so transformers' remote-code import check does not demand torchcodec from Hub users
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize
    except ImportError as error:
        raise ImportError("the torchcodec backend needs torchcodec; use backend='pyav'") from error

    try:
        decoder = VideoDecoder(
            info.path, seek_mode="approximate", num_ffmpeg_threads=threads, transforms=[Resize(size=size)]
        )
    except (RuntimeError, ValueError, IndexError) as error:
        raise VideoDecodeError(info.path, f"torchcodec could not open the video ({error})") from error
    end = decoder.metadata.end_stream_seconds or (info.start_time + info.duration)
    seconds = np.minimum(targets + info.start_time + 0.499 / info.fps, max(end - 1e-3, 0.0)).tolist()

    def frames_at(start: int) -> list[tuple[torch.Tensor, float, float]]:
        times = seconds[start : start + chunk]
        try:
            batch = decoder.get_frames_played_at(seconds=times)
            return list(zip(batch.data, batch.pts_seconds.tolist(), batch.duration_seconds.tolist(), strict=True))
        except (RuntimeError, ValueError, IndexError) as error:
            found = []
            for time in times:
                try:
                    frame = decoder.get_frame_played_at(seconds=time)
                except (RuntimeError, ValueError, IndexError):
                    if start + len(found) == 0:
                        raise VideoDecodeError(info.path, f"undecodable video stream ({error})") from error
                    break
                found.append((frame.data, float(frame.pts_seconds), float(frame.duration_seconds)))
            return found

    for start in range(0, len(targets), chunk):
        found = frames_at(start)
        for offset, (_, pts, duration) in enumerate(found):
            asked = seconds[start + offset]
            if not pts - 1e-6 <= asked < pts + max(duration, 0.5 / info.fps) + 1e-6:
                raise _SeekMissed(f"torchcodec gave the frame at {pts:.3f} s for {asked:.3f} s")
        for offset, (image, pts, _) in enumerate(found):
            yield start + offset, image, pts - info.start_time
        if len(found) < len(seconds[start : start + chunk]):
            return


def _fill(iterator: Iterator[tuple[int, np.ndarray, float]], frames: torch.Tensor, times: np.ndarray) -> int:
    """Write what `iterator` yields ((3, H, W) frames) into frames (n, 3, H, W) and times (n,); returns how many
    were filled."""
    filled, out = 0, frames.numpy()  # numpy copies in the calling thread; torch's would wake its thread pool
    for k, image, time in iterator:
        out[k] = image
        times[k] = time
        filled = k + 1
    return filled


def _split(count: int, parts: int, min_part: int) -> list[tuple[int, int]]:
    """[0, count) as at most `parts` contiguous ranges of at least `min_part` items."""
    parts = max(1, min(parts, count // max(min_part, 1)))
    bounds = np.linspace(0, count, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _decode_into(
    info: VideoInfo,
    targets: np.ndarray,
    size: tuple[int, int],
    backend: str,
    workers: int,
    frames: torch.Tensor,
    times: np.ndarray,
    resume: bool,
) -> int:
    """Decode `targets` into frames / times and return how many, counted from the first, were decoded.

    PyAV: the targets are cut into one contiguous time range per worker, each decoded by its own decoder that seeks
    to the keyframe before its range (PyAV releases the GIL while decoding), with `FRAME_THREADS_PER_RANGE` frame
    threads, or more where there are fewer ranges than workers (short videos). `resume` says the first
    range does not start at the beginning of the video and must seek too.
    """
    if backend == "torchcodec":
        try:
            return _fill(_iter_torchcodec(info, targets, size, workers), frames, times)
        except _SeekMissed:
            pass  # torchcodec misplaces frames in this container: PyAV decodes it (and overwrites what was filled)
    ranges = _split(len(targets), workers, MIN_FRAMES_PER_WORKER)
    threads = max(min(FRAME_THREADS_PER_RANGE, workers), workers // len(ranges))
    if len(ranges) == 1:
        return _fill(_iter_pyav(info, targets, size, threads, seek=resume), frames, times)

    inference = torch.is_inference_mode_enabled()  # thread-local: workers writing into the caller's tensor need it

    def run(bounds: tuple[int, int]) -> int:
        a, b = bounds
        with torch.inference_mode(inference):
            return _fill(_iter_pyav(info, targets[a:b], size, threads, seek=resume or a > 0), frames[a:b], times[a:b])

    with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="hour-llava-decode") as pool:
        filled = list(pool.map(run, ranges))
    for (a, b), count in zip(ranges, filled, strict=True):
        if a + count < b:
            return a + count
    return len(targets)


def truncation_slack(video_fps: float, sample_fps: float) -> float:
    """Seconds the decoded frames may end before the last planned frame (metadata slop): two video frames or two
    sampled frames, whichever is longer. More than that and the video counts as truncated (here and in
    `dataset_builder`'s probe)."""
    return max(2.0 / video_fps, 2.0 / sample_fps)


def _check_coverage(info: VideoInfo, targets: np.ndarray, times: np.ndarray, decoded: int, sample_fps: float) -> None:
    """Refuse a stream that ends well before the targets; a few missing frames at the very end (metadata slop) are
    tolerated and later repeat the last decoded frame."""
    if decoded == 0:
        raise VideoDecodeError(info.path, "no decodable frames")
    if decoded < len(targets):
        covered = times[decoded - 1]
        if targets[-1] - covered > truncation_slack(info.fps, sample_fps):
            raise VideoDecodeError(
                info.path, f"truncated: frames end at {covered:.2f} s, but the video claims {info.duration:.2f} s"
            )


class FrameStream:
    """The sampled frames of one video, decoded on demand and handed out `chunk_frames` at a time.

    `num_frames`, `duration` and `info` are known before any decoding (from the container), so prompts can be built
    first; iterating yields uint8 chunks (t, 3, H, W) in order, so the vision side sees an hour of video while only
    a few chunks are held: the frames are decoded a segment at a time, one chunk per worker (each decodes its chunk
    as one range with its own decoder, as `decode_all` does with the whole video), at most `STREAM_SEGMENT_BYTES`
    (512 frames at 384 px are 226 MB; on 2 cores a segment is two of them). `times` holds each frame's
    presentation time once decoded.
    """

    def __init__(
        self,
        info: VideoInfo,
        indices: np.ndarray,
        size: tuple[int, int],
        sample_fps: float,
        backend: str,
        workers: int,
        chunk_frames: int,
    ):
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
        self.info, self.size, self.sample_fps = info, size, sample_fps
        self.backend, self.workers, self.chunk_frames = backend, workers, chunk_frames
        self.indices = indices
        self.targets = indices / info.fps
        self.times = np.full(len(indices), np.nan)

    @property
    def num_frames(self) -> int:
        return len(self.targets)

    @property
    def duration(self) -> float:
        """Seconds, as the time instruction states them (frames / frame rate, the reference's)."""
        return self.info.num_frames / self.info.fps

    def __len__(self) -> int:
        return self.num_frames

    @property
    def segment_frames(self) -> int:
        """Frames decoded together while streaming: one chunk per worker, within `STREAM_SEGMENT_BYTES`."""
        frame_bytes = 3 * self.size[0] * self.size[1]
        chunks = max(1, min(self.workers, STREAM_SEGMENT_BYTES // max(1, self.chunk_frames * frame_bytes)))
        return chunks * self.chunk_frames

    def decode_all(self) -> torch.Tensor:
        """Every sampled frame in one preallocated tensor (T, 3, H, W) uint8."""
        return self._decode(0, self.num_frames)

    def __iter__(self) -> Iterator[torch.Tensor]:
        segment = self.segment_frames
        for first in range(0, self.num_frames, segment):
            frames = self._decode(first, min(first + segment, self.num_frames))
            for start in range(0, frames.shape[0], self.chunk_frames):
                yield frames[start : start + self.chunk_frames]
            del frames

    def _decode(self, start: int, stop: int) -> torch.Tensor:
        """Sampled frames [start, stop) as one (stop - start, 3, H, W) uint8 tensor."""
        frames = torch.empty((stop - start, 3, *self.size), dtype=torch.uint8)
        decoded = _decode_into(
            self.info,
            self.targets[start:stop],
            self.size,
            self.backend,
            self.workers,
            frames,
            self.times[start:stop],
            start > 0,
        )
        self._finish(frames, decoded, start)
        return frames

    def _finish(self, frames: torch.Tensor, decoded: int, start: int) -> None:
        """Check coverage of a decoded chunk starting at frame `start`; pad a slightly short end."""
        if decoded < frames.shape[0]:
            _check_coverage(self.info, self.targets, self.times, start + decoded, self.sample_fps)
            if decoded == 0:  # the end fell exactly on a chunk boundary
                frames[:] = self._last_frame
                self.times[start:] = self.times[start - 1]
                return
            frames[decoded:] = frames[decoded - 1]
            self.times[start + decoded : start + frames.shape[0]] = self.times[start + decoded - 1]
        self._last_frame = frames[-1].clone()


def open_frame_stream(
    path: str | os.PathLike,
    size: int | tuple[int, int] = 384,
    sample_fps: float = 1.0,
    min_frames: int = 128,
    max_frames: int | None = None,
    backend: str = "auto",
    threads: int = 0,
    limits: VideoLimits | None = None,
    info: VideoInfo | None = None,
    chunk_frames: int = 512,
) -> FrameStream:
    """Probe a video and plan its frames (the reference's sampling rule) without decoding any; see [`FrameStream`].

    threads: decoding workers (0: every core).
    """
    info = info or probe_video(expand_path(path), limits)
    size = (size, size) if isinstance(size, int) else tuple(size)
    indices = sample_frame_indices(info.num_frames, info.fps, sample_fps, min_frames, max_frames)
    workers = threads or os.cpu_count() or 1
    return FrameStream(info, indices, size, sample_fps, resolve_backend(backend), workers, chunk_frames)


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
    stream = open_frame_stream(path, size, sample_fps, min_frames, max_frames, backend, threads, limits, info)
    frames = stream.decode_all()
    return frames, stream.info, stream.times


__all__ = [
    "FrameStream",
    "VideoDecodeError",
    "VideoInfo",
    "VideoLimits",
    "decode_frames",
    "open_frame_stream",
    "probe_video",
    "resolve_backend",
    "sample_frame_indices",
    "torchcodec_available",
]
