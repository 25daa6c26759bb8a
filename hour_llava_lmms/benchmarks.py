"""The benchmarks `evaluate.py` runs: task names, data sources, video folders, metrics, and the paper's numbers.

Everything benchmark-specific that is not lmms-eval's own task code lives in `BENCHMARKS`, so adding a benchmark is
adding an entry (and a task yaml under `tasks/`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from . import TASKS_DIR

PAPER_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_table2.json")


def _videomme_correct(row: dict) -> tuple[float, str | None]:
    value = row["videomme_perception_score"]
    return float(value["score"]), value["duration"]


def _lvbench_correct(row: dict) -> tuple[float, str | None]:
    return float(row["lvbench_score"]), None


def _longvideobench_correct(row: dict) -> tuple[float, str | None]:
    value = row["lvb_acc"]
    return float(value["answer"] == value["parsed_pred"]), f"{value['duration_group']} s"


def _tempcompass_correct(row: dict) -> tuple[float, str | None]:
    return float(row["avg_accuracy"]["rating"] == 1), None


def _videomarathon_correct(row: dict) -> tuple[float, str | None]:
    return float(row["videomarathon_acc"]), None


def _recall_correct(row: dict) -> tuple[float, str | None]:
    value = row["recall_acc"]
    return float(value["correct"]), value["recall_task"]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark as evaluate.py sees it.

    metric: the headline metric in lmms-eval's results; scale: 100 if lmms-eval reports it in percent, else 1.
    video_subdir: where videos sit inside a local copy of the benchmark (lmms-eval's own layout under $HF_HOME).
    annotation_patterns: glob patterns (relative to a local folder) of the annotation files, most specific first.
    sample_correct: a sample-log row -> (1.0 / 0.0 correct, the benchmark's own duration group or None).
    """

    name: str
    task: str
    hub_id: str
    split: str
    metric: str
    scale: float
    video_subdir: str
    annotation_patterns: tuple[str, ...]
    sample_correct: Callable[[dict], tuple[float, str | None]]
    hub_name: str | None = None
    paper_seconds: float | None = None  # the benchmark's average video length, as the paper lists it
    extra_metrics: tuple[str, ...] = field(default_factory=tuple)

    @property
    def yaml_path(self) -> str:
        return os.path.join(TASKS_DIR, f"{self.task}.yaml")

    @property
    def video_env(self) -> str:
        return f"HOUR_LLAVA_{self.name.upper()}_VIDEOS"


ANNOTATIONS = ("*.parquet", "*/*.parquet", "*.jsonl", "*.json")
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "tempcompass", "hour_llava_tempcompass", "lmms-eval/TempCompass", "test", "avg_accuracy", 100.0,
            "videos", ("multi-choice/*.parquet", "multi*choice*.json*", *ANNOTATIONS), _tempcompass_correct,
            hub_name="multi-choice", paper_seconds=11,
        ),
        Benchmark(
            "longvideobench", "hour_llava_longvideobench", "longvideobench/LongVideoBench", "validation", "lvb_acc",
            1.0, "videos", ("lvb_val.json", "*val*.json*", "*val*.parquet", *ANNOTATIONS), _longvideobench_correct,
            paper_seconds=459,
        ),
        Benchmark(
            "videomme", "hour_llava_videomme", "lmms-eval/Video-MME", "test", "videomme_perception_score", 100.0,
            "data", ("videomme/*.parquet", *ANNOTATIONS), _videomme_correct, paper_seconds=1021,
        ),
        Benchmark(
            "lvbench", "hour_llava_lvbench", "lmms-eval/LVBench", "train", "lvbench_score", 1.0, "",
            ANNOTATIONS, _lvbench_correct, paper_seconds=4037,
        ),
        Benchmark(
            "videomarathon", "hour_llava_videomarathon_val", "jylins/videomarathon", "validation",
            "videomarathon_acc", 1.0, "videos", ("**/validation*.parquet", "*validation*.json*", *ANNOTATIONS),
            _videomarathon_correct,
        ),
        Benchmark(
            "recall", "hour_llava_recall", "json", "test", "recall_acc", 1.0, "videos/recall",
            ("annotations/recall_qa.jsonl", "*.jsonl"), _recall_correct,
        ),
    )
}  # fmt: skip
PAPER_BENCHMARKS = ("tempcompass", "longvideobench", "videomme", "lvbench")


def benchmark(name: str) -> Benchmark:
    """A benchmark by name, or a clear error listing the known ones."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def paper_numbers(path: str = PAPER_TABLE) -> dict:
    """The paper's Table 2 (percent), per model and benchmark; null where it was not recorded."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
