"""The README's main command: the embedded default model, loaded as remote code, asked about brief events of long
videos, its answers scored against what the video shows.

The demo prints the truth next to each answer; this test does not trust that column: it rebuilds each video's
timeline from the suite (the same seeded spec) and checks the printed truths, verdicts and tally against it.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import demo  # noqa: E402
from research.recall.recall_suite import write_recall_suite  # noqa: E402

VIDEOS = [(5, 0), (20, 1), (45, 2)]  # (minutes, seed)
ANSWER = re.compile(r"^Q: (?P<question>.*)\nA: (?P<answer>\S*)", re.MULTILINE)


def truth(minutes: float, seed: int, tmp_path: pathlib.Path) -> dict[str, str]:
    spec = demo.demo_spec(minutes, seed)
    return {row["question"]: row["answer"] for row in write_recall_suite(tmp_path / "truth", spec).rows
            if row["question_type"] == "open-ended"}  # fmt: skip


def test_the_demo_asks_every_recall_question_and_scores_it_against_the_video(tmp_path):
    for minutes, seed in VIDEOS:
        result = subprocess.run(
            [sys.executable, "demo.py", "--minutes", str(minutes), "--seed", str(seed), "--workdir", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        frames = minutes * 60
        assert f"decoded {frames} frames at 1 fps" in result.stdout
        assert f"memory repository: {frames * 5:,} tokens; after forgetting the decoder sees 128 video tokens" in (
            result.stdout
        )
        expected = truth(minutes, seed, tmp_path / f"{minutes}-{seed}")
        answers = {m["question"]: m for m in ANSWER.finditer(result.stdout)}
        assert answers.keys() == expected.keys()
        right = 0
        for question, match in answers.items():
            line = result.stdout[match.start() :].splitlines()[1]
            assert f"(truth: {expected[question]}; " in line
            correct = match["answer"] == expected[question]
            assert line.split("; ")[1].startswith("right" if correct else "WRONG")
            right += correct
        assert f"{right} of {len(expected)} answers right" in result.stdout


def chance_tail(right: int, chances: list[float]) -> float:
    """P(at least `right` answers right) when question k is guessed right with probability chances[k]."""
    distribution = [1.0]
    for p in chances:
        distribution = [
            (distribution[n] if n < len(distribution) else 0.0) * (1 - p) + (distribution[n - 1] * p if n else 0.0)
            for n in range(len(distribution) + 1)
        ]
    return sum(distribution[right:])


def test_the_embedded_model_answers_about_hour_long_videos_far_better_than_chance(tmp_path, capsys):
    """Twelve fresh 30-60 minute videos (seeds no training set uses), three questions each, as the demo asks them:
    the answers right must be a count that guessing (1 in 4 colours, 3 shapes, 8 backgrounds) reaches less than 1 %
    of the time."""
    right, chances = 0, []
    for k in range(12):
        assert demo.main(["--minutes", str(30 + 2.5 * k), "--seed", str(1000 + k), "--workdir", str(tmp_path)]) == 0
        output = capsys.readouterr().out
        tally = re.search(r"^(\d+) of 3 answers right", output, re.MULTILINE)
        assert tally, output[-2000:]
        right += int(tally[1])
        chances += [1 / 4, 1 / 3, 1 / 8]  # colour, shape, background
    assert chance_tail(right, chances) < 0.01, f"{right} of {len(chances)} right"


def test_the_demo_refuses_lengths_outside_the_suite():
    result = subprocess.run([sys.executable, "demo.py", "--minutes", "2"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "5 to 60 minutes" in result.stderr


def test_the_embedded_checkpoint_carries_the_current_remote_code():
    """The checkpoint loads through its own copies of modeling_hour_llava (trust_remote_code); they must be ours.
    After changing the model code: cp modeling_hour_llava/*_hour_llava.py checkpoints/hour-llava-recall-tiny/"""
    package = ROOT / "modeling_hour_llava"
    copies = sorted(demo.DEFAULT_MODEL.glob("*_hour_llava.py"))
    assert {p.name for p in copies} >= {"modeling_hour_llava.py", "configuration_hour_llava.py"}
    stale = [p.name for p in copies if p.read_text() != (package / p.name).read_text()]
    assert not stale, f"stale remote code in {demo.DEFAULT_MODEL}: {stale}"


def test_the_chance_tail_is_a_binomial_tail():
    assert chance_tail(0, [0.25, 0.5]) == 1.0
    assert chance_tail(2, [0.25, 0.5]) == 0.125
    assert chance_tail(1, [0.25, 0.5]) == 1 - 0.75 * 0.5
    assert chance_tail(3, [0.25, 0.5]) == 0.0
