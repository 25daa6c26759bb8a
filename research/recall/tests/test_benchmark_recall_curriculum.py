"""The curriculum probe end to end at toy scale: two training stages of different video lengths, two held-out sets
scored at every evaluation, the trained models saved as checkpoints, and a rerun that reuses the finished run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from research.recall.recall_curriculum import SETS, answer_accuracy, parse_stages, set_spec  # noqa: E402

ARGS = ["--variants", "memaug", "uniform", "--stages", "fixed:2", "medium:2", "--tests", "test", "test-medium",
        "--max-videos", "3", "--batch-size", "2", "--eval-every", "2", "--jobs", "2", "--random-tower"]  # fmt: skip


def run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "research/recall/recall_curriculum.py", "--workdir", str(tmp_path / "work"),
               "--json", str(tmp_path / "out.json"), "--markdown", str(tmp_path / "out.md"), "--export", "memaug:0",
               "--export-to", str(tmp_path / "exported"), *ARGS, *extra]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env, check=False)


def test_stages_are_training_sets_with_a_step_count():
    assert parse_stages(["fixed:300", "long:10"]) == [("fixed", 300), ("long", 10)]
    for bad in ("test:5", "fixed", "nowhere:3", "fixed:x"):
        with pytest.raises(SystemExit, match="NAME:STEPS"):
            parse_stages([bad])


def test_every_set_makes_its_videos_at_both_ends_of_its_lengths_and_the_slow_needles_are_never_dropped():
    """Each set's spec yields timelines (no video too short for its flashes) at its shortest and longest length; in
    the needle sets one flash is the needle; the `needle-slow` stage's flashes outlast the gap between the frames
    that uniform forgetting keeps at 16 frames, so every one of them reaches the decoder."""
    import random

    from modeling_hour_llava import HourLlavaConfig
    from modeling_hour_llava.memory_hour_llava import memory_frame_count, temporal_forgetting
    from research.recall.recall_model import RECALL_MODEL_CONFIG, kept_frames_budget
    from research.recall.recall_suite import make_timeline, needle_of

    fields = {k: v for k, v in RECALL_MODEL_CONFIG.items() if k not in ("vision", "text")}
    config = HourLlavaConfig(**{**fields, **kept_frames_budget(16)})
    for name, chosen in SETS.items():
        spec = set_spec(name)
        assert spec.split == name and spec.num_videos == chosen.videos
        for seconds in (round(chosen.minutes[0] * 60), round(chosen.minutes[1] * 60) - 1):
            for seed in range(30):
                timeline = make_timeline("v.mp4", seconds, spec, random.Random(seed))
                if chosen.form == "needle":
                    needle_of(timeline)
                if name == "needle-slow":
                    frames = memory_frame_count(seconds, config)
                    kept = temporal_forgetting(frames, config, mode="uniform").tolist()
                    seen = {int(k * seconds / frames) for k in kept}  # memory frame -> second of the video
                    assert all(seen & set(range(f.start, f.end)) for f in timeline.flashes)


def test_an_answer_is_right_only_when_greedy_decoding_writes_all_of_it():
    # Two conversations, two answers each: labels -100 outside the answers (tokens 3-4 and 7; 2-3 and 6-7).
    labels = torch.full((2, 9), -100)
    labels[0, 3:5], labels[0, 7] = torch.tensor([11, 2]), 12
    labels[1, 2:4], labels[1, 6:8] = torch.tensor([13, 2]), torch.tensor([14, 2])
    logits = torch.zeros(2, 9, 20)
    for row, position, token in [(0, 2, 11), (0, 3, 2), (0, 6, 5), (1, 1, 13), (1, 2, 9), (1, 5, 14), (1, 6, 2)]:
        logits[row, position, token] = 1.0  # the prediction for position + 1
    # Whole answers: row 0 first right, second wrong (5 for 12); row 1 first wrong at its end token, second right.
    assert answer_accuracy(labels, logits, whole=True) == (2, 4)
    # First tokens only: row 1's first answer now counts.
    assert answer_accuracy(labels, logits, whole=False) == (3, 4)


@pytest.mark.slow
def test_a_length_curriculum_scores_every_held_out_set_and_a_rerun_reuses_the_run(tmp_path):
    result = run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    work = tmp_path / "work"
    # The medium set really holds longer videos than the short ones (5 to 15 minutes, capped at 3 videos).
    medium = json.loads((work / "medium" / "annotations" / "timelines.json").read_text())["timelines"]
    shortest, longest = SETS["medium"].minutes
    assert len(medium) == 3 and all(shortest * 60 <= t["duration"] <= longest * 60 for t in medium)
    for result_ in report["results"]:
        # 4 steps, scored after each stage (every 2 steps) on both held-out sets.
        assert [p["stage"] for p in result_["curve"]] == ["fixed", "medium"]
        for point in result_["curve"]:
            assert point["accuracy"].keys() == {"test", "test-medium"}
            assert all(0.0 <= a <= 100.0 for a in point["accuracy"].values())
        model = ROOT / report["run_dir"] / f"model-{result_['variant']}-0"
        config = json.loads((model / "config.json").read_text())
        assert config["use_memaug"] == (result_["variant"] == "memaug")
    # The final table is the last evaluation of each run; the exported model is the run's memaug model.
    for result_ in report["results"]:
        final = report["final"][result_["variant"]]
        assert final["test-medium"]["mean"] == pytest.approx(result_["final"]["test-medium"])
    assert "| memaug | 1 |" in (tmp_path / "out.md").read_text()
    exported = tmp_path / "exported"
    trained = ROOT / report["run_dir"] / "model-memaug-0"
    assert (exported / "model.safetensors").read_bytes() == (trained / "model.safetensors").read_bytes()
    assert "Held-out accuracy" in (exported / "README.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (ROOT / report["run_dir"]).rglob("*")}

    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (ROOT / report["run_dir"]).rglob("*")} == stamps
    assert json.loads((tmp_path / "out.json").read_text())["results"] == report["results"]
