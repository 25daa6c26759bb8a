"""LongVideoBench val, video variant (`longvideobench/LongVideoBench`, split validation).

Upstream utils import decord at module level for the interleaved-frames variant, which we do not use; when decord
is absent, a stand-in module is visible only while they import (its `VideoReader` raises if ever called). An empty
answer (a skipped video) is scored wrong instead of upstream's random guess for unparsable answers.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from ..benchmarks import BENCHMARKS
from . import benchmark_video, dataset_attributes

BENCHMARK = BENCHMARKS["longvideobench"]
__getattr__ = dataset_attributes(BENCHMARK)


def _import_upstream():
    """lmms_eval.tasks.longvideobench.utils, with a temporary decord stand-in when decord is not installed."""
    if importlib.util.find_spec("decord") is not None:
        from lmms_eval.tasks.longvideobench import utils

        return utils

    def unavailable(*args, **kwargs):
        raise ImportError("decord is not installed; hour_llava tasks read videos through the model, not decord")

    stub = types.ModuleType("decord")
    stub.VideoReader, stub.cpu = unavailable, unavailable
    sys.modules["decord"] = stub
    try:
        from lmms_eval.tasks.longvideobench import utils
    finally:
        sys.modules.pop("decord", None)
    return utils


upstream = _import_upstream()
doc_to_text = upstream.longvideobench_doc_to_text
aggregate_results = upstream.longvideobench_aggregate_results


def doc_to_visual(doc: dict) -> list[str]:
    """`<root>/<video_path>`; root from HOUR_LLAVA_LONGVIDEOBENCH_VIDEOS (default: the local copy, else lmms-eval's
    videos folder)."""
    return [benchmark_video(BENCHMARK, doc["video_path"])]


def process_results(doc: dict, results: list[str]) -> dict:
    """Upstream's, except that an empty answer is wrong rather than a random letter."""
    scored = upstream.longvideobench_process_results(doc, results)
    if not results[0].strip():
        scored["lvb_acc"]["parsed_pred"] = ""
    return scored
