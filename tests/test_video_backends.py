"""torchcodec and PyAV give the same video: the same sampled frames (read back from the index each frame shows),
the same timestamps, pixels equal within a small tolerance (torchcodec resizes bilinearly, PyAV bicubically), and
the same `VideoDecodeError` for every broken file.

Runs where torchcodec imports and finds FFmpeg's shared libraries (`pip install .[torchcodec]` and Debian's
`ffmpeg`, which `.ci/run` installs); skipped with the reason otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_video_loading import absurd_duration, audio_only, truncated, zero_frames

from dataset_builder.synthetic_video import read_frame_index, write_video
from modeling_hour_llava.video_loading_hour_llava import (
    VideoDecodeError,
    decode_frames,
    open_frame_stream,
    torchcodec_available,
)

pytestmark = pytest.mark.skipif(
    not torchcodec_available(),
    reason="torchcodec is not installed or FFmpeg's shared libraries are missing "
    "(pip install .[torchcodec]; apt-get install -y ffmpeg): the torchcodec backend is not tested",
)

# Mean absolute difference per pixel (0-255) between the backends' frames: bilinear against bicubic resizing.
MEAN_TOLERANCE = 4.0


def indices_of(frames: torch.Tensor) -> list[int]:
    return [read_frame_index(frame.numpy()) for frame in frames]


def assert_same_video(path, size=64, **options):
    pyav, info, pyav_times = decode_frames(path, size=size, backend="pyav", **options)
    codec, codec_info, codec_times = decode_frames(path, size=size, backend="torchcodec", **options)
    assert codec_info == info and codec.shape == pyav.shape and codec.dtype == torch.uint8
    assert indices_of(codec) == indices_of(pyav)
    np.testing.assert_allclose(codec_times, pyav_times, atol=1e-6)
    assert (codec.float() - pyav.float()).abs().mean() < MEAN_TOLERANCE
    return pyav, pyav_times


@pytest.mark.parametrize(
    "extension, codec, bframes",
    [
        ("mp4", "libx264", 2),
        ("mkv", "libx264", 0),
        ("webm", "libvpx-vp9", None),
        ("avi", "mpeg4", None),
        ("ts", "libx264", 2),
    ],
)
def test_same_frames_and_times_in_every_container(tmp_path, extension, codec, bframes):
    path = write_video(tmp_path / f"clip.{extension}", num_frames=300, fps=10, codec=codec, gop=50, bframes=bframes)
    frames, times = assert_same_video(path, min_frames=16)
    assert indices_of(frames) == list(range(0, 300, 10))
    np.testing.assert_allclose(times, np.arange(30), atol=1e-3)


def test_same_frames_for_short_clips_rotation_and_odd_sizes(tmp_path):
    assert_same_video(write_video(tmp_path / "short.mp4", num_frames=200, fps=20))  # 128 frames spread evenly
    assert_same_video(write_video(tmp_path / "three.mp4", num_frames=75, fps=25))  # every frame
    for rotation in (90, 270):  # turned by their display matrix (indices cannot be read on turned frames)
        phone = write_video(tmp_path / f"phone{rotation}.mp4", num_frames=40, fps=10, rotation=rotation)
        for size in (64, (48, 80)):
            pyav, _, _ = decode_frames(phone, size=size, backend="pyav", min_frames=1)
            codec, _, _ = decode_frames(phone, size=size, backend="torchcodec", min_frames=1)
            assert codec.shape == pyav.shape and (codec.float() - pyav.float()).abs().mean() < MEAN_TOLERANCE
    assert_same_video(write_video(tmp_path / "odd.mkv", num_frames=20, fps=10, width=161, height=97), size=(48, 80))


def test_streamed_torchcodec_equals_one_call(tmp_path):
    path = write_video(tmp_path / "clip.mp4", num_frames=600, fps=10, gop=50, bframes=2)
    frames, _, times = decode_frames(path, size=32, min_frames=1, backend="torchcodec")
    stream = open_frame_stream(path, size=32, min_frames=1, backend="torchcodec", chunk_frames=7, threads=2)
    assert torch.equal(torch.cat(list(stream)), frames)
    np.testing.assert_array_equal(stream.times, times)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda p: p, "missing.mp4"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty.mp4"),
        (lambda p: (p.write_text("not a video at all\n" * 50), p)[1], "notes.mp4"),
        (lambda p: (p.mkdir(), p)[1], "folder.mp4"),
        (audio_only, "sound.wav"),
        (zero_frames, "nothing.avi"),
        (truncated, "cut.mkv"),
        (absurd_duration, "forever.mkv"),
    ],
)
def test_bad_files_raise_the_same_error(tmp_path, make, name):
    path = make(tmp_path / name)
    reasons = []
    for backend in ("pyav", "torchcodec"):
        with pytest.raises(VideoDecodeError) as caught:
            decode_frames(path, size=32, backend=backend)
        assert caught.value.path == str(path)
        reasons.append(caught.value.reason)
    assert reasons[0] == reasons[1]
