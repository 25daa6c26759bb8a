"""The benchmarks `evaluate.py` runs: task names, data sources, video folders and metrics.

Everything benchmark-specific that is not lmms-eval's own task code lives in `BENCHMARKS`, so adding a benchmark to
the package is adding an entry (and a task yaml under `tasks/`). A benchmark defined outside the package (a study's
own task) is described by a definition file next to its task yaml, `hour_llava_benchmarks.yaml`, and run with
`evaluate.py --tasks-dir DIR` (`load_benchmarks`):

    benchmarks:
      - name: mybench                      # evaluate.py --benchmarks mybench --data mybench=FOLDER|FILE
        task: my_lmms_eval_task            # the task name in the yaml next to this file
        split: test                        # the yaml's test_split
        metric: my_acc                     # the metric in lmms-eval's results
        scale: 1.0                         # 100 if the metric is a percentage, 1 if a fraction
        video_subdir: videos               # where videos sit inside a local copy
        annotation_patterns: ["*.jsonl"]   # annotation files inside a local copy, most specific first
        correct_field: my_acc.correct      # a sample-log field (dotted path) holding 1/0 (or true/false)
        group_field: my_acc.kind           # optional: a sample-log field that names the question's group
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from . import TASKS_DIR

DEFINITIONS_FILE = "hour_llava_benchmarks.yaml"


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


@dataclass(frozen=True)
class Benchmark:
    """One benchmark as evaluate.py and our task configs see it.

    task: the lmms-eval task name; tasks_dir: the folder of its yaml (lmms-eval's --include_path).
    hub_id / hub_name / hub_kwargs: the Hub dataset (and config) and lmms-eval's dataset_kwargs for it (None: local
    data only). split: the yaml's test_split. metric: the headline metric in lmms-eval's results; scale: 100 if
    lmms-eval reports it in percent, else 1. video_subdir: where videos sit inside a local copy (lmms-eval's own
    layout under $HF_HOME); hf_home_videos: lmms-eval's video folder under $HF_HOME (the default without local
    data). annotation_patterns: glob patterns (relative to a local folder) of the annotation files, most specific
    first. sample_correct: a sample-log row -> (1.0 / 0.0 correct, the benchmark's own group or None).
    """

    name: str
    task: str
    hub_id: str | None
    split: str
    metric: str
    scale: float
    video_subdir: str
    annotation_patterns: tuple[str, ...]
    sample_correct: Callable[[dict], tuple[float, str | None]]
    hub_name: str | None = None
    hub_kwargs: dict = field(default_factory=dict)
    hf_home_videos: str | None = None
    paper_seconds: float | None = None  # the benchmark's average video length, as the paper lists it
    tasks_dir: str = TASKS_DIR

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def yaml_path(self) -> str:
        return os.path.join(self.tasks_dir, f"{self.task}.yaml")

    @property
    def data_env(self) -> str:
        """Where the task config finds local data: a folder, an annotation file, or a Hub id."""
        return f"HOUR_LLAVA_{self.name.upper()}_DATA"

    @property
    def video_env(self) -> str:
        """Where the task config finds videos (default: inside the local data, else lmms-eval's folder)."""
        return f"HOUR_LLAVA_{self.name.upper()}_VIDEOS"


def _hub_video_kwargs(cache_dir: str) -> dict:
    """lmms-eval's dataset_kwargs for a Hub video benchmark (annotations and video archives under $HF_HOME)."""
    return {"token": True, "cache_dir": cache_dir, "video": True}


ANNOTATIONS = ("*.parquet", "*/*.parquet", "*.jsonl", "*.json")
BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "tempcompass", "hour_llava_tempcompass", "lmms-eval/TempCompass", "test", "avg_accuracy", 100.0,
            "videos", ("multi-choice/*.parquet", "multi*choice*.json*", *ANNOTATIONS), _tempcompass_correct,
            hub_name="multi-choice", hub_kwargs=_hub_video_kwargs("tempcompass"),
            hf_home_videos="tempcompass/videos", paper_seconds=11,
        ),
        Benchmark(
            "longvideobench", "hour_llava_longvideobench", "longvideobench/LongVideoBench", "validation", "lvb_acc",
            1.0, "videos", ("lvb_val.json", "*val*.json*", "*val*.parquet", *ANNOTATIONS), _longvideobench_correct,
            hub_kwargs=_hub_video_kwargs("datasets/longvideobench"),
            hf_home_videos="datasets/longvideobench/videos", paper_seconds=459,
        ),
        Benchmark(
            "videomme", "hour_llava_videomme", "lmms-eval/Video-MME", "test", "videomme_perception_score", 100.0,
            "data", ("videomme/*.parquet", *ANNOTATIONS), _videomme_correct,
            hub_kwargs=_hub_video_kwargs("videomme"), hf_home_videos="videomme/data", paper_seconds=1021,
        ),
        Benchmark(
            "lvbench", "hour_llava_lvbench", "lmms-eval/LVBench", "train", "lvbench_score", 1.0, "",
            ANNOTATIONS, _lvbench_correct, hub_kwargs=_hub_video_kwargs("lvbench"), hf_home_videos="lvbench",
            paper_seconds=4037,
        ),
        Benchmark(
            "videomarathon", "hour_llava_videomarathon_val", None, "validation", "videomarathon_acc", 1.0,
            "videos", ("**/validation*.parquet", "*validation*.json*", *ANNOTATIONS), _videomarathon_correct,
            hf_home_videos="videomarathon/videos",
        ),
    )
}  # fmt: skip
PAPER_BENCHMARKS = ("tempcompass", "longvideobench", "videomme", "lvbench")


