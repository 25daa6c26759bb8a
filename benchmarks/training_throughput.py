"""Training throughput benchmark: samples/s, tokens/s and peak memory of train.py, decoding videos or reading cached
features.

What is measured
----------------
A synthetic VideoMarathon (`dataset_builder.synthetic_videomarathon`: N videos of D seconds) is built into the
`grouped` config (multi-turn conversations, as stage 3 trains on) and written as Parquet. A tiny random checkpoint
(`hour_llava_testing.tiny_model`: SigLIP 2 layers of width 32 at 140 px, Qwen2 2 layers of width 64, MemAug 2 layers,
the paper's token geometry) is written once, and `dataset_builder.extract_features` caches its memory repositories
for every video (`<features>/<video path without suffix>.safetensors`, the cache `train.py --feature_dir` reads).

Then `train.py --stage stage3` runs, one fresh process per row (so each peak RSS is its own; `--in-process`, the
default of `--quick`, calls `hour_llava_training.cli.run_training` here instead, saving the start-up but making
peak RSS cumulative), for `--steps` steps of `--batch` samples, with the same data and seed:

* decode: every step decodes its videos at 1 fps (at least `--min-frames` frames) and runs the frozen tower;
* cached features: the collator finds each video's feature file and the model skips decoding and the tower.

On CPU (fp32, `--use_cpu`) always, and on the GPU too where CUDA is present (bf16, gradient checkpointing: the
stage defaults). samples/s and tokens/s (non-padding input tokens, the video's memory tokens included) come from
the Trainer's own timing of the training loop (model loading and data preparation excluded); the first step's
warm-up is inside it, so use enough steps. Peak RSS is the training process's `ru_maxrss`; peak GPU memory is
`torch.cuda.max_memory_allocated`.

Results: a markdown table on stdout and a JSON file (`benchmarks/results/training_throughput.json` by default,
written atomically) with the rows, the machine and the settings.

    python benchmarks/training_throughput.py            # 8 videos of 2 minutes, 128-frame minimum, 20 steps
    python benchmarks/training_throughput.py --quick    # 2 videos of 10 s, 8-frame minimum, 2 steps (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.dataset_building import add_synthetic_arguments, machine_info, synthetic_spec  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "training_throughput.json"
FULL = {"videos": 8, "duration": 120, "min_frames": 128, "steps": 20}
QUICK = {"videos": 2, "duration": 10, "min_frames": 8, "steps": 2}
MODES = ("decode", "cached features")


def prepare_data(work: Path, args: argparse.Namespace) -> dict[str, str]:
    """Synthetic VideoMarathon -> grouped chat rows as Parquet; returns the dataset folder and the video root."""
    from dataset_builder.synthetic_videomarathon import write_synthetic_videomarathon
    from dataset_builder.videomarathon import VideoMarathon

    data = write_synthetic_videomarathon(work / "synthetic", synthetic_spec(args))
    builder = VideoMarathon(
        config_name="grouped",
        cache_dir=str(work / "cache"),
        annotations=data.hub_rows,
        video_root=data.video_root,
        validation_fraction=0.0,
    )
    builder.download_and_prepare()
    builder.as_dataset(split="train").to_parquet(str(work / "dataset" / "train.parquet"))
    return {"dataset": str(work / "dataset"), "video_root": data.video_root}


def prepare_features(model: str, video_root: str, output: Path, min_frames: int, threads: int) -> dict:
    """The feature cache of every video, with the checkpoint's own tower; returns the extraction report."""
    from dataset_builder.extract_features import extract, parse_args

    argv = ["--model", model, "--video-root", video_root, "--output-dir", str(output)]
    return extract(parse_args([*argv, "--min-frames", str(min_frames), "--threads", str(threads), "--cpu"]))


def train_once(model: str, data: dict[str, str], output: Path, device: str, features: str | None, args) -> dict:
    """One train.py process; its training summary."""
    command = [
        sys.executable, str(REPO_ROOT / "train.py"), "--stage", "stage3", "--model_name_or_path", model,
        "--dataset", data["dataset"], "--media_root", data["video_root"], "--output_dir", str(output),
        "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch), "--save_strategy", "no",
        "--logging_steps", str(args.steps), "--seed", "0", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    if features:
        command += ["--feature_dir", features]
    if device == "cpu":
        command += ["--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false"]
    if args.in_process:
        from hour_llava_training.cli import run_training

        return run_training(command[2:])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"train.py failed ({device}, features={features}):\n{done.stderr[-4000:]}")
    return json.loads((output / "training_summary.json").read_text())


