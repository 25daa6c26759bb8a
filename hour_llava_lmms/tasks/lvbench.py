"""LVBench (`lmms-eval/LVBench`, split train): upstream prompt and scoring, our video lookup."""

from __future__ import annotations

import os

from . import video_root


def doc_to_visual(doc: dict) -> list[str]:
    """`<root>/<video_path>`; root from HOUR_LLAVA_LVBENCH_VIDEOS (default `$HF_HOME/lvbench`)."""
    return [os.path.join(video_root("lvbench", "lvbench"), doc["video_path"])]
