"""Decoding real files encoded here: codecs, containers, frame rates, rotation, sizes, lengths, and broken files.

Every frame of a test video shows its own index (dataset_builder.synthetic_video), so the tests read back exactly
which frames the loader returned.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from dataset_builder.synthetic_video import read_frame_index, write_video
from modeling_hour_llava.video_loading_hour_llava import (
    VideoDecodeError,
    VideoLimits,
    decode_frames,
    open_frame_stream,
    probe_video,
    sample_frame_indices,
)


def indices_of(frames: torch.Tensor) -> list[int]:
    return [read_frame_index(frame.numpy()) for frame in frames]


def test_sampling_rule_is_the_references():
    # 1 fps: every round(fps)-th frame, no upper bound.
    assert sample_frame_indices(30 * 600, 30.0).tolist() == list(range(0, 18000, 30))
    assert len(sample_frame_indices(30 * 3600, 29.97)) == 3600
    # Fewer than 128 one-per-second frames: min(total, 128) frames spread evenly.
    assert sample_frame_indices(300, 30.0).tolist() == np.linspace(0, 299, 128, dtype=int).tolist()
    assert sample_frame_indices(75, 25.0).tolist() == list(range(75))
    assert len(sample_frame_indices(30 * 600, 30.0, max_frames=100)) == 100


@pytest.mark.parametrize(
    "extension, codec",
    [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9"), ("mkv", "libsvtav1"), ("avi", "mpeg4")],
)
def test_codecs_and_containers_give_the_sampled_frames(tmp_path, extension, codec):
    path = write_video(tmp_path / f"clip.{extension}", num_frames=10 * 30, fps=10, codec=codec)
    info = probe_video(path)
    assert (info.fps, info.num_frames) == (10.0, 300)
    assert info.duration == pytest.approx(30.0, abs=0.15)
    frames, _, times = decode_frames(path, size=64, min_frames=16)
    assert frames.shape == (30, 3, 64, 64) and frames.dtype == torch.uint8
    assert indices_of(frames) == list(range(0, 300, 10))  # one frame per second
    np.testing.assert_allclose(times, np.arange(30), atol=1e-6)


def test_short_video_gives_128_evenly_spread_frames(tmp_path):
    path = write_video(tmp_path / "short.mp4", num_frames=200, fps=20)  # 10 s: 10 one-per-second frames < 128
    frames, info, _ = decode_frames(path, size=64)
    assert indices_of(frames) == np.linspace(0, 199, 128, dtype=int).tolist()


def test_three_second_clip_gives_all_its_frames(tmp_path):
    path = write_video(tmp_path / "three.mp4", num_frames=75, fps=25)
    frames, _, _ = decode_frames(path, size=64)
    assert indices_of(frames) == list(range(75))


def test_ten_minute_video_long_gop_with_b_frames(tmp_path):
    path = write_video(tmp_path / "ten.mp4", num_frames=600 * 4, fps=4, gop=600, bframes=3)
    frames, info, times = decode_frames(path, size=32)
    assert info.duration == pytest.approx(600.0)
    assert indices_of(frames) == list(range(0, 2400, 4))
    np.testing.assert_allclose(times, np.arange(600), atol=1e-6)


@pytest.mark.parametrize(
    "extension, codec",
    [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4")],
)
def test_parallel_ranges_and_streamed_chunks_give_the_sequential_frames(tmp_path, extension, codec):
    # 2 minutes at 10 fps, a keyframe every 5 s and B-frames where the codec has them: ranges decoded by several
    # workers (each seeking to the keyframe before its range) and chunks streamed one after another must give the
    # bytes of one sequential decode.
    bframes = 2 if codec == "libx264" else 0
    path = write_video(tmp_path / f"clip.{extension}", num_frames=1200, fps=10, codec=codec, gop=50, bframes=bframes)
    sequential, _, times = decode_frames(path, size=32, min_frames=1, threads=1)
    assert indices_of(sequential) == list(range(0, 1200, 10))
    with torch.inference_mode():  # thread-local: the workers must write into an inference tensor too
        parallel, _, parallel_times = decode_frames(path, size=32, min_frames=1, threads=3)
    assert torch.equal(parallel, sequential)
    np.testing.assert_array_equal(parallel_times, times)
    for chunk_frames in (7, 50):
        stream = open_frame_stream(path, size=32, min_frames=1, threads=2, chunk_frames=chunk_frames)
        chunks = list(stream)
        assert max(chunk.shape[0] for chunk in chunks) == chunk_frames
        assert torch.equal(torch.cat(chunks), sequential)
        np.testing.assert_array_equal(stream.times, times)


def test_variable_frame_rate_samples_by_time(tmp_path):
    # 40 frames with irregular gaps over ~20 s.
    rng = np.random.default_rng(0)
    stamps = np.cumsum(np.concatenate([[0.0], rng.uniform(0.2, 0.8, 39)]))
    path = write_video(tmp_path / "vfr.mkv", num_frames=40, timestamps=stamps.tolist())
    frames, info, times = decode_frames(path, size=64, min_frames=1)
    targets = sample_frame_indices(info.num_frames, info.fps, min_frames=1) / info.fps
    expected = [int(np.argmax(stamps >= t - 0.5 / info.fps)) for t in targets]
    assert indices_of(frames) == expected
    np.testing.assert_allclose(times, stamps[expected], atol=2e-3)


def test_display_rotation_is_applied(tmp_path):
    def corner(index: int, width: int, height: int) -> np.ndarray:
        frame = np.zeros((height, width, 3), np.uint8)
        frame[: height // 2, : width // 2] = 255  # the stored top-left quadrant is white
        return frame

    def white_quadrant(path) -> tuple[int, int]:
        frames, _, _ = decode_frames(path, size=64, min_frames=1)
        quadrants = frames[0, 0].float().unfold(0, 32, 32).unfold(1, 32, 32).mean(dim=(-1, -2))
        assert int((quadrants > 200).sum()) == 1 and int((quadrants < 50).sum()) == 3
        return tuple(int(i) for i in (quadrants > 200).nonzero()[0])

    # A phone's "rotate=90": shown turned 90 degrees clockwise, the stored top-left corner lands top-right.
    turns = {degrees: (0, 1) if degrees == 90 else (1, 1) if degrees == 180 else (1, 0) for degrees in (90, 180, 270)}
    for degrees, expected in turns.items():
        path = write_video(
            tmp_path / f"phone{degrees}.mp4", 8, fps=4, width=64, height=64, rotation=degrees, frame_fn=corner
        )
        assert white_quadrant(path) == expected, degrees
    assert white_quadrant(write_video(tmp_path / "plain.mp4", 8, fps=4, width=64, height=64, frame_fn=corner)) == (0, 0)


def test_odd_frame_sizes(tmp_path):
    path = write_video(tmp_path / "odd.mkv", num_frames=20, fps=10, width=161, height=97)
    info = probe_video(path)
    frames, _, _ = decode_frames(path, size=(48, 80), min_frames=1)
    assert (info.width, info.height) == (161, 97)
    assert frames.shape == (2, 3, 48, 80) and indices_of(frames) == [0, 10]


def test_missing_stream_durations_are_recovered(tmp_path):
    path = write_video(tmp_path / "clip.webm", num_frames=50, fps=10, codec="libvpx-vp9")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert not stream.frames and not stream.duration  # WebM stores neither
    info = probe_video(path)
    assert info.num_frames == 50 and info.duration == pytest.approx(5.0, abs=0.01)


# ---------------------------------------------------------------------------------------------------------------
# Broken input: one exception type, the file and the reason in the message
# ---------------------------------------------------------------------------------------------------------------
def audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def zero_frames(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 32
        container.start_encoding()  # header and index, but not a single frame
    return path


def truncated(path):
    full = write_video(path.with_suffix(".full.mkv"), num_frames=400, fps=10)
    data = open(full, "rb").read()
    path.write_bytes(data[: len(data) // 3])
    return path


def absurd_duration(path):
    # Two frames, the second one 100 hours in.
    write_video(path, num_frames=2, timestamps=[0.0, 100 * 3600.0], codec="mpeg4")
    return path


@pytest.mark.parametrize(
    "make, name, reason",
    [
        (lambda p: p, "missing.mp4", "file not found"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty.mp4", r"empty file \(0 bytes\)"),
        (lambda p: (p.write_text("not a video at all\n" * 50), p)[1], "notes.mp4", "not a readable video container"),
        (lambda p: (p.mkdir(), p)[1], "folder.mp4", "is a directory"),
        (audio_only, "sound.wav", "no video stream"),
        (zero_frames, "nothing.avi", "zero frames"),
        (truncated, "cut.mkv", "truncated"),
        (absurd_duration, "forever.mkv", "absurd duration"),
    ],
)
def test_bad_files_raise_one_error_type_naming_file_and_reason(tmp_path, make, name, reason):
    path = make(tmp_path / name)
    with pytest.raises(VideoDecodeError, match=reason) as caught:
        decode_frames(path, size=32)
    assert caught.value.path == str(tmp_path / name)
    assert str(tmp_path / name) in str(caught.value)


def test_truncation_is_caught_while_streaming(tmp_path):
    stream = open_frame_stream(truncated(tmp_path / "cut.mkv"), size=32, min_frames=1, chunk_frames=8)
    assert stream.num_frames == 40  # planned from the container's claim, before decoding
    with pytest.raises(VideoDecodeError, match="truncated"):
        for _ in stream:
            pass


def test_absurd_frame_counts_are_refused_before_decoding(tmp_path):
    path = write_video(tmp_path / "clip.mp4", num_frames=30, fps=10)
    with pytest.raises(VideoDecodeError, match="absurd frame count 30"):
        probe_video(path, VideoLimits(max_frames=20))
    with pytest.raises(VideoDecodeError, match="absurd frame rate 10.0"):
        probe_video(path, VideoLimits(max_fps=5))
