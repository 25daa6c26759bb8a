"""TempCompass multi-choice (`lmms-eval/TempCompass`, config multi-choice, split test).

Upstream scoring accepts bare letters (our model returns them for letter questions) and sends anything else to a
GPT-3.5 judge. Without `OPENAI_API_KEY` that judge cannot answer: upstream then retries 10 times with 1-2 s sleeps
and scores 0. Here the same 0 is given at once, and an empty answer (a skipped video) never goes to the judge.
"""

from __future__ import annotations

import os

from ..benchmarks import BENCHMARKS
from ..data_sources import hf_home
from . import benchmark_video, dataset_attributes

os.environ.setdefault("HF_HOME", hf_home())  # upstream utils read os.environ["HF_HOME"] at import

from lmms_eval.tasks.tempcompass import utils as upstream  # noqa: E402

BENCHMARK = BENCHMARKS["tempcompass"]
__getattr__ = dataset_attributes(BENCHMARK)
_upstream_judge = upstream.get_eval_result


def judge_configured() -> bool:
    key = os.environ.get("OPENAI_API_KEY", "")
    return bool(key) and key != "YOUR_API_KEY"


def judge(prompt: str, maxtry: int = 10, sys_prompt: str | None = None):
    """Upstream's judge when one is configured and there is an answer to judge; else (no response, rating 0)."""
    if prompt.rstrip().endswith("Model Prediction:") or not judge_configured():
        return None, 0
    return _upstream_judge(prompt, maxtry, sys_prompt)


upstream.get_eval_result = judge
process_results = upstream.tempcompass_process_results_multi_choice


def doc_to_visual(doc: dict) -> list[str]:
    """`<root>/<video_id>.mp4`; root from HOUR_LLAVA_TEMPCOMPASS_VIDEOS (default `$HF_HOME/tempcompass/videos`)."""
    return [benchmark_video(BENCHMARK, doc["video_id"] + ".mp4")]
