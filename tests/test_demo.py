"""The README's main command runs: the demo on one minute of video, one question."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, "demo.py", "--minutes", "1", "--questions", "1", "--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 60 one-per-second frames are fewer than 128, so min(total, 128) = all 120 frames of the 2-fps file are used.
    assert "decoded 120 frames (1 fps, at least 128)" in result.stdout
    assert "memory repository: 8,320 tokens; decoder sees 544 video tokens" in result.stdout
    assert result.stdout.count("Q: ") == 1 and "A: " in result.stdout
