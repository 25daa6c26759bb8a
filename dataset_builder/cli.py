"""Build datasets from the command line (console script `hour-llava-build-dataset`).

    # VideoMarathon from its released annotations and local videos: Parquet per config and split, with its card
    hour-llava-build-dataset videomarathon --annotations jsons/videomarathon.json \
        --video-root data/VideoMarathon/videos --out data/videomarathon

    # A synthetic VideoMarathon (videos with known content, all 22 tasks) for smoke runs: OUT/videos holds the
    # videos, OUT/annotations the rows, OUT/parquet the built dataset (train: `--dataset OUT/parquet
    # --media-root OUT/videos`)
    hour-llava-build-dataset synthetic synthetic --videos 4

    # A fixed mixture of chat-row datasets, by weight (what train.py mixes on the fly with --dataset A:3 B:1)
    hour-llava-build-dataset mixture --dataset data/videomarathon:3 data/llava-video-178k:1 \
        --video-root data/VideoMarathon/videos --out data/stage3-mixture

Outputs appear whole or not at all (written to a temporary folder beside OUT, then renamed); an existing OUT is
refused unless `--overwrite`. `--push-to-hub REPO` uploads the folder as one commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

CONFIGS = ("grouped", "qa")
REPORT = "build_report.json"  # the builder's exclusion report, kept beside the Parquet (not pushed: local paths)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the built folder to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")


def add_videomarathon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS, help="configs to build")
    parser.add_argument(
        "--validation-fraction", type=float, default=0.01, help="share of the videos held out (split by video)"
    )
    parser.add_argument(
        "--check-videos",
        default="exists",
        choices=("none", "exists", "probe"),
        help="how each video is checked; probe opens it and fills missing durations",
    )
    parser.add_argument("--cache-dir", help="datasets cache for the build (default: a temporary folder)")
    parser.add_argument("--name", default="VideoMarathon", help="the dataset card's title")
    parser.add_argument("--license", help="the card's licence (default: chosen from the sources, see the card)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hour-llava-build-dataset",
        description=__doc__.split("\n\n")[0],
        epilog="Each command has its own --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    videomarathon = commands.add_parser(
        "videomarathon", help="VideoMarathon from annotations + local videos -> Parquet with its card"
    )
    videomarathon.add_argument(
        "--annotations", nargs="+", required=True, help="released annotation file(s): .json, .jsonl or .parquet"
    )
    videomarathon.add_argument("--video-root", required=True, help="folder with one sub-folder of videos per source")
    videomarathon.add_argument("--out", required=True, help="output folder (Parquet per config and split, README)")
    add_videomarathon_arguments(videomarathon)
    add_output_arguments(videomarathon)

    synthetic = commands.add_parser(
        "synthetic", help="a synthetic VideoMarathon (videos with known content) and its Parquet build"
    )
    synthetic.add_argument("out", help="output folder: OUT/videos, OUT/annotations, OUT/parquet")
    synthetic.add_argument("--videos", type=int, default=4, help="number of videos")
    synthetic.add_argument("--min-seconds", type=int, default=6, help="shortest video")
    synthetic.add_argument("--max-seconds", type=int, default=10, help="longest video")
    synthetic.add_argument("--fps", type=float, default=4.0, help="frame rate of the videos")
    synthetic.add_argument("--width", type=int, default=96)
    synthetic.add_argument("--height", type=int, default=64)
    synthetic.add_argument("--seed", type=int, default=0)
    add_videomarathon_arguments(synthetic)
    synthetic.set_defaults(validation_fraction=0.0, name="Synthetic VideoMarathon")
    add_output_arguments(synthetic)

    mixture = commands.add_parser("mixture", help="chat-row datasets interleaved by weight -> one Parquet dataset")
    mixture.add_argument(
        "--dataset", nargs="+", required=True, help="PATH_OR_HUB_ID[:WEIGHT] ...: chat-row or VideoMarathon datasets"
    )
    mixture.add_argument("--split", default="train")
    mixture.add_argument(
        "--video-root", help="for VideoMarathon datasets: the videos' root (their rows become chat rows with paths)"
    )
    mixture.add_argument("--seed", type=int, default=0)
    mixture.add_argument(
        "--stopping-strategy",
        default="first_exhausted",
        choices=("first_exhausted", "all_exhausted"),
        help="stop at the first exhausted source (no repeats) or oversample until all are seen",
    )
    mixture.add_argument("--out", required=True, help="output folder")
    add_output_arguments(mixture)
    return parser.parse_args(argv)


class OutputExists(FileExistsError):
    """The output folder exists and --overwrite was not given."""


def prepare_output(out: str, overwrite: bool) -> str:
    """A fresh temporary folder beside `out` (same file system, so the final rename is atomic)."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise OutputExists(f"{out} exists; pass --overwrite to replace it")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=os.path.dirname(out))


