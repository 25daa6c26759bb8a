"""Encode test videos with known content: every frame carries its own index as a row of black/white blocks.

`read_frame_index` recovers the index from a decoded (even resized and compressed) frame, so tests can check
which frames a loader sampled, for any codec, container, frame rate, rotation or size.
"""

from __future__ import annotations

import fractions
import os
from collections.abc import Callable, Sequence

import av
import numpy as np

INDEX_BITS = 16
CODEC_OPTIONS = {"libx264": {"preset": "ultrafast"}, "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}}


def indexed_frame(index: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: a colour that drifts with the index, and the index in binary across the middle band."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[...] = ((index * 7) % 200 + 30, (index * 13) % 200 + 30, (index * 29) % 200 + 30)
    band = slice(height // 3, 2 * height // 3)
    edges = np.linspace(0, width, INDEX_BITS + 1).astype(int)
    for bit in range(INDEX_BITS):
        frame[band, edges[bit] : edges[bit + 1]] = 255 if (index >> bit) & 1 else 0
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """Inverse of `indexed_frame` on a decoded frame, (H, W, 3) or (3, H, W) uint8, any size."""
    if frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = frame.transpose(1, 2, 0)
    height, width = frame.shape[:2]
    row = frame[height // 2].astype(np.float32).mean(axis=-1)
    edges = np.linspace(0, width, INDEX_BITS + 1)
    centers = ((edges[:-1] + edges[1:]) / 2).astype(int)
    return sum(1 << bit for bit, x in enumerate(centers) if row[x] > 127)


def write_video(
    path: str | os.PathLike,
    num_frames: int,
    fps: float = 30.0,
    width: int = 160,
    height: int = 96,
    codec: str = "libx264",
    timestamps: Sequence[float] | None = None,
    rotation: int = 0,
    gop: int | None = None,
    bframes: int | None = None,
    frame_fn: Callable[[int, int, int], np.ndarray] = indexed_frame,
    options: dict[str, str] | None = None,
    frame_format: str = "rgb24",
) -> str:
    """Encode `num_frames` frames to `path` (container from the extension) and return the path.

    timestamps: presentation times in seconds (variable frame rate); default i / fps.
    rotation: clockwise display rotation in degrees, written into the mp4/mov track matrix as phones do (the pixels
        are stored unrotated; a player turns them).
    gop, bframes: encoder GOP length and B-frames (x264 defaults when None).
    options: encoder options (FFmpeg's `-preset`, `-x264-params`, ...); default `CODEC_OPTIONS[codec]`, which for
        x264 is preset ultrafast, that is no B-frames unless `bframes` asks for them.
    frame_format: pixel format of the arrays `frame_fn` returns (`av.VideoFrame.from_ndarray`'s `format`); "yuv420p"
        (an (H * 3 / 2, W) array of the three planes) skips the RGB to YUV conversion, for long videos.
    """
    path = os.fspath(path)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner otherwise
    rate = fractions.Fraction(fps).limit_denominator(1001)
    with av.open(path, "w") as container:
        options = dict(CODEC_OPTIONS.get(codec, {}) if options is None else options)
        stream = container.add_stream(codec, rate=rate, options=options)
        # 4:2:0 needs even sizes in H.264; odd sizes (a case loaders must handle) are written 4:4:4.
        odd = width % 2 or height % 2
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        time_base = fractions.Fraction(1, 1000) if timestamps is not None else 1 / rate
        stream.codec_context.time_base = time_base
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_fn(index, width, height), format=frame_format)
            seconds = timestamps[index] if timestamps is not None else index / rate
            frame.pts = round(seconds / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if rotation:
        set_mp4_rotation(path, rotation)
    return path


def set_mp4_rotation(path: str, degrees_clockwise: int) -> None:
    """Write a rotation into the display matrix of an mp4/mov file's track header (`tkhd`), in place."""
    if not path.lower().endswith((".mp4", ".mov")):
        raise ValueError(f"{path}: rotation metadata is written for mp4/mov only")
    one, w = 1 << 16, 1 << 30  # 16.16 and 2.30 fixed point
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees_clockwise % 360]
    matrix = [cos * one, sin * one, 0, -sin * one, cos * one, 0, 0, 0, w]
    data = bytearray(open(path, "rb").read())
    box = data.find(b"tkhd") - 4
    if box < 0:
        raise ValueError(f"{path}: no track header")
    version = data[box + 8]
    offset = box + (60 if version == 1 else 48)
    data[offset : offset + 36] = b"".join(value.to_bytes(4, "big", signed=True) for value in matrix)
    with open(path, "wb") as handle:
        handle.write(data)