def benchmark(name: str, known: dict[str, Benchmark] | None = None) -> Benchmark:
    """A benchmark by name (in `known`, default the package's), or a clear error listing the known ones."""
    known = BENCHMARKS if known is None else known
    if name not in known:
        raise ValueError(
            f"unknown benchmark {name!r}; known: {', '.join(known)} (a benchmark defined outside the package needs "
            f"--tasks-dir with its {DEFINITIONS_FILE})"
        )
    return known[name]


def _field(row: dict, path: str):
    for part in path.split("."):
        row = row[part]
    return row


def _fields_correct(correct_field: str, group_field: str | None, row: dict) -> tuple[float, str | None]:
    group = _field(row, group_field) if group_field else None
    return float(_field(row, correct_field)), None if group is None else str(group)


REQUIRED = ("name", "task", "split", "metric", "correct_field")
OPTIONAL = ("scale", "video_subdir", "annotation_patterns", "group_field", "hub_id", "hub_name", "paper_seconds")


def load_benchmarks(tasks_dir: str) -> dict[str, Benchmark]:
    """The benchmarks that `<tasks_dir>/hour_llava_benchmarks.yaml` defines (see the module docstring)."""
    tasks_dir = os.path.abspath(tasks_dir)
    path = os.path.join(tasks_dir, DEFINITIONS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tasks-dir {tasks_dir}: no {DEFINITIONS_FILE} (see hour_llava_lmms.benchmarks)")
    with open(path, encoding="utf-8") as handle:
        entries = (yaml.safe_load(handle) or {}).get("benchmarks") or []
    found = {}
    for i, entry in enumerate(entries):
        missing = [key for key in REQUIRED if key not in entry]
        unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
        if missing or unknown:
            raise ValueError(f"{path}: benchmark {i}: missing keys {missing}, unknown keys {unknown}")
        bench = Benchmark(
            name=entry["name"],
            task=entry["task"],
            hub_id=entry.get("hub_id"),
            split=entry["split"],
            metric=entry["metric"],
            scale=float(entry.get("scale", 1.0)),
            video_subdir=entry.get("video_subdir", "videos"),
            annotation_patterns=tuple(entry.get("annotation_patterns") or ANNOTATIONS),
            sample_correct=functools.partial(_fields_correct, entry["correct_field"], entry.get("group_field")),
            hub_name=entry.get("hub_name"),
            paper_seconds=entry.get("paper_seconds"),
            tasks_dir=tasks_dir,
        )
        if not os.path.isfile(bench.yaml_path):
            raise FileNotFoundError(f"{path}: benchmark {bench.name}: no task yaml {bench.yaml_path}")
        found[bench.name] = bench
    return found
