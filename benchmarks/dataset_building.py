"""Dataset building benchmark: VideoMarathon rows per second, and the feature cache's videos per second.

What is measured
----------------
A synthetic VideoMarathon (`dataset_builder.synthetic_videomarathon`: N videos of D seconds, 44 QA rows each) is
written first (timed, but not the subject). Then, each in a fresh cache:

* building: `VideoMarathon.download_and_prepare()` + `as_dataset()` for the `qa` and `grouped` configs from the
  Hub-row annotations (each QA row repeated `--qa-copies` times under new ids: 3 gives 132 pairs per video, near
  VideoMarathon's 3.3M pairs over 28K videos) and for `grouped` from the LLaVA json, with
  `check_videos="exists"` and, for `qa`, also `"probe"` (every video opened); rows per second = output rows /
  wall seconds.
* feature extraction: `dataset_builder.extract_features` in this process (one process, all cores) with the
  tiny checkpoint of `hour_llava_testing.tiny_model` (SigLIP: 2 layers, width 32, 140 px): videos per second and
  seconds of video per second, decoding at 1 fps with the reference's 128-frame minimum included.

Results: a markdown table on stdout and a JSON file (`benchmarks/results/dataset_building.json` by default, written
atomically) with the rows, the machine and the settings.

    python benchmarks/dataset_building.py            # 100 videos of 1 minute
    python benchmarks/dataset_building.py --quick    # 4 videos of 20 s, a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "dataset_building.json"
FULL = {"videos": 100, "duration": 60, "qa_copies": 3}
QUICK = {"videos": 4, "duration": 20, "qa_copies": 1}
VISION_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
)


def build_rows(data, cache: str, config: str, annotations: str, check: str) -> dict:
    """Build one config into a fresh cache; rows, seconds and rows per second."""
    from dataset_builder.videomarathon import VideoMarathon

    started = time.perf_counter()
    builder = VideoMarathon(
        config_name=config,
        annotations=annotations,
        video_root=data.video_root,
        cache_dir=cache,
        check_videos=check,
        validation_fraction=0.1,
    )
    builder.download_and_prepare()
    rows = sum(len(split) for split in builder.as_dataset().values())
    seconds = time.perf_counter() - started
    source = "LLaVA json" if annotations.endswith(".json") else "Hub rows"
    return dict(step=f"build {config} ({source}, check={check})", rows=rows, seconds=seconds, rows_per_s=rows / seconds)


def extract_rows(data, work: Path, threads: int) -> tuple[dict, dict]:
    """Run the feature extractor in this process on every synthetic video, with the tiny checkpoint of the tests."""
    from dataset_builder.extract_features import extract, parse_args
    from hour_llava_testing.tiny_model import write_tiny_checkpoint

    model = write_tiny_checkpoint(work / "model", seed=0)
    args = ["--model", model, "--video-root", data.video_root, "--output-dir", str(work / "features")]
    report = extract(parse_args([*args, "--threads", str(threads), "--cpu"]))
    row = dict(
        step="extract features (tiny tower, 1 process)",
        videos=report["counts"].get("computed", 0),
        seconds=report["wall_seconds"],
        videos_per_s=report["videos_per_second"],
        video_seconds_per_s=report["video_seconds_per_second"],
    )
    vision_config = json.loads(Path(model, "config.json").read_text())["vision_config"]
    return row, {key: vision_config[key] for key in VISION_FIELDS}


def format_table(rows: list[dict]) -> str:
    lines = ["| step | items | seconds | items/s | video s / s |", "|---|---|---|---|---|"]
    for row in rows:
        items = row.get("rows", row.get("videos"))
        rate = row.get("rows_per_s", row.get("videos_per_s"))
        unit = "rows" if "rows" in row else "videos"
        video_rate = row.get("video_seconds_per_s")
        lines.append(
            f"| {row['step']} | {items} {unit} | {row['seconds']:.2f} | {rate:,.1f} | "
            f"{'' if video_rate is None else f'{video_rate:,.1f}'} |"
        )
    return "\n".join(lines)


def add_synthetic_arguments(parser: argparse.ArgumentParser, default_output: Path) -> None:
    """The synthetic videos' frame rate and size, torch threads and the JSON file (shared by the benchmarks)."""
    parser.add_argument("--fps", type=float, default=4.0, help="frame rate of the synthetic videos")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--output", type=Path, default=default_output, help="JSON file to write")


