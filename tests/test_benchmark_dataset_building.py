"""Smoke test of benchmarks/dataset_building.py: `--quick` runs and its JSON has every step with positive rates.

No timing is asserted; the row counts are checked against the synthetic set (44 QA rows per video, grouped rows
of up to 5 pairs) and every video is extracted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "dataset_building.py"


@pytest.mark.slow
def test_quick_benchmark(tmp_path):
    output = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--videos", "2", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "| build qa (Hub rows, check=exists) | 88 rows |" in completed.stdout
    result = json.loads(output.read_text())
    steps = {row["step"]: row for row in result["rows"]}
    assert steps["build grouped (Hub rows, check=exists)"]["rows"] == 2 * 9  # 44 pairs -> 8 groups of 5 + 1 of 4
    assert result["settings"]["qa_copies"] == 1
    assert steps["build grouped (LLaVA json, check=exists)"]["rows"] == 2 * 9
    extraction = steps["extract features (tiny tower, 1 process)"]
    assert extraction["videos"] == 2 and extraction["videos_per_s"] > 0 and extraction["video_seconds_per_s"] > 0
    assert all(row["seconds"] > 0 for row in result["rows"])
    assert result["settings"]["qa_rows_per_video"] == 44
