"""The recall suite as an lmms-eval task: the prompt the suite's models are trained on (`format_question`: the
question, then for multiple choice the lettered options and the letter instruction), exact-match scoring of the
normalised first word for open-ended rows, letter extraction for multiple-choice rows.

Each sample's metric keeps the recall task, question type and video length, so `evaluate.py` and
`research/recall/recall_ablation.py` break accuracy down by task and length from the sample log alone.

lmms-eval loads this file next to its yaml (`!function recall.*`), not as a package module, so it imports only the
installed packages; the benchmark itself is described in `hour_llava_benchmarks.yaml` beside it.
"""

from __future__ import annotations

import os
import re

from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

from dataset_builder.videomarathon import format_question
from hour_llava_lmms.benchmarks import load_benchmarks
from hour_llava_lmms.tasks import benchmark_video, dataset_attributes

BENCHMARK = load_benchmarks(os.path.dirname(os.path.abspath(__file__)))["recall"]
__getattr__ = dataset_attributes(BENCHMARK)  # dataset_path / dataset_name / dataset_kwargs from $HOUR_LLAVA_RECALL_DATA


def doc_to_visual(doc: dict) -> list[str]:
    return [benchmark_video(BENCHMARK, doc["video"])]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return format_question(doc["question"], doc["options"])


def first_word(text: str) -> str:
    """Lower-case first word of a reply, without punctuation ("Yellow." -> "yellow")."""
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words else ""


def is_correct(doc: dict, reply: str) -> bool:
    if doc["options"]:
        letters = [chr(ord("A") + i) for i in range(len(doc["options"]))]
        return extract_mcq_answer(reply, choices=letters) == doc["answer"]
    return first_word(reply) == doc["answer"].lower()


def process_results(doc: dict, results: list[str]) -> dict:
    return {
        "recall_acc": {
            "correct": float(is_correct(doc, results[0])),
            "recall_task": doc["recall_task"],
            "question_type": doc["question_type"],
            "duration": float(doc["duration"]),
        }
    }


def aggregate(items: list[dict]) -> float:
    """Mean accuracy (a fraction) over all questions."""
    return sum(item["correct"] for item in items) / len(items) if items else 0.0
