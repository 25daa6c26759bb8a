"""Task configs for lmms-eval (`--include_path hour_llava_lmms/tasks`) and the code they share.

Each benchmark reuses lmms-eval's own prompt, parsing and scoring functions; the data source and the video lookup
are ours:

* Data: each yaml takes `dataset_path`, `dataset_name` and `dataset_kwargs` from its module (`!function`), which
  reads `HOUR_LLAVA_<BENCHMARK>_DATA` when lmms-eval loads the task: a local folder or annotation file(s) run
  offline, a Hub id or nothing loads from the Hub (`hour_llava_lmms.data_sources`).
* Videos: `doc_to_visual` returns the path where the video should be, under `HOUR_LLAVA_<BENCHMARK>_VIDEOS` (default:
  the local copy's video folder, else lmms-eval's folder under $HF_HOME), and leaves a missing or broken file to
  the model, which records and skips it. Upstream ones exit the whole run on the first missing video (`sys.exit`,
  `assert`). A row whose path leaves the video folder (`../../x.mp4`, an absolute path) raises
  `VideoPathOutsideRoot`; the model skips and counts it, and never opens the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..benchmarks import Benchmark
from ..data_sources import dataset_config, source_from_env, video_root

DATASET_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs")


class VideoPathOutsideRoot(ValueError):
    """A row names a video outside its benchmark's video folder; the file is not opened."""

    def __init__(self, relative: str, root: str):
        super().__init__(f"video path {relative!r} leaves the benchmark's video folder {root}; not opened")
        self.path = relative


def video_file(root: str, relative: str) -> str:
    """`root/relative`, refused when the (lexically normalised) result is not inside `root`.

    Symbolic links inside the folder are followed as usual: only the row's own path is checked."""
    root = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(root, relative))
    if not relative or os.path.isabs(relative) or os.path.commonpath([root, path]) != root or path == root:
        raise VideoPathOutsideRoot(relative, root)
    return path


def benchmark_video(bench: Benchmark, relative: str) -> str:
    """A row's video inside the benchmark's video folder (see `video_file`)."""
    return video_file(video_root(bench), relative)


def first_existing(candidates: list[str]) -> str:
    """The first candidate path that exists, else the first one (the model reports it as missing)."""
    return next((path for path in candidates if os.path.exists(path)), candidates[0])


def dataset_attributes(bench: Benchmark) -> Callable[[str], object]:
    """A module `__getattr__` that gives the yaml's `dataset_path`, `dataset_name` and `dataset_kwargs` for the
    data the environment names, computed anew at each lookup (lmms-eval's `!function` reads module attributes)."""

    def __getattr__(name: str):
        if name in DATASET_KEYS:
            return dataset_config(bench, source_from_env(bench))[name]
        raise AttributeError(name)

    return __getattr__
