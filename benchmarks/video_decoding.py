"""Video decoding benchmark: Hour-LLaVA's 1 fps loader against lmms-eval's `read_video` and a full decode.

What is measured
----------------
A matrix of kinds of file (`MATRIX`; `--files` picks some), all 30 fps and `--durations` minutes long (30 by
default; the 1080p file at most 5: lmms-eval's reader would need 17 GB of RAM for 30 minutes of it), 16:9, in mp4:

* `lowres`: 640 x 360 H.264, x264 preset `ultrafast`: no B-frames (every frame is a reference frame, so nothing
  can be skipped between samples and the loader's own cost per frame shows), no CABAC, no deblocking;
* `x264`: 1280 x 720 H.264, x264 preset `superfast`: x264's default B-frames (3, with a reference pyramid and
  adaptive placement), CABAC and deblocking, a keyframe every 250 frames (8.3 s);
* `long-gop`: the same with a keyframe every 1,800 frames (60 s);
* `1080p`: 1920 x 1080, as `x264`;
* `vp9`: 1280 x 720 VP9 (libvpx, realtime, cpu-used 8), a keyframe every 250 frames; in mp4, because lmms-eval's
  reader keeps every decoded frame of a webm or mkv file (its container check): 75 GB for 30 minutes of 720p.

`--height` scales them all (it is the height of the 720p files; `--quick`: 360). For the memory goal, the `x264`
file is joined to itself without re-encoding until it lasts `--rss-minutes` (60; none with `--quick`): the
`ours, streamed` row of that hour is the only one measured on it; its frames repeat, and carry their index within
the repeated file.

The content is synthetic but moves like video: a textured background that pans, smooth blobs that slide across
it, and two bands of black and white blocks that carry the frame index (its Gray code, so one block changes per
frame and x264 keeps choosing B-frames): the low 16 bits across the middle, read with
`dataset_builder.synthetic_video.read_frame_index`, and the high bits in a band centred at 1/6 of the height,
read the same way on the top third of the frame. So every decoded frame says which frame it is.

Each video is decoded by:

* `ours`: `decode_frames(path, size=384)`, what `HourLlavaVideoProcessor` does: 1 fps, frames resized to 384 x 384
  while decoding, into one (T, 3, 384, 384) uint8 tensor; PyAV: the sampled frames are cut into one time range
  per core, each decoded by its own single-threaded decoder that seeks to the keyframe before its range and
  skips non-reference frames between samples;
* `ours, streamed`: `open_frame_stream(path, size=384, chunk_frames=512)` iterated chunk by chunk, as
  `model.encode_video(video_streams=...)` consumes it: one chunk per core is decoded at a time (1 GiB at most);
* `ours, torchcodec`: `ours` with `backend="torchcodec"` (where torchcodec and FFmpeg's libraries load);
* `ours, 2 threads per range`: `ours` with 2 frame threads per range decoder (`FRAME_THREADS_PER_RANGE = 2`), as before;
* `ours, 1 thread`: `ours` with `threads=1` (one sequential decoder);
* `lmms-eval read_video`: lmms-eval's reader, `read_video(path, fps=1, num_frm=10**9, backend="pyav")`: with
  `num_frm` that large, `fps=1` alone decides the count (`int(frames / frame rate)`, spread evenly over the video),
  and the frames come back at full resolution (N, 720, 1280, 3) as its models receive them;
* `full decode (ffmpeg)`: `ffmpeg -v error -threads 0 -i file -f null -` (Debian's FFmpeg command line, which a
  full run installs with apt-get where it is missing and it may): every frame decoded with FFmpeg's automatic
  thread count, nothing converted: the floor;
* `full decode (PyAV)`: every frame decoded by PyAV with frame threads, nothing converted (the floor where
  ffmpeg is missing).

Every measurement runs in a fresh child process (`--start-method spawn`, the default: a new interpreter), so its
peak RSS (`ru_maxrss`) belongs to it alone; it includes the interpreter and the imports (for `ours`, the
`modeling_hour_llava` package with torch; the RSS after the imports is reported as `baseline`). The time is the
wall-clock time of the decoding call alone (for ffmpeg, of the process). Before each video's rows the file is read
once, so every method finds it in the page cache.

Columns: `wall s` is the wall-clock time of the call (with `--repeats N`, the fastest of N); `CPU s` the CPU time
of all the process's threads during it; `frames` what the method returns; `decoded fps` the video's frames
divided by the wall time, how fast the method gets through the video (for a full decode, the frames decoded per
second); `vs lmms-eval` and `vs full decode` are speed-ups (their wall time divided by this row's; above 1 is
faster); `check` compares the frame index printed in every returned frame with the index the sampling rule asks
for: the reference's rule (every `round(fps)`-th frame; at least 128 frames spread evenly) for `ours`, lmms-eval's
own (`linspace`) for lmms-eval; `other load` is the CPU that other processes of the machine used meanwhile, as a
share of all cores: wall times are only comparable between rows where it is near 0 (CPU times suffer less).

The goals (from the issue) are checked on `ours` for every file of the matrix: at least 1.5x faster than
lmms-eval's reader, and a wall time at most 1.1x the full decode's (ffmpeg's where installed, else PyAV's); and on
`ours, streamed` for the hour of 720p: a peak RSS under 2 GiB (one hour at 384 px held at once is 1.6 GB of frames
by itself, so only the streamed path can meet it).

Results: a markdown table on stdout and a JSON file (`benchmarks/results/video_decoding.json` by default, written
atomically) with the rows, the goals, the videos and the machine. Encoded videos are cached in `--workdir`
(`/tmp/hour_llava_decode_bench` by default; `--prepare-only` encodes them and measures nothing).

    python benchmarks/video_decoding.py            # full run: about 2 h of encoding on 2 idle cores, then ~1 h
    python benchmarks/video_decoding.py --quick    # 1-minute videos at half size, 3 methods: a smoke test
"""

