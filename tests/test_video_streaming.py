"""The streamed path (`open_frame_stream`, chunk by chunk) decodes every container the one-call path decodes, to
the same frames and times: mp4, mkv, webm, avi, MPEG-TS (where seeking is by byte position and imprecise), and a
stream whose resolution changes midway. The files are small and short; PyAV writes them."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
import torch

from dataset_builder.synthetic_video import indexed_frame, read_frame_index, write_video
from modeling_hour_llava.video_loading_hour_llava import decode_frames, open_frame_stream


def indices_of(frames: torch.Tensor) -> list[int]:
    return [read_frame_index(frame.numpy()) for frame in frames]


def resolution_change(path, fps: int = 5, frames_per_part: int = 100, sizes=((96, 64), (128, 80))) -> str:
    """An MPEG-TS H.264 stream whose frame size changes at frame `frames_per_part` (a new keyframe and SPS), as
    when a recording's camera switches: two encoders, one stream."""
    rate = fractions.Fraction(fps)
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        stream.width, stream.height = sizes[0]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 25
        encoders = [stream.codec_context]
        second = av.CodecContext.create("libx264", "w")
        second.width, second.height = sizes[1]
        second.pix_fmt, second.time_base, second.framerate, second.gop_size = "yuv420p", 1 / rate, rate, 25
        second.options = {"preset": "ultrafast"}
        encoders.append(second)
        for part, (encoder, (width, height)) in enumerate(zip(encoders, sizes, strict=True)):
            for offset in range(frames_per_part):
                index = part * frames_per_part + offset
                frame = av.VideoFrame.from_ndarray(indexed_frame(index, width, height), format="rgb24")
                frame.pts, frame.time_base = index, 1 / rate
                for packet in encoder.encode(frame.reformat(format="yuv420p")):
                    packet.stream = stream
                    container.mux(packet)
            for packet in encoder.encode(None):
                packet.stream = stream
                container.mux(packet)
    return str(path)


def assert_streamed_equals_one_call(path, threads: int, chunk_frames: int, min_frames: int = 1):
    frames, info, times = decode_frames(path, size=48, min_frames=min_frames, threads=threads)
    stream = open_frame_stream(path, size=48, min_frames=min_frames, threads=threads, chunk_frames=chunk_frames)
    chunks = list(stream)
    assert all(chunk.shape[0] <= chunk_frames for chunk in chunks)
    assert torch.equal(torch.cat(chunks), frames)
    np.testing.assert_array_equal(stream.times, times)
    return frames, info, times


@pytest.mark.parametrize(
    "extension, codec",
    [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9"), ("avi", "mpeg4"), ("ts", "libx264")],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_equals_one_call_in_every_container(tmp_path, extension, codec, threads):
    # 60 s at 5 fps, a keyframe every 10 s: chunks of 7 one-per-second frames start after the last keyframe.
    bframes = 2 if codec == "libx264" else 0
    path = write_video(
        tmp_path / f"clip.{extension}", num_frames=300, fps=5, width=64, height=48, codec=codec, gop=50, bframes=bframes
    )
    frames, _, times = assert_streamed_equals_one_call(path, threads, chunk_frames=7)
    assert indices_of(frames) == list(range(0, 300, 5))
    np.testing.assert_allclose(times, np.arange(60), atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2])
def test_mpeg_ts_chunk_after_the_last_keyframe(tmp_path, threads):
    # The reported file (515 s, 25 fps, a keyframe every 10 s) at 5 fps and 64 x 48: the last chunk starts at 512 s,
    # after the last keyframe (510 s); the seek there leaves nothing to decode, and the stream must start over
    # rather than call the file truncated (it did: "frames end at 511.00 s").
    path = write_video(tmp_path / "clip.ts", num_frames=515 * 5, fps=5, width=64, height=48, gop=50)
    frames, _, _ = assert_streamed_equals_one_call(path, threads=threads, chunk_frames=64)
    assert indices_of(frames) == list(range(0, 515 * 5, 5))


def test_resolution_change_midway(tmp_path):
    path = resolution_change(tmp_path / "switch.ts")
    for threads, chunk_frames in ((1, 7), (2, 7), (2, 50)):
        frames, info, _ = assert_streamed_equals_one_call(path, threads, chunk_frames)
        assert (info.width, info.height) == (96, 64)  # the first part's size; every frame is resized anyway
        assert indices_of(frames) == list(range(0, 200, 5))
