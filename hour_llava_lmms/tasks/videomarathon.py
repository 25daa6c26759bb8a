"""A held-out VideoMarathon split (multiple-choice rows of `validation`), scored like Video-MME.

Rows are the QA rows of `dataset_builder.videomarathon` (`video`, `question`, `options` "A. ...", `answer` letter,
`duration`, `task`); open-ended rows are left out. Videos: `<root>/<video>`, root from
HOUR_LLAVA_VIDEOMARATHON_VIDEOS. Local data only
(`HOUR_LLAVA_VIDEOMARATHON_DATA`): there is no public Hub split of it.
"""

from __future__ import annotations

from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

from ..benchmarks import BENCHMARKS
from . import benchmark_video, dataset_attributes

BENCHMARK = BENCHMARKS["videomarathon"]
__getattr__ = dataset_attributes(BENCHMARK)


def process_docs(dataset):
    """Multiple-choice rows only (the held-out split also has open-ended ones)."""
    return dataset.filter(lambda row: bool(row["options"]))


def doc_to_visual(doc: dict) -> list[str]:
    return [benchmark_video(BENCHMARK, doc["video"])]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    options = "\n".join(doc["options"])
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}\n{options}{kwargs.get('post_prompt', '')}"


def process_results(doc: dict, results: list[str]) -> dict:
    letters = [chr(ord("A") + i) for i in range(len(doc["options"]))]
    return {"videomarathon_acc": float(extract_mcq_answer(results[0], choices=letters) == doc["answer"])}
