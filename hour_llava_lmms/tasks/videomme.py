"""Video-MME (`lmms-eval/Video-MME`, split test): upstream prompt and scoring, our data source and video lookup."""

from __future__ import annotations

from ..benchmarks import BENCHMARKS
from . import benchmark_video, dataset_attributes, first_existing

BENCHMARK = BENCHMARKS["videomme"]
__getattr__ = dataset_attributes(BENCHMARK)


def doc_to_visual(doc: dict) -> list[str]:
    """`<root>/<videoID>.mp4` (or .MP4 / .mkv, as upstream tries); root from HOUR_LLAVA_VIDEOMME_VIDEOS."""
    return [first_existing([benchmark_video(BENCHMARK, doc["videoID"] + ext) for ext in (".mp4", ".MP4", ".mkv")])]
