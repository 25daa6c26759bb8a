"""docs/processor.md runs as written: its Python blocks before the serving section, in order, in a fresh process
started where `film.mp4` and the embedded checkpoint are (the serving client needs a server: tests/test_serve.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dataset_builder.synthetic_video import write_video

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "processor.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_processor_page_runs_as_written(tmp_path):
    page = PAGE.read_text()
    blocks = python_blocks(page.split("## Serving")[0])
    assert len(blocks) == 4
    write_video(tmp_path / "film.mp4", num_frames=200, fps=10)  # 20 s
    (tmp_path / "checkpoints").symlink_to(ROOT / "checkpoints")
    (tmp_path / "page.py").write_text("\n".join(blocks))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "page.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]
    out = run.stdout
    assert "tensor([128])" in out  # 20 one-per-second frames are fewer than min_frames: 128 spread evenly
    assert "[0 1 3 4 6]" in out  # the first sampled indices: linspace(0, 199, 128)
    assert "tensor([40]) tensor([16])" in out  # fps=2 over 20 s; max_frames=16
    assert "num_frames=32: Hour-LLaVA does not take a fixed frame count" in out
    assert "TurnFormat(header=" in out
    budget = re.search(r"^\[(\d+)\] (\d+)$", out, flags=re.M)
    assert budget and budget.group(1) == budget.group(2)  # _get_num_multimodal_tokens == placeholders written
    assert "missing.mp4 file not found" in out