from __future__ import annotations

import argparse
import fractions
import math
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "video_decoding.json"
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "hour_llava_decode_bench"

FPS = 30
SAMPLE_FPS = 1.0
MIN_FRAMES = 128  # the reference's (and `decode_frames`') minimum number of sampled frames
SIZE = 384  # what the processor asks for
DEFAULT_DURATIONS_MIN = (30.0,)
QUICK_DURATIONS_MIN = (1.0,)
DEFAULT_HEIGHT, QUICK_HEIGHT = 720, 360  # the height of the "720p" files; the others scale with it
DEFAULT_RSS_MINUTES = 60.0  # the hour of 720p the memory goal is about


@dataclass(frozen=True)
class FileKind:
    """One kind of video file of the matrix. `scale` multiplies `--height` (720 by default)."""

    key: str
    name: str
    scale: float
    codec: str
    options: tuple[tuple[str, str], ...]
    keyint: int | None  # keyframe interval in frames; None: the encoder's default (x264: 250)
    gop: str
    max_minutes: float | None = None  # a cap on `--durations` (see MATRIX)


X264_DEFAULT = (("preset", "superfast"),)  # x264's default B-frames (3, adaptive, pyramid), CABAC, deblocking
MATRIX = (
    # Every frame a reference frame: nothing to skip between samples, so the loader's own cost per frame shows.
    FileKind("lowres", "x264 ultrafast, no B-frames", 0.5, "libx264", (("preset", "ultrafast"),), None, "normal GOP"),
    FileKind("x264", "x264, B-frames", 1.0, "libx264", X264_DEFAULT, None, "normal GOP"),
    FileKind("long-gop", "x264, B-frames, long GOP", 1.0, "libx264", X264_DEFAULT, 1800, "long GOP"),
    # lmms-eval's reader holds every sampled frame twice at full size (yuv420p, then RGB): 17 GB for 30 minutes of
    # 1080p, more than a shared 24 GB machine can give it; 5 minutes need 2.8 GB (and encode in 25 minutes on 2
    # busy cores).
    FileKind("1080p", "x264, B-frames", 1.5, "libx264", X264_DEFAULT, None, "normal GOP", max_minutes=5.0),
    # VP9 in mp4: lmms-eval's reader keeps every decoded frame of a webm or mkv file (its container check), which
    # for 30 minutes of 720p is 75 GB; in mp4 it takes the path that keeps only the sampled frames.
    FileKind(
        "vp9",
        "VP9",
        1.0,
        "libvpx-vp9",
        (("deadline", "realtime"), ("cpu-used", "8"), ("row-mt", "1")),
        250,
        "normal GOP",
    ),
)
MATRIX_BY_KEY = {kind.key: kind for kind in MATRIX}
RSS_KIND = "x264"  # the hour of 720p for the memory goal is this kind, measured by `ours, streamed` only
CONTENT_VERSION = 1  # bump when `Scene` changes, so cached videos are re-encoded

OURS = "ours"
OURS_1_THREAD = "ours, 1 thread"
OURS_TORCHCODEC = "ours, torchcodec"
OURS_TWO_THREAD_RANGES = "ours, 2 threads per range"
OURS_STREAMED = "ours, streamed"
STREAM_CHUNK_FRAMES = 512  # frames per chunk handed to the vision side (`open_frame_stream`'s default)
LMMS_EVAL = "lmms-eval read_video"
FULL_FFMPEG = "full decode (ffmpeg)"
FULL_PYAV = "full decode (PyAV)"
METHODS = (
    FULL_FFMPEG,
    FULL_PYAV,
    OURS_TORCHCODEC,
    OURS_TWO_THREAD_RANGES,
    OURS,
    OURS_STREAMED,
    OURS_1_THREAD,
    LMMS_EVAL,
)
QUICK_METHODS = (FULL_FFMPEG, OURS, LMMS_EVAL)  # FULL_PYAV replaces FULL_FFMPEG where ffmpeg is missing

SPEEDUP_GOAL = 1.5  # ours at least this much faster than lmms-eval's reader
FULL_DECODE_GOAL = 1.1  # ours no slower than this times the full decode (ffmpeg's command line)
RSS_GOAL_MIB = 2 * 1024  # peak RSS of ours, streamed, on one hour of 720p


