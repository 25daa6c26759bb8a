"""Smoke test of benchmarks/video_decoding.py: `--quick` runs, its JSON has the expected shape, and the frames our
loader returns are exactly the ones the 1 fps rule asks for (read back from the index each frame carries).

No timing is asserted. The synthetic scene's index bands are checked on their own for indices above 16 bits,
which the 1-minute videos of `--quick` never reach.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from modeling_hour_llava.video_loading_hour_llava import sample_frame_indices

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "video_decoding.py"


def load_benchmark_module():
    spec = importlib.util.spec_from_file_location("video_decoding", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("video_decoding", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_benchmark_module()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    folder = tmp_path_factory.mktemp("decode_bench")
    output = folder / "result.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--files",  # the two x264 files with B-frames; `test_matrix_files_are_what_they_claim` checks the rest
            "x264",
            "long-gop",
            "--workdir",
            str(folder / "videos"),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(output.read_text()), completed.stdout


@pytest.mark.parametrize("index", [0, 1, 2, 29, 1799, 65535, 65536, 107999, 131071])
def test_scene_frames_carry_their_index(bench, index):
    scene = bench.Scene(640, 360)
    yuv = scene(index, 640, 360)
    assert yuv.shape == (540, 640) and yuv.dtype == np.uint8
    rgb = av.VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="rgb24")
    assert bench.frame_index(rgb) == index
    assert bench.frame_index(np.ascontiguousarray(rgb.transpose(2, 0, 1))) == index  # (3, H, W) as ours returns
    resized = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(width=384, height=384).to_ndarray()
    assert bench.frame_index(resized) == index


def test_scene_offset_continues_the_count(bench):
    assert np.array_equal(bench.Scene(320, 180, offset=100)(5, 320, 180), bench.Scene(320, 180)(105, 320, 180))


@pytest.mark.parametrize("num_frames, fps", [(1800, 30.0), (54000, 30.0), (108000, 30.0), (3000, 25.0), (90, 30.0)])
def test_expected_indices_are_the_loaders_rule(bench, num_frames, fps):
    assert np.array_equal(bench.expected_ours(num_frames, fps), sample_frame_indices(num_frames, fps, 1.0, 128))


def test_matrix_files_are_what_they_claim(bench, tmp_path):
    # Each kind of file, encoded for 3 seconds at a small size: the codec, the B-frames (present or absent), the
    # keyframe interval and the size the matrix promises.
    args = bench.parse_args(["--quick", "--workdir", str(tmp_path), "--durations", "0.05"])
    assert args.durations == [0.05] and args.rss_minutes == 0
    args.height = 72
    videos = {video.kind: video for video in bench.prepare_videos(args)}
    assert list(videos) == [kind.key for kind in bench.MATRIX]
    for key, video in videos.items():
        kind = bench.MATRIX_BY_KEY[key]
        assert video.frames == 90 and video.height == round(72 * kind.scale / 2) * 2 and video.path.endswith(".mp4")
        summary = bench.stream_summary(video.path)
        assert summary["codec"] == ("vp9" if kind.codec == "libvpx-vp9" else "h264")
        has_b_frames = summary["frame_types_first_300"].get("B", 0) > 0
        assert has_b_frames == (key in ("x264", "long-gop", "1080p")), key
        with av.open(video.path) as container:
            keyframes = [packet.pts for packet in container.demux(video=0) if packet.is_keyframe]
        assert len(keyframes) == 1  # 90 frames: one GOP, whatever the interval


def test_repeated_video_carries_its_index_modulo_the_period(bench, tmp_path):
    args = bench.parse_args(["--quick", "--workdir", str(tmp_path), "--files", "x264", "--durations", "0.05"])
    args.height, args.rss_minutes = 72, 0.1
    first, repeated = bench.prepare_videos(args)
    assert repeated.memory_only and repeated.period == first.frames == 90 and repeated.frames == 180
    with av.open(repeated.path) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert [bench.frame_index(frame) for frame in frames] == [k % 90 for k in range(180)]


@pytest.mark.slow
def test_quick_run_shape(quick_run):
    result, stdout = quick_run
    assert result["benchmark"] == "video_decoding"
    settings = result["settings"]
    assert settings["quick"] is True and settings["durations_min"] == [1.0] and settings["height"] == 360
    assert settings["methods"][-2:] == ["ours", "lmms-eval read_video"]
    assert settings["full_decode_reference"] in ("full decode (ffmpeg)", "full decode (PyAV)")
    assert settings["full_decode_reference"] in settings["methods"]
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["av"]

    videos = result["videos"]
    assert [video["gop"] for video in videos] == ["normal GOP", "long GOP"]
    for video in videos:
        assert (video["width"], video["height"], video["fps"], video["frames"]) == (640, 360, 30, 1800)
        assert Path(video["path"]).is_file()
        assert video["stream"]["codec"] == "h264" and video["stream"]["has_b_frames"]
        assert video["stream"]["frame_types_first_300"].get("B", 0) > 0  # x264's default B-frames are there

    rows = result["rows"]
    assert [(row["video"], row["method"]) for row in rows] == [
        (video["label"], method) for video in videos for method in settings["methods"]
    ]
    for row in rows:
        assert not row.get("error") and not row.get("skipped"), row
        assert row["seconds"] > 0 and row["cpu_seconds"] > 0 and row["peak_rss_mib"] > 0 and row["decoded_fps"] > 0
        assert row["other_processes_cpu_share"] is None or 0 <= row["other_processes_cpu_share"] <= 1
        assert row["video_frames"] == 1800
        assert "speedup_vs_lmms_eval" in row and "speedup_vs_full_decode" in row
    for row in rows:
        if row["method"] == settings["full_decode_reference"]:
            assert row["frames"] == 1800 and row["speedup_vs_full_decode"] == 1.0

    assert "| video | method | wall s | CPU s | frames | decoded fps | peak RSS MiB | vs lmms-eval |" in stdout
    assert result["table"] in stdout


@pytest.mark.slow
def test_quick_run_our_frames_are_the_sampled_ones(quick_run):
    result, _ = quick_run
    ours = [row for row in result["rows"] if row["method"] == "ours"]
    assert len(ours) == 2
    for row in ours:
        # A minute at 30 fps gives 60 one-per-second frames, fewer than 128: 128 frames spread evenly instead.
        assert row["frames"] == 128 and row["frame_shape"] == [3, 384, 384]
        check = row["index_check"]
        assert check == dict(check, checked=128, expected=128, matching=128, max_abs_error=0, ok=True)
        assert check["max_time_error_s"] < 0.5 / 30
    goals = [goal for goal in result["goals"] if goal["goal"] == "frames are the 1 fps samples"]
    assert [goal["met"] for goal in goals] == [True, True]


@pytest.mark.slow
def test_quick_run_lmms_eval_frames(quick_run):
    result, _ = quick_run
    for row in result["rows"]:
        if row["method"] == "lmms-eval read_video":
            assert row["frames"] == 60 and row["frame_shape"] == [360, 640, 3]  # full resolution, HWC
            assert row["index_check"]["ok"]