def publish(tmp: str, out: str) -> str:
    """Move the finished temporary folder to `out` (replacing an old one only now that the new one is whole)."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        old = tmp + ".old"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    return out


def build_videomarathon(
    annotations: list[str],
    video_root: str,
    out: str,
    args: argparse.Namespace,
) -> dict:
    """VideoMarathon configs -> `out` (Parquet + card + `build_report.json`); returns the builder's report."""
    from .hub import videomarathon_card, write_parquet_folder
    from .videomarathon import VideoMarathon

    with tempfile.TemporaryDirectory(prefix="videomarathon-cache-") as scratch:
        cache_dir = args.cache_dir or scratch
        configs, report = {}, {}
        for config in args.configs:
            builder = VideoMarathon(
                config_name=config,
                annotations=annotations,
                video_root=video_root,
                cache_dir=cache_dir,
                check_videos=args.check_videos,
                validation_fraction=args.validation_fraction,
            )
            builder.download_and_prepare()
            configs[config] = builder.as_dataset()
            report = json.loads(Path(builder.report_path).read_text())
        card = videomarathon_card(
            report["statistics"],
            configs,
            pretty_name=args.name,
            excluded=report["excluded_rows"],
            license=args.license,
        )
        write_parquet_folder(configs, out, card=card, default_config=args.configs[0])
    (Path(out) / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def build_synthetic(args: argparse.Namespace, out: str) -> dict:
    """The synthetic videos and rows under `out`, then their VideoMarathon build in `out/parquet`."""
    from .synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon

    if not 1 <= args.min_seconds <= args.max_seconds:
        raise ValueError(f"--min-seconds {args.min_seconds} / --max-seconds {args.max_seconds}: need 1 <= min <= max")
    spec = SyntheticSpec(
        num_videos=args.videos,
        min_duration=args.min_seconds,
        max_duration=args.max_seconds,
        fps=args.fps,
        width=args.width,
        height=args.height,
        seed=args.seed,
    )
    data = write_synthetic_videomarathon(out, spec)
    return build_videomarathon([data.hub_rows], data.video_root, os.path.join(out, "parquet"), args)


def chat_rows(dataset, name: str, video_root: str | None, skipped: Counter | None = None):
    """A loaded dataset as chat rows: chat datasets as they are, VideoMarathon builds through `videomarathon_chat`
    (rows whose video cannot be placed are dropped and counted by reason in `skipped`)."""
    from .chat import CHAT_FEATURES
    from .mixtures import videomarathon_chat

    columns = set(dataset.column_names or [])
    if set(CHAT_FEATURES) <= columns:
        return dataset
    if {"source", "video", "messages"} <= columns:
        if not video_root:
            raise ValueError(f"{name} holds VideoMarathon rows: pass --video-root (the root of their videos)")
        return videomarathon_chat(dataset, video_root=video_root, name=name, skipped=skipped)
    raise ValueError(
        f"{name} has columns {sorted(columns)}: expected chat rows {sorted(CHAT_FEATURES)} or a VideoMarathon build"
    )


def build_mixture_folder(args: argparse.Namespace, out: str) -> dict:
    """Load each `PATH[:WEIGHT]`, interleave by weight, write one Parquet dataset with a short card."""
    from datasets import DatasetDict

    from .hub import write_parquet_folder
    from .loading import load_dataset_folder
    from .mixtures import build_mixture

    weights, sources, skipped = {}, {}, {}
    for spec in args.dataset:
        path, _, weight = spec.rpartition(":")
        if not path or not weight.replace(".", "", 1).isdigit():
            path, weight = spec, "1"
        weights[path] = float(weight)
        skipped[path] = Counter()
        sources[path] = chat_rows(load_dataset_folder(path, split=args.split), path, args.video_root, skipped[path])
    mixed = build_mixture(weights, sources, seed=args.seed, stopping_strategy=args.stopping_strategy)
    counts = {name: 0 for name in weights}
    for source in mixed["dataset"]:
        counts[source] = counts.get(source, 0) + 1
    lines = "\n".join(f"| `{name}` | {weights[name]:g} | {counts[name]:,} |" for name in weights)
    card = (
        f"# Mixture\n\nChat rows (`dataset_builder.chat`) interleaved by weight (seed {args.seed}, "
        f"{args.stopping_strategy}): {len(mixed):,} rows.\n\n| source | weight | rows |\n|---|---|---|\n{lines}\n\n"
        "The licence of each source applies to its rows.\n"
    )
    write_parquet_folder({"default": DatasetDict({args.split: mixed})}, out, card=card)
    return {
        "rows": len(mixed),
        "by_source": counts,
        "skipped_rows": {name: dict(c) for name, c in skipped.items() if c},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tmp = prepare_output(args.out, args.overwrite)
    except OutputExists as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.command == "videomarathon":
            result = build_videomarathon(args.annotations, args.video_root, tmp, args)
            summary = {"kept_rows": result["kept_rows"], "excluded_rows": result["excluded_rows"]}
        elif args.command == "synthetic":
            summary = {"kept_rows": build_synthetic(args, tmp)["kept_rows"]}
        else:
            summary = build_mixture_folder(args, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out = publish(tmp, args.out)
    print(json.dumps({"out": out, **summary}))
    if args.push_to_hub:
        from .hub import push_folder

        folder = os.path.join(out, "parquet") if args.command == "synthetic" else out
        commit = push_folder(folder, args.push_to_hub, private=args.private, ignore_patterns=[REPORT])
        print(f"pushed {folder} to {args.push_to_hub}: {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
