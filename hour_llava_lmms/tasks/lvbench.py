"""LVBench (`lmms-eval/LVBench`, split train): upstream prompt and scoring, our data source and video lookup."""

from __future__ import annotations

from ..benchmarks import BENCHMARKS
from . import benchmark_video, dataset_attributes

BENCHMARK = BENCHMARKS["lvbench"]
__getattr__ = dataset_attributes(BENCHMARK)


def doc_to_visual(doc: dict) -> list[str]:
    """`<root>/<video_path>`; root from HOUR_LLAVA_LVBENCH_VIDEOS (default: the local copy, else `$HF_HOME/lvbench`)."""
    return [benchmark_video(BENCHMARK, doc["video_path"])]
