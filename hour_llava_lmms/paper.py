"""The paper's Table 2 (`paper_table2.json`) and how our scores line up with it.

Each of our scores is compared with the column that measures the same thing: a benchmark's overall accuracy with
its column, Video-MME's duration groups "long" and "medium" with the paper's long and medium columns (without
subtitles, as our task runs). The comparison rows are the Hour-LLaVA model asked for plus the paper's baselines.
"""

from __future__ import annotations

import json
import os

PAPER_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_table2.json")
BASELINES = ("Hour-LLaVA-7B", "Hour-LLaVA-3B", "LLaVA-Video-7B", "LLaVA-Video-3B", "GPT-4o")
# (benchmark, one of its groups in our sample logs) -> the paper's column
GROUP_COLUMNS = {("videomme", "long"): "videomme_long", ("videomme", "medium"): "videomme_medium"}


def paper_numbers(path: str = PAPER_TABLE) -> dict:
    """{"source", "columns", "models": {model: {column: percent or None}}}."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def comparison_models(paper_model: str, models: dict) -> list[str]:
    """The model asked for first, then the baselines; a clear error for a model the table does not have."""
    if paper_model not in models:
        raise ValueError(f"--paper-model {paper_model!r} is not in the paper's Table 2; known: {', '.join(models)}")
    return [paper_model, *(m for m in BASELINES if m != paper_model)]


def compare(ours: float | None, column: str, models: dict, names: list[str]) -> dict:
    """{model: {"paper": percent or None, "delta": ours - paper or None}} for one of our scores."""
    out = {}
    for name in names:
        paper = models[name].get(column)
        delta = None if ours is None or paper is None else round(ours - paper, 2)
        out[name] = {"paper": paper, "delta": delta}
    return out
