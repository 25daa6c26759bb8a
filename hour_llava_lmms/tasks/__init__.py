"""Task configs for lmms-eval (`--include_path hour_llava_lmms/tasks`) and the code they share.

Each benchmark reuses lmms-eval's own prompt, parsing and scoring functions; only `doc_to_visual` is ours. Upstream
ones exit the whole run on the first missing video (`sys.exit`, `assert`) and read videos only from fixed folders
under `$HF_HOME`. Ours return the path where the video should be, from `HOUR_LLAVA_<BENCHMARK>_VIDEOS` (default: the
folder lmms-eval itself uses), and leave a missing or broken file to the model, which records and skips it.
"""

from __future__ import annotations

import os


def hf_home() -> str:
    return os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface"))


def video_root(benchmark: str, default_under_hf_home: str) -> str:
    """`HOUR_LLAVA_<BENCHMARK>_VIDEOS` if set, else lmms-eval's folder for the benchmark under `$HF_HOME`."""
    override = os.environ.get(f"HOUR_LLAVA_{benchmark.upper()}_VIDEOS")
    return os.path.expanduser(override) if override else os.path.join(hf_home(), default_under_hf_home)


def first_existing(candidates: list[str]) -> str:
    """The first candidate path that exists, else the first one (the model reports it as missing)."""
    return next((path for path in candidates if os.path.exists(path)), candidates[0])