# ---------------------------------------------------------------------------------------------------------------
# Synthetic videos
# ---------------------------------------------------------------------------------------------------------------
class Scene:
    """Frames of a moving synthetic scene as yuv420p arrays ((H * 3 / 2, W) uint8), with the index in two bands.

    `scene(i, width, height)` is frame `offset + i` (the signature `write_video`'s `frame_fn` has).
    """

    def __init__(self, width: int, height: int, offset: int = 0, seed: int = 0, progress: str | None = None):
        import numpy as np

        from dataset_builder.synthetic_video import INDEX_BITS

        if width % 2 or height % 2:
            raise ValueError("yuv420p needs an even width and height")
        self.width, self.height, self.offset, self.progress = width, height, offset, progress
        self.started = time.perf_counter()
        rng = np.random.default_rng(seed)
        self.pad = pad = max(16, width // 8) & ~1
        rows, cols = height + 2 * pad, width + 2 * pad
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        # Smooth random relief (blocky noise, box-blurred), waves and a little fine grain.
        cell = 32
        coarse = rng.normal(size=(rows // cell + 2, cols // cell + 2)).astype(np.float32)
        coarse = np.kron(coarse, np.ones((cell, cell), np.float32))[:rows, :cols]
        k = cell // 2
        summed = np.cumsum(np.cumsum(np.pad(coarse, k, mode="edge"), 0), 1)
        smooth = (summed[2 * k :, 2 * k :] - summed[: -2 * k, 2 * k :] - summed[2 * k :, : -2 * k])[:rows, :cols]
        smooth = (smooth + summed[: -2 * k, : -2 * k][:rows, :cols]) / (4 * k * k)
        luma = 110 + 40 * np.sin(xx / 97.0) * np.cos(yy / 61.0) + 50 * smooth + rng.normal(0, 3, (rows, cols))
        self.luma = np.clip(luma, 16, 235).astype(np.uint8)
        hy, hx = yy[::2, ::2], xx[::2, ::2]
        self.cb = np.clip(128 + 40 * np.sin(hx / 100.0 + hy / 140.0), 16, 240).astype(np.uint8)
        self.cr = np.clip(128 + 40 * np.cos(hx / 80.0 - hy / 180.0), 16, 240).astype(np.uint8)
        blob_h, blob_w = (height // 6) & ~1, (width // 10) & ~1
        by, bx = np.mgrid[0:blob_h, 0:blob_w].astype(np.float32)
        radius = np.hypot((by - blob_h / 2) / blob_h, (bx - blob_w / 2) / blob_w) * 2
        self.blob = np.clip(200 - 80 * radius + 20 * np.sin(bx / 5.0), 16, 235).astype(np.uint8)
        self.band_half = max(4, height // 24) & ~1
        self.edges = np.linspace(0, width, INDEX_BITS + 1).astype(int)
        self.bits = INDEX_BITS

    @staticmethod
    def _triangle(value: int, period: int) -> int:
        value %= 2 * period
        return value if value < period else 2 * period - value

    def _band(self, y, cb, cr, centre: int, value: int) -> None:
        rows = slice(centre - self.band_half, centre + self.band_half)
        for bit in range(self.bits):
            y[rows, self.edges[bit] : self.edges[bit + 1]] = 235 if (value >> bit) & 1 else 16
        cb[rows.start // 2 : rows.stop // 2] = 128
        cr[rows.start // 2 : rows.stop // 2] = 128

    def __call__(self, index: int, width: int, height: int):
        import numpy as np

        w, h, pad = self.width, self.height, self.pad
        if (width, height) != (w, h):
            raise ValueError(f"scene is {w}x{h}, asked for {width}x{height}")
        index += self.offset
        frame = np.empty((h * 3 // 2, w), np.uint8)
        y = frame[:h]
        cb = frame[h : h + h // 4].reshape(h // 2, w // 2)
        cr = frame[h + h // 4 :].reshape(h // 2, w // 2)
        x0 = self._triangle(2 * index, 2 * pad) & ~1  # pans 2 px per frame, back and forth
        y0 = self._triangle(2 * (index // 2), 2 * pad) & ~1
        y[:] = self.luma[y0 : y0 + h, x0 : x0 + w]
        cb[:] = self.cb[y0 // 2 : y0 // 2 + h // 2, x0 // 2 : x0 // 2 + w // 2]
        cr[:] = self.cr[y0 // 2 : y0 // 2 + h // 2, x0 // 2 : x0 // 2 + w // 2]
        blob_h, blob_w = self.blob.shape
        for k, speed in enumerate((3, -5, 7)):  # three blobs sliding through the bottom third
            x = (k * w // 3 + speed * index) % (w - blob_w)
            top = 2 * h // 3 + 4 + (k * blob_h // 2) % max(1, h // 3 - blob_h - 8)
            y[top : top + blob_h, x : x + blob_w] = self.blob
        gray = index ^ (index >> 1)
        self._band(y, cb, cr, h // 2, gray & ((1 << self.bits) - 1))
        self._band(y, cb, cr, (h // 3) // 2, gray >> self.bits)
        if self.progress and index % 9000 == 0 and index > self.offset:
            rate = (index - self.offset) / (time.perf_counter() - self.started)
            print(f"    {self.progress}: frame {index:,} ({rate:.0f} fps)", file=sys.stderr, flush=True)
        return frame


def frame_index(frame) -> int:
    """The index a `Scene` frame carries; `frame` is (H, W, 3) or (3, H, W) uint8 RGB, any size."""
    from dataset_builder.synthetic_video import INDEX_BITS, read_frame_index

    if frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = frame.transpose(1, 2, 0)
    gray = read_frame_index(frame) | read_frame_index(frame[: frame.shape[0] // 3]) << INDEX_BITS
    index = 0
    while gray:
        index ^= gray
        gray >>= 1
    return index


@dataclass
class Video:
    label: str
    kind: str
    path: str
    gop: str
    keyint: int | None
    minutes: float
    width: int
    height: int
    fps: int
    frames: int
    codec: str
    options: dict
    size_mb: float = 0.0
    encode_seconds: float = 0.0  # 0 when it came from the cache
    memory_only: bool = False  # measured by `ours, streamed` alone, for the memory goal
    period: int | None = None  # the frames repeat with this period (the index they carry is frame % period)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def _encode_part(path: Path, first: int, count: int, width: int, height: int, kind: FileKind) -> float:
    """Encode frames [first, first + count) of the scene to `path` (atomically); returns the seconds it took."""
    from dataset_builder.synthetic_video import write_video

    started = time.perf_counter()
    scene = Scene(width, height, offset=first, progress=path.name)
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    write_video(
        partial,
        count,
        fps=FPS,
        width=width,
        height=height,
        codec=kind.codec,
        gop=kind.keyint,
        frame_fn=scene,
        options=dict(kind.options),
        frame_format="yuv420p",
    )
    os.replace(partial, path)
    return time.perf_counter() - started


def _join_parts(parts: list[Path], path: Path, frames_per_part: list[int]) -> None:
    """Concatenate mp4 files made with identical encoder settings into `path`, without re-encoding."""
    import av

    partial = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(partial), "w") as output:
        stream = None
        start_frame = 0
        for part, frames in zip(parts, frames_per_part, strict=True):
            with av.open(str(part)) as source:
                video = source.streams.video[0]
                if stream is None:
                    stream = output.add_stream_from_template(video)
                    extradata = video.codec_context.extradata
                elif video.codec_context.extradata != extradata:
                    raise RuntimeError(f"{part}: other encoder parameters than {parts[0]}; cannot join")
                shift = round(fractions.Fraction(start_frame, FPS) / video.time_base)
                for packet in source.demux(video):
                    if packet.dts is None:  # the demuxer's final empty packet
                        continue
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = stream
                    output.mux(packet)
            start_frame += frames
    os.replace(partial, path)


def _even(value: float) -> int:
    return int(round(value / 2)) * 2


def prepare_videos(args) -> list[Video]:
    """Encode (or find in the cache) every video of the run: one file per kind and duration, and the memory goal's
    hour of 720p, which is the first x264 file played over and over (joined without re-encoding, so it costs no
    encoding; its frames carry their index within the repeated file)."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    videos = []
    for kind in (kind for kind in MATRIX if kind.key in args.files):
        height = _even(args.height * kind.scale)
        width = _even(height * 16 / 9)
        settings = "_".join(f"{key}{value}" for key, value in kind.options)
        keyint = kind.keyint or "default"
        stem = f"scene{CONTENT_VERSION}_{width}x{height}_{FPS}fps_{kind.codec}_{settings}_keyint{keyint}"
        for minutes in dict.fromkeys(min(minutes, kind.max_minutes or minutes) for minutes in args.durations):
            frames = round(minutes * 60 * FPS)
            path, encode_seconds = workdir / f"{stem}_frames0-{frames}.mp4", 0.0
            if not path.exists():
                print(f"  encoding {path.name} ({frames:,} frames)", file=sys.stderr, flush=True)
                encode_seconds = _encode_part(path, 0, frames, width, height, kind)
                print(f"  encoded {path.name} in {encode_seconds:.0f} s", file=sys.stderr, flush=True)
            video = Video(
                label=f"{minutes:g} min {height}p {kind.name}",
                kind=kind.key,
                path=str(path),
                gop=kind.gop,
                keyint=kind.keyint,
                minutes=minutes,
                width=width,
                height=height,
                fps=FPS,
                frames=frames,
                codec=kind.codec,
                options=dict(kind.options),
                size_mb=round(path.stat().st_size / 1e6, 1),
                encode_seconds=round(encode_seconds, 1),
            )
            videos.append(video)
        if kind.key == RSS_KIND and args.rss_minutes:
            videos.append(repeated_video(videos[-1], args.rss_minutes))
    return videos


def repeated_video(video: Video, minutes: float) -> Video:
    """`video` joined to itself until it lasts at least `minutes` (a whole number of copies)."""
    copies = math.ceil(minutes / video.minutes)
    path = Path(video.path).with_name(Path(video.path).stem + f"_x{copies}.mp4")
    if not path.exists():
        _join_parts([Path(video.path)] * copies, path, [video.frames] * copies)
    total = video.minutes * copies
    return replace(
        video,
        label=f"{total:g} min {video.height}p {MATRIX_BY_KEY[video.kind].name} ({copies} x {video.minutes:g} min)",
        path=str(path),
        minutes=total,
        frames=video.frames * copies,
        size_mb=round(path.stat().st_size / 1e6, 1),
        encode_seconds=0.0,
        memory_only=True,
        period=video.frames,
    )


PICTURE_TYPES = {1: "I", 2: "P", 3: "B", 4: "S", 5: "SI", 6: "SP", 7: "BI"}  # FFmpeg's AVPictureType


def stream_summary(path: str) -> dict:
    """Codec, bit rate and the picture types of the first 300 frames (I, P, B) of a video."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        types: dict[str, int] = {}
        for number, frame in enumerate(container.decode(stream)):
            name = getattr(frame.pict_type, "name", None) or PICTURE_TYPES.get(int(frame.pict_type), "?")
            types[name] = types.get(name, 0) + 1
            if number >= 299:
                break
        return dict(
            codec=stream.codec_context.name,
            profile=stream.codec_context.profile,
            pix_fmt=stream.codec_context.pix_fmt,
            bit_rate_mbps=round((stream.bit_rate or container.bit_rate or 0) / 1e6, 2),
            has_b_frames=stream.codec_context.has_b_frames,
            frame_types_first_300=types,
        )


# ---------------------------------------------------------------------------------------------------------------
# Measurements (child side)
# ---------------------------------------------------------------------------------------------------------------
def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    peak = resource.getrusage(who).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def cpu_seconds(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def expected_ours(num_frames: int, fps: float):
    """The reference's sampling rule, written out independently of `sample_frame_indices`."""
    import numpy as np

    step = max(1, round(fps / SAMPLE_FPS))
    indices = np.arange(0, num_frames, step)
    if len(indices) < MIN_FRAMES:
        indices = np.linspace(0, num_frames - 1, min(num_frames, MIN_FRAMES)).astype(np.int64)
    return indices


def expected_lmms_eval(num_frames: int, fps: float):
    """lmms-eval's `load_video_stream` with `fps=1` and an unbounded `num_frm`."""
    import numpy as np

    count = min(num_frames, int(num_frames / fps * SAMPLE_FPS))
    return np.linspace(0, num_frames - 1, count, dtype=int)


def frame_indices(frames) -> list[int]:
    """The index each frame (N, 3, H, W) or (N, H, W, 3) carries."""
    frames = frames.numpy() if hasattr(frames, "numpy") else frames
    return [frame_index(frames[k]) for k in range(len(frames))]


def index_check(found: list[int], expected) -> dict:
    """Compare the index each returned frame carries with the expected one."""
    count = min(len(found), len(expected))
    errors = [abs(found[k] - int(expected[k])) for k in range(count)]
    matching = sum(error == 0 for error in errors)
    first_bad = next((k for k, error in enumerate(errors) if error), None)
    return dict(
        checked=len(found),
        expected=len(expected),
        matching=matching,
        max_abs_error=max(errors, default=0),
        first_mismatch=None
        if first_bad is None
        else dict(position=first_bad, found=found[first_bad], expected=int(expected[first_bad])),
        ok=len(found) == len(expected) and matching == len(expected),
    )


class Window:
    """Wall time, CPU time of this process (all its threads) and of the rest of the machine, around one call."""

    def __enter__(self):
        self.baseline_rss_mib = peak_rss_mib()
        self.busy = busy_cpu_seconds()
        self.cpu = cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.cpu = cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)) - self.cpu
        self.peak_rss_mib = peak_rss_mib()
        busy = busy_cpu_seconds()
        self.other_share = None if busy is None else other_share(busy - self.busy - self.cpu, self.seconds)

    def result(self, **fields) -> dict:
        return dict(
            seconds=self.seconds,
            cpu_seconds=self.cpu,
            baseline_rss_mib=self.baseline_rss_mib,
            peak_rss_mib=self.peak_rss_mib,
            other_processes_cpu_share=self.other_share,
            **fields,
        )


def measure_ours(
    path: str, threads: int, period: int | None, backend: str = "pyav", frame_threads: int | None = None
) -> dict:
    from modeling_hour_llava import video_loading_hour_llava
    from modeling_hour_llava.video_loading_hour_llava import decode_frames

    if frame_threads is not None:  # this child only
        video_loading_hour_llava.FRAME_THREADS_PER_RANGE = frame_threads

    with Window() as window:
        frames, info, times = decode_frames(path, size=SIZE, backend=backend, threads=threads)
    return ours_result(window, frame_indices(frames), info, times, tuple(frames.shape), frames.numel(), period)


def measure_ours_streamed(path: str, threads: int, period: int | None) -> dict:
    """The frames chunk by chunk, as `encode_video` takes them; each chunk is checked and dropped."""
    from modeling_hour_llava.video_loading_hour_llava import open_frame_stream

    found, largest, shape = [], 0, None
    with Window() as window:
        stream = open_frame_stream(path, size=SIZE, backend="pyav", threads=threads, chunk_frames=STREAM_CHUNK_FRAMES)
        for chunk in stream:
            found += frame_indices(chunk)
            largest, shape = max(largest, chunk.numel()), tuple(chunk.shape)
            del chunk
    return ours_result(window, found, stream.info, stream.times, (len(found), *shape[1:]), largest, period)


def ours_result(
    window: Window, found: list[int], info, times, shape: tuple, held_bytes: int, period: int | None
) -> dict:
    expected = expected_ours(info.num_frames, info.fps)
    check = index_check(found, expected % period if period else expected)
    check["max_time_error_s"] = float(abs(times - expected[: len(times)] / info.fps).max()) if len(times) else None
    return window.result(
        frames=int(shape[0]),
        frame_shape=list(shape[1:]),
        output_mib=round(held_bytes / 2**20, 1),
        video_frames=info.num_frames,
        index_check=check,
    )


def measure_lmms_eval(path: str, threads: int, period: int | None) -> dict:
    import av
    from lmms_eval.models.model_utils.load_video import read_video

    with av.open(path) as container:
        stream = container.streams.video[0]
        num_frames, rate = stream.frames, float(stream.average_rate)
    with Window() as window:
        frames = read_video(path, num_frm=10**9, fps=SAMPLE_FPS, backend="pyav")
    return window.result(
        frames=int(frames.shape[0]),
        frame_shape=list(frames.shape[1:]),
        output_mib=round(frames.nbytes / 2**20, 1),
        video_frames=num_frames,
        index_check=index_check(frame_indices(frames), expected_lmms_eval(num_frames, rate)),
    )


def measure_full_pyav(path: str, threads: int, period: int | None) -> dict:
    import av

    with Window() as window, av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        count = sum(1 for _ in container.decode(stream))
    return window.result(frames=count, video_frames=count)


CHILD_MEASURES = {
    OURS: (measure_ours, 0, {}),
    OURS_TORCHCODEC: (measure_ours, 0, {"backend": "torchcodec"}),
    OURS_STREAMED: (measure_ours_streamed, 0, {}),
    OURS_1_THREAD: (measure_ours, 1, {}),
    OURS_TWO_THREAD_RANGES: (measure_ours, 0, {"frame_threads": 2}),
    LMMS_EVAL: (measure_lmms_eval, 0, {}),
    FULL_PYAV: (measure_full_pyav, 0, {}),
}


def worker(method: str, path: str, period: int | None, connection) -> None:
    """Child process entry: one measurement; its result (or traceback) goes back through `connection`."""
    try:
        measure, threads, options = CHILD_MEASURES[method]
        result = measure(path, threads, period, **options)
        result["peak_rss_mib"] = max(result["peak_rss_mib"], peak_rss_mib())  # the check after the call included
        connection.send(("ok", result))
    except BaseException:  # report everything, MemoryError included
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------------------------
def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (None where /proc/stat is missing)."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_share(other_cpu_seconds: float, seconds: float) -> float:
    """CPU the rest of the machine used, as a share of all cores over `seconds`."""
    return round(max(0.0, other_cpu_seconds) / (seconds * available_cores()), 3) if seconds > 0 else 0.0


def available_mib() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def warm_page_cache(path: str) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


def run_ffmpeg(path: str) -> dict:
    """`ffmpeg` decoding every frame: wall time, peak RSS and CPU time of that process alone (`wait4`)."""
    command = [shutil.which("ffmpeg"), "-nostdin", "-v", "error", "-threads", "0", "-i", path, "-f", "null", "-"]
    busy = busy_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode:
        raise RuntimeError(f"ffmpeg failed ({process.returncode}): {stderr.decode(errors='replace')[-2000:]}")
    peak = usage.ru_maxrss / 2**20 if sys.platform == "darwin" else usage.ru_maxrss / 2**10
    share = None if busy is None else other_share(busy_cpu_seconds() - busy - cpu_seconds(usage), seconds)
    return dict(
        seconds=seconds,
        cpu_seconds=cpu_seconds(usage),
        frames=None,
        peak_rss_mib=peak,
        baseline_rss_mib=None,
        other_processes_cpu_share=share,
    )


def noop() -> None:
    pass


def run_in_child(context, method: str, path: str, period: int | None = None) -> dict:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=worker, args=(method, path, period, sender))
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the child died with exit code {process.exitcode} (killed for memory?)") from None
    process.join()
    if status != "ok":
        raise RuntimeError(f"failed in the child:\n{payload}")
    return payload


def lmms_eval_projected_mib(video: Video) -> float:
    """lmms-eval keeps every sampled frame as a decoded yuv420p frame, then copies all of them to RGB at full size."""
    sampled = min(video.frames, int(video.seconds * SAMPLE_FPS))
    return sampled * video.width * video.height * (1.5 + 3) / 2**20 + 300


def measure(context, method: str, video: Video, args) -> dict:
    row = dict(video=video.label, method=method, video_frames=video.frames, minutes=video.minutes, gop=video.gop)
    if method == LMMS_EVAL:
        projected = lmms_eval_projected_mib(video)
        row["projected_peak_rss_mib"] = round(projected)
        limit = min(args.max_rss_gb * 1024, 0.85 * available_mib())
        if projected > limit:
            row["skipped"] = f"projected peak RSS {projected / 1024:.1f} GiB > {limit / 1024:.1f} GiB"
            print(f"  {method:<22} skipped: {row['skipped']}", file=sys.stderr, flush=True)
            return row
    runs = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        try:
            if method == FULL_FFMPEG:
                result = run_ffmpeg(video.path)
            else:
                result = run_in_child(context, method, video.path, video.period)
        except RuntimeError as error:
            row["error"] = str(error)
            print(f"  {method:<22} FAILED: {error}", file=sys.stderr, flush=True)
            return row
        result["process_seconds"] = round(time.perf_counter() - started, 2)  # with the child's start and imports
        runs.append(result)
    row.update(min(runs, key=lambda run: run["seconds"]))  # the least disturbed run
    if args.repeats > 1:
        row["all_seconds"] = [round(run["seconds"], 3) for run in runs]
    if row.get("frames") is None:
        row["frames"] = video.frames
    row["seconds"] = round(row["seconds"], 3)
    row["cpu_seconds"] = round(row["cpu_seconds"], 2)
    row["decoded_fps"] = round(video.frames / row["seconds"], 1)
    for key in ("peak_rss_mib", "baseline_rss_mib"):
        if row.get(key) is not None:
            row[key] = round(row[key], 1)
    if row.get("baseline_rss_mib") is not None:
        row["rss_above_baseline_mib"] = round(row["peak_rss_mib"] - row["baseline_rss_mib"], 1)
    check = row.get("index_check")
    verdict = (
        "" if not check else f", frames {'ok' if check['ok'] else 'WRONG'} ({check['matching']}/{check['expected']})"
    )
    print(
        f"  {method:<22} {row['seconds']:8.2f} s (CPU {row['cpu_seconds']:.1f} s), {row['frames']:>7,} frames, "
        f"peak RSS {row['peak_rss_mib']:8.1f} MiB{verdict}, other processes {_share(row)}",
        file=sys.stderr,
        flush=True,
    )
    return row


def add_speedups(rows: list[dict], full_method: str) -> None:
    by_video: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_video.setdefault(row["video"], {})[row["method"]] = row
    for methods in by_video.values():
        lmms = methods.get(LMMS_EVAL, {}).get("seconds")
        full = methods.get(full_method, {}).get("seconds")
        for row in methods.values():
            seconds = row.get("seconds")
            row["speedup_vs_lmms_eval"] = round(lmms / seconds, 2) if lmms and seconds else None
            row["speedup_vs_full_decode"] = round(full / seconds, 2) if full and seconds else None


def check_goals(rows: list[dict], videos: list[Video], full_method: str) -> list[dict]:
    """Per video of the matrix: ours >= 1.5x faster than lmms-eval, ours within 1.1x the full decode's time, ours'
    frames the 1 fps samples; for the hour of 720p: the streamed path's peak RSS under 2 GiB, frames checked too."""
    goals = []

    def row_of(video: Video, method: str) -> dict | None:
        return next((r for r in rows if r["video"] == video.label and r["method"] == method and r.get("seconds")), None)

    for video in videos:
        streamed = row_of(video, OURS_STREAMED)
        if video.memory_only:
            peak = streamed and streamed.get("peak_rss_mib")
            goals.append(
                dict(
                    video=video.label,
                    goal=f"peak RSS < {RSS_GOAL_MIB} MiB ({OURS_STREAMED})",
                    value=peak,
                    met=None if peak is None else peak < RSS_GOAL_MIB,
                )
            )
            goals.append(
                dict(
                    video=video.label,
                    goal=f"frames are the 1 fps samples ({OURS_STREAMED})",
                    value=None,
                    met=None if streamed is None else streamed["index_check"]["ok"],
                )
            )
            continue
        ours = row_of(video, OURS)
        if not ours:
            continue
        speedup = ours.get("speedup_vs_lmms_eval")
        goals.append(
            dict(
                video=video.label,
                goal=f">= {SPEEDUP_GOAL}x faster than lmms-eval",
                value=speedup,
                met=None if speedup is None else speedup >= SPEEDUP_GOAL,
            )
        )
        versus_full = ours.get("speedup_vs_full_decode")
        ratio = None if not versus_full else round(1 / versus_full, 2)
        goals.append(
            dict(
                video=video.label,
                goal=f"time <= {FULL_DECODE_GOAL}x {full_method}'s",
                value=ratio,
                met=None if ratio is None else ratio <= FULL_DECODE_GOAL,
            )
        )
        goals.append(
            dict(video=video.label, goal="frames are the 1 fps samples", value=None, met=ours["index_check"]["ok"])
        )
    return goals


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _share(row: dict) -> str:
    share = row.get("other_processes_cpu_share")
    return "-" if share is None else f"{share:.0%}"


def format_table(rows: list[dict]) -> str:
    lines = [
        "| video | method | wall s | CPU s | frames | decoded fps | peak RSS MiB | vs lmms-eval | vs full decode "
        "| check | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        if row.get("skipped") or row.get("error"):
            why = row.get("skipped") or "failed: " + row["error"].strip().splitlines()[-1][:120]
            lines.append(f"| {row['video']} | {row['method']} | - | - | - | - | - | - | - | {why} | - |")
            continue
        check = row.get("index_check")
        verdict = "-" if not check else ("ok" if check["ok"] else "WRONG") + f" {check['matching']}/{check['expected']}"
        lines.append(
            f"| {row['video']} | {row['method']} | {row['seconds']:.2f} | {row['cpu_seconds']:.1f} | {row['frames']:,} "
            f"| {row['decoded_fps']:,.0f} | {row['peak_rss_mib']:,.0f} | {_ratio(row['speedup_vs_lmms_eval'])} "
            f"| {_ratio(row['speedup_vs_full_decode'])} | {verdict} | {_share(row)} |"
        )
    return "\n".join(lines)


def format_goals(goals: list[dict]) -> str:
    lines = []
    for goal in goals:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        value = "" if goal["value"] is None else f" ({goal['value']})"
        lines.append(f"- {goal['video']}: {goal['goal']}: {verdict}{value}")
    return "\n".join(lines)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict:
    import av
    import numpy

    info = dict(
        platform=platform.platform(),
        machine=platform.machine(),
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        cores_available=available_cores(),
        ram_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        av=av.__version__,
        pyav_ffmpeg={name: ".".join(map(str, version)) for name, version in av.library_versions.items()},
        numpy=numpy.__version__,
        ffmpeg=None,
    )
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if shutil.which("ffmpeg"):
        version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout
        info["ffmpeg"] = version.splitlines()[0] if version else "?"
    for name in ("torch", "lmms_eval"):
        try:
            from importlib.metadata import version as package_version

            info[name] = package_version(name.replace("_", "-"))
        except Exception:
            info[name] = None
    return info


def install_ffmpeg() -> None:
    """Debian's `ffmpeg` for the full-decode floor, where it is missing and we may install it (root, apt-get)."""
    if shutil.which("ffmpeg") or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    print("Installing Debian's ffmpeg (the full-decode floor)", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "ffmpeg"], check=False, stdout=subprocess.DEVNULL)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where encoded videos are cached")
    parser.add_argument(
        "--durations",
        type=float,
        nargs="+",
        default=None,
        help="length of every file of the matrix in minutes (default 30; 1 with --quick); 1080p is capped at 5",
    )
    parser.add_argument(
        "--files",
        nargs="+",
        choices=[kind.key for kind in MATRIX],
        default=[kind.key for kind in MATRIX],
        help="which kinds of file (default: all)",
    )
    parser.add_argument(
        "--rss-minutes",
        type=float,
        default=None,
        help=f"length of the 720p x264 file measured for the memory goal (default {DEFAULT_RSS_MINUTES:g}; 0: none, "
        "the default with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="1-minute videos at half size and 3 methods: a smoke test")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument(
        "--height", type=int, default=None, help="height of the 720p files (default 720; 360 with --quick)"
    )
    parser.add_argument("--prepare-only", action="store_true", help="encode the videos, measure nothing")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: all (3 with --quick)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="measure each row this many times and keep the fastest (default 1)"
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=round(0.85 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        help="skip lmms-eval where its projected peak RSS is larger (default 85%% of RAM; also 85%% of what is free)",
    )
    parser.add_argument(
        "--start-method",
        choices=("spawn", "forkserver"),
        default=None,
        help="how each measurement's process starts (default spawn; forkserver with --quick, which imports once)",
    )
    args = parser.parse_args(argv)
    args.durations = args.durations or list(QUICK_DURATIONS_MIN if args.quick else DEFAULT_DURATIONS_MIN)
    args.height = args.height or (QUICK_HEIGHT if args.quick else DEFAULT_HEIGHT)
    if args.rss_minutes is None:
        args.rss_minutes = 0.0 if args.quick else DEFAULT_RSS_MINUTES
    args.start_method = args.start_method or ("forkserver" if args.quick else "spawn")
    if args.methods is None:
        args.methods = list(QUICK_METHODS if args.quick else METHODS)
    if FULL_FFMPEG in args.methods and not args.quick and not args.prepare_only:
        install_ffmpeg()
    if OURS_TORCHCODEC in args.methods:
        # Asked in a child: importing torch here would count in the ffmpeg child's peak RSS (it forks from us).
        probe = "from modeling_hour_llava.video_loading_hour_llava import torchcodec_available as a; exit(not a())"
        if subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, check=False).returncode:
            print("torchcodec is not usable here: no torchcodec rows", file=sys.stderr)
            args.methods.remove(OURS_TORCHCODEC)
    if FULL_FFMPEG in args.methods and not shutil.which("ffmpeg"):  # PyAV's full decode stands in
        args.methods = list(dict.fromkeys(FULL_PYAV if method == FULL_FFMPEG else method for method in args.methods))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    context = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":
        # Import in the server while the videos are encoded; every measurement is then a fork of it.
        context.set_forkserver_preload(
            ["numpy", "av", "modeling_hour_llava.video_loading_hour_llava", "lmms_eval.models.model_utils.load_video"]
        )
        from multiprocessing import forkserver

        forkserver.ensure_running()
    print(f"Videos in {args.workdir}", file=sys.stderr, flush=True)
    videos = prepare_videos(args)
    if args.prepare_only:
        return 0
    if args.start_method == "forkserver":  # wait for the server's imports, which would slow the first rows down
        process = context.Process(target=noop)
        process.start()
        process.join()
    full_method = FULL_FFMPEG if FULL_FFMPEG in args.methods else FULL_PYAV
    methods = [m for m in METHODS if m in args.methods]  # full decodes first
    rows = []
    for video in videos:
        print(f"{video.label}: {video.path} ({video.size_mb} MB, {video.frames:,} frames)", file=sys.stderr, flush=True)
        warm_page_cache(video.path)
        for method in methods:
            if not video.memory_only or method == OURS_STREAMED:
                rows.append(measure(context, method, video, args))
    add_speedups(rows, full_method)
    goals = check_goals(rows, videos, full_method)
    table, goal_text = format_table(rows), format_goals(goals)
    print(table)
    print()
    print(f"Goals (ours, vs {full_method}):")
    print(goal_text)
    result = dict(
        benchmark="video_decoding",
        settings=dict(
            quick=args.quick,
            durations_min=args.durations,
            height=args.height,
            files=args.files,
            rss_minutes=args.rss_minutes,
            matrix={kind.key: asdict(kind) for kind in MATRIX if kind.key in args.files},
            methods=methods,
            full_decode_reference=full_method,
            start_method=args.start_method,
            repeats=args.repeats,
            size=SIZE,
            sample_fps=SAMPLE_FPS,
            min_frames=MIN_FRAMES,
        ),
        machine=machine_info(),
        videos=[dict(asdict(video), stream=stream_summary(video.path)) for video in videos],
        rows=rows,
        goals=goals,
        table=table,
        seconds=round(time.perf_counter() - started, 1),
    )
    from dataset_builder.media import write_json_atomically

    write_json_atomically(args.output, result)
    print(f"\nWrote {args.output} ({result['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
