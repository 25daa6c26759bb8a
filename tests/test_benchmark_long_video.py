"""Smoke test of benchmarks/long_video_memory.py: `--quick` runs, and its JSON holds the right token counts.

No timing is asserted: only that every measured row has a positive time and RSS, and that the token counts are
those of `video_token_budget` (Hour-LLaVA) and of LLaVA-OneVision's 196 tokens per frame plus one newline.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_hour_llava import video_token_budget

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "long_video_memory.py"


def load_benchmark_module():
    spec = importlib.util.spec_from_file_location("long_video_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("bench") / "x.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "| Hour-LLaVA | 2 min |" in completed.stdout
    return json.loads(output.read_text())


@pytest.mark.slow
def test_quick_rows_and_settings(quick_result):
    rows = quick_result["rows"]
    assert [(row["method"], row["video"]) for row in rows] == [
        (method, video)
        for video in ("2 min", "10 min")
        for method in ("Hour-LLaVA", "LLaVA-OneVision 64 frames", "LLaVA-OneVision 1 fps")
    ]
    assert quick_result["settings"]["quick"] is True
    assert quick_result["machine"]["cpu_count"] >= 1
    assert quick_result["machine"]["torch"]
    assert quick_result["config"]["text_config"]["hidden_size"] == 256
    assert quick_result["config"]["hour_llava"]["memaug_num_layers"] == 4


@pytest.mark.slow
def test_hour_llava_token_counts_follow_the_budget(quick_result):
    config = load_benchmark_module().hour_llava_config()
    expected = {120: (8320, 544), 600: (39000, 2550)}  # 2 min is resampled up to 128 memory frames
    rows = [row for row in quick_result["rows"] if row["method"] == "Hour-LLaVA"]
    assert [row["video_frames"] for row in rows] == [120, 600]
    for row in rows:
        frames = row["video_frames"]
        assert video_token_budget(frames, config) == expected[frames]
        assert (row["memory_tokens"], row["llm_visual_tokens"]) == expected[frames]
        text = quick_result["config"]["prefix_tokens"] + quick_result["config"]["question_tokens"]
        assert row["llm_tokens"] == row["llm_visual_tokens"] + text


@pytest.mark.slow
def test_llava_onevision_token_counts(quick_result):
    for row in quick_result["rows"]:
        if row["method"] == "LLaVA-OneVision 64 frames":
            assert row["frames"] == 64
            assert row["llm_visual_tokens"] == 64 * 196 + 1
        elif row["method"] == "LLaVA-OneVision 1 fps":
            assert row["frames"] == row["video_frames"]
            assert row["llm_visual_tokens"] == row["video_frames"] * 196 + 1


@pytest.mark.slow
def test_every_row_is_measured_or_says_why_not(quick_result):
    for row in quick_result["rows"]:
        if row.get("skipped"):
            assert row["method"] == "LLaVA-OneVision 1 fps"
            assert "projected" in row["skipped"]
            assert row["seconds"] is None and row["peak_rss_mib"] is None
        else:
            assert row["seconds"] > 0
            assert row["peak_rss_mib"] > 0
            assert row["peak_rss_mib"] >= row["baseline_rss_mib"] > 0
    # The 2-minute rows of both models that need no projection are always measured.
    measured = {(row["method"], row["video"]) for row in quick_result["rows"] if not row.get("skipped")}
    assert {("Hour-LLaVA", "2 min"), ("Hour-LLaVA", "10 min"), ("LLaVA-OneVision 64 frames", "2 min")} <= measured