def synthetic_spec(args: argparse.Namespace):
    """`--videos` synthetic videos of `--duration` seconds at the arguments' frame rate and size."""
    from dataset_builder.synthetic_videomarathon import SyntheticSpec

    return SyntheticSpec(
        num_videos=args.videos,
        min_duration=args.duration,
        max_duration=args.duration,
        fps=args.fps,
        width=args.width,
        height=args.height,
    )


def machine_info(load_before: tuple[float, float, float], **extra) -> dict:
    """Platform, Python, usable cores and the load average before and now (other jobs skew every rate)."""
    return dict(
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_count=len(os.sched_getaffinity(0)),
        **extra,
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 videos of 20 s (a smoke test)")
    parser.add_argument("--videos", type=int, default=None, help="number of synthetic videos")
    parser.add_argument("--duration", type=int, default=None, help="seconds per video")
    parser.add_argument("--qa-copies", type=int, default=None, help="copies of each QA row (3; 1 with --quick)")
    add_synthetic_arguments(parser, DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.videos = args.videos or preset["videos"]
    args.duration = args.duration or preset["duration"]
    args.qa_copies = args.qa_copies or preset["qa_copies"]
    return args


def copied_rows(rows: list[dict], copies: int, path: Path) -> str:
    """Write every QA row `copies` times (ids made unique) as JSONL; returns the path."""
    with open(path, "w") as handle:
        for row in rows:
            for copy in range(copies):
                handle.write(json.dumps({**row, "id": f"{row['id']}#{copy}"}) + "\n")
    return str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import modeling_hour_llava  # noqa: F401 - imported before any timing (transformers takes seconds)
    from dataset_builder.media import write_json_atomically
    from dataset_builder.synthetic_videomarathon import write_synthetic_videomarathon

    spec = synthetic_spec(args)
    load_before = os.getloadavg()  # other processes on the machine skew every rate; recorded with the results
    with tempfile.TemporaryDirectory(prefix="dataset_building_") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        data = write_synthetic_videomarathon(work / "data", spec)
        rows = [
            dict(
                step="write synthetic videos + annotations",
                videos=args.videos,
                seconds=time.perf_counter() - started,
                videos_per_s=args.videos / (time.perf_counter() - started),
            )
        ]
        hub_rows = copied_rows(data.rows, args.qa_copies, work / "hub_rows.jsonl")
        for index, (config, annotations, check) in enumerate(
            [
                ("qa", hub_rows, "exists"),
                ("qa", hub_rows, "probe"),
                ("grouped", hub_rows, "exists"),
                ("grouped", data.llava_json, "exists"),
            ]
        ):
            rows.append(build_rows(data, str(work / f"cache{index}"), config, annotations, check))
        row, vision_config = extract_rows(data, work, args.threads)
        rows.append(row)
    result = dict(
        benchmark="dataset_building",
        description=__doc__.split("\n\n")[0],
        machine=machine_info(load_before),
        settings=dict(
            quick=args.quick,
            videos=args.videos,
            duration=args.duration,
            fps=args.fps,
            width=args.width,
            height=args.height,
            threads=args.threads,
            qa_copies=args.qa_copies,
            qa_rows_per_video=len(data.rows) // args.videos,
        ),
        vision_config=vision_config,
        rows=rows,
    )
    write_json_atomically(args.output, result)
    print(format_table(rows))
    print(f"\nWrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