def measure(model: str, data: dict[str, str], features: str, work: Path, args) -> list[dict]:
    """One row per device and mode."""
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    rows = []
    for device in devices:
        for mode in MODES:
            output = work / f"run-{device}-{mode.replace(' ', '-')}"
            summary = train_once(model, data, output, device, features if mode != "decode" else None, args)
            seconds = summary["train_seconds"]
            rows.append(
                dict(
                    device=device,
                    mode=mode,
                    steps=summary["steps"],
                    samples=summary["steps"] * args.batch,
                    tokens=summary["tokens_seen"],
                    seconds=seconds,
                    samples_per_s=summary["steps"] * args.batch / seconds,
                    tokens_per_s=summary["tokens_seen"] / seconds,
                    peak_rss_mb=summary["peak_rss_mb"],
                    peak_gpu_memory_mb=summary.get("peak_gpu_memory_mb") if device == "cuda" else None,
                    cached_features_used=summary["cached_features_used"],
                    final_loss=summary["losses"][-1] if summary["losses"] else None,
                )
            )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| device | videos from | samples/s | tokens/s | peak RSS (MiB) | peak GPU (MiB) | steps | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        gpu = "" if row["peak_gpu_memory_mb"] is None else f"{row['peak_gpu_memory_mb']:,.0f}"
        lines.append(
            f"| {row['device']} | {row['mode']} | {row['samples_per_s']:.2f} | {row['tokens_per_s']:,.0f} | "
            f"{row['peak_rss_mb']:,.0f} | {gpu} | {row['steps']} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 videos of 10 s, 8-frame minimum, 2 steps, in-process")
    parser.add_argument("--videos", type=int, default=None, help="number of synthetic videos")
    parser.add_argument("--duration", type=int, default=None, help="seconds per video")
    parser.add_argument("--min-frames", type=int, default=None, help="fewest frames per video (128; 8 quick)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per row (20; 2 quick)")
    parser.add_argument("--batch", type=int, default=2, help="samples per step")
    parser.add_argument("--in-process", action="store_true", help="train here, not in fresh processes (cumulative RSS)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU rows even where CUDA is present")
    add_synthetic_arguments(parser, DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.in_process = args.in_process or args.quick
    for key in ("videos", "duration", "min_frames", "steps"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dataset_builder.media import write_json_atomically
    from hour_llava_testing.tiny_model import write_tiny_checkpoint

    load_before = os.getloadavg()  # other processes on the machine skew every rate; recorded with the results
    with tempfile.TemporaryDirectory(prefix="training_throughput_") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        data = prepare_data(work, args)
        model = write_tiny_checkpoint(work / "model", seed=0, video_min_frames=args.min_frames)
        extraction = prepare_features(model, data["video_root"], work / "features", args.min_frames, args.threads)
        preparation_seconds = time.perf_counter() - started
        rows = measure(model, data, str(work / "features"), work, args)
        vision_config = json.loads(Path(model, "config.json").read_text())["vision_config"]
    result = dict(
        benchmark="training_throughput",
        description=__doc__.split("\n\n")[0],
        machine=machine_info(load_before, gpu=_gpu_name()),
        settings=dict(
            quick=args.quick,
            videos=args.videos,
            duration=args.duration,
            min_frames=args.min_frames,
            steps=args.steps,
            batch=args.batch,
            fps=args.fps,
            width=args.width,
            height=args.height,
            threads=args.threads,
            in_process=args.in_process,
            stage="stage3",
        ),
        preparation=dict(seconds=round(preparation_seconds, 2), features_computed=extraction["counts"]),
        vision_hidden_size=vision_config["hidden_size"],
        rows=rows,
    )
    write_json_atomically(args.output, result)
    print(format_table(rows))
    print(f"\nWrote {args.output}", file=sys.stderr)
    return 0


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


if __name__ == "__main__":
    sys.exit(main())
