"""Where a benchmark's annotations and videos are: the Hub, a local folder, or annotation files.

The task configs read it from the environment when lmms-eval loads them (`HOUR_LLAVA_<BENCHMARK>_DATA`, optional
`HOUR_LLAVA_<BENCHMARK>_VIDEOS`), so the plain `lmms-eval` CLI runs on a local copy without Hub access:

    HOUR_LLAVA_VIDEOMME_DATA=/data/videomme lmms-eval --model hour_llava --model_args pretrained=CKPT \\
        --include_path hour_llava_lmms/tasks --tasks hour_llava_videomme

A data value is a folder (the benchmark's layout: annotation files found by `Benchmark.annotation_patterns`, videos
in `Benchmark.video_subdir`), one or more annotation files (separated by `os.pathsep`; videos next to the first
one, in `video_subdir`), or a Hub dataset id `owner/name`. Unset: the benchmark's Hub dataset, videos where
lmms-eval puts them under `$HF_HOME`.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from .benchmarks import Benchmark

BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


@dataclass
class DataSource:
    """Where one benchmark's annotations and videos are (data_files None: a Hub dataset)."""

    dataset_path: str
    data_files: list[str] | None
    video_root: str | None


def annotation_files(bench: Benchmark, folder: str) -> list[str]:
    """The annotation files of a local copy: the first of the benchmark's patterns that matches anything."""
    for pattern in bench.annotation_patterns:
        found = sorted(
            path
            for path in glob.glob(os.path.join(folder, pattern), recursive=True)
            if os.path.isfile(path) and os.path.splitext(path)[1] in BUILDERS
        )
        if found:
            return found
    raise FileNotFoundError(
        f"{bench.name}: no annotation file in {folder} (looked for {', '.join(bench.annotation_patterns)}); "
        f"pass the file itself (--data {bench.name}=FILE or {bench.data_env}=FILE)"
    )


def _looks_like_hub_id(value: str) -> bool:
    return value.count("/") == 1 and not value.startswith((".", "/", "~")) and os.pathsep not in value


def resolve_source(bench: Benchmark, data: str | None, videos: str | None = None) -> DataSource:
    """A folder, annotation file(s) or a Hub id (default: the benchmark's Hub dataset) -> DataSource.

    Raises FileNotFoundError naming the benchmark when local data is missing or a local-only benchmark has none."""
    videos = os.path.abspath(os.path.expanduser(videos)) if videos else None
    if data is None:
        if bench.hub_id is None:
            raise FileNotFoundError(
                f"{bench.name}: no data given and there is no Hub dataset for it; pass --data {bench.name}=FOLDER "
                f"(or set {bench.data_env})"
            )
        return DataSource(bench.hub_id, None, videos)
    paths = [os.path.abspath(os.path.expanduser(p)) for p in data.split(os.pathsep) if p]
    if not all(os.path.exists(p) for p in paths):
        if _looks_like_hub_id(data):
            return DataSource(data, None, videos)
        missing = [p for p in paths if not os.path.exists(p)]
        raise FileNotFoundError(f"{bench.name}: data {data!r}: no such file or folder {missing} (nor a Hub id)")
    if len(paths) == 1 and os.path.isdir(paths[0]):
        folder, files = paths[0], annotation_files(bench, paths[0])
    else:
        folders = [p for p in paths if os.path.isdir(p)]
        if folders:
            raise ValueError(f"{bench.name}: data {data!r} mixes folders and files; give one folder or files")
        folder, files = os.path.dirname(paths[0]), paths
    kinds = {BUILDERS.get(os.path.splitext(path)[1]) for path in files}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(f"{bench.name}: annotation files {files} mix formats or are not parquet/json/csv/arrow")
    return DataSource(kinds.pop(), files, videos or os.path.join(folder, bench.video_subdir))


def source_from_env(bench: Benchmark) -> DataSource:
    """The data source the environment names for a benchmark (`HOUR_LLAVA_<BENCHMARK>_DATA` / `_VIDEOS`)."""
    return resolve_source(bench, os.environ.get(bench.data_env) or None, os.environ.get(bench.video_env) or None)


def dataset_config(bench: Benchmark, source: DataSource) -> dict:
    """lmms-eval's dataset_path / dataset_name / dataset_kwargs for a source."""
    if source.data_files is not None:
        return {
            "dataset_path": source.dataset_path,
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {bench.split: list(source.data_files)}},
        }
    if source.dataset_path == bench.hub_id:
        return {"dataset_path": bench.hub_id, "dataset_name": bench.hub_name, "dataset_kwargs": dict(bench.hub_kwargs)}
    return {"dataset_path": source.dataset_path, "dataset_name": bench.hub_name, "dataset_kwargs": {"token": True}}


def hf_home() -> str:
    return os.path.expanduser(os.environ.get("HF_HOME", "~/.cache/huggingface"))


def video_root(bench: Benchmark) -> str:
    """The folder a benchmark's video paths are relative to: `_VIDEOS`, else inside the local data, else
    lmms-eval's folder under $HF_HOME."""
    source = source_from_env(bench)
    if source.video_root:
        return source.video_root
    return os.path.join(hf_home(), bench.hf_home_videos or bench.name)
