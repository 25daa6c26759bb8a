"""Smoke test of benchmarks/training_throughput.py: `--quick` runs, reads the feature cache it built, and its JSON has
a row per mode with positive rates.

No timing is asserted. Decoding and cached features must train on the same tokens to the same loss: the cache holds
the same tower's features of the same frames, so a mismatch means the cache and the decoder disagree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "training_throughput.py"


def test_quick_benchmark(tmp_path):
    output = tmp_path / "result.json"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--cpu-only", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "| cpu | decode |" in completed.stdout and "| cpu | cached features |" in completed.stdout
    result = json.loads(output.read_text())
    rows = {row["mode"]: row for row in result["rows"]}
    assert set(rows) == {"decode", "cached features"}
    assert result["preparation"]["features_computed"] == {"computed": result["settings"]["videos"]}
    assert rows["decode"]["cached_features_used"] == 0
    assert rows["cached features"]["cached_features_used"] >= rows["cached features"]["samples"]
    for row in rows.values():
        assert row["samples_per_s"] > 0 and row["tokens_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["steps"] == result["settings"]["steps"]
    assert rows["cached features"]["tokens"] == rows["decode"]["tokens"]
    assert rows["cached features"]["final_loss"] == pytest.approx(rows["decode"]["final_loss"], rel=1e-4)
