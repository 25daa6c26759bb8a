"""Evaluation throughput with and without memory reuse: questions per second of the lmms-eval model.

    .venv/bin/python benchmarks/eval_memory_reuse.py            # 2 videos x 10 questions, 10 minutes each

A synthetic set like LVBench's shape (many questions per long video): `--videos` videos of `--minutes` minutes
(2 fps, 160 x 96, x264, cached in --workdir), `--questions` multiple-choice questions each, handed to the model in
lmms-eval's order (interleaved across videos, as documents come). The same tiny random Hour-LLaVA checkpoint
(`hour_llava_testing.tiny_benchmarks.save_tiny_checkpoint`: paper geometry, tiny widths) answers them through
`hour_llava_lmms.model.HourLlava.generate_until` twice, in one process:

* reuse: requests grouped by video, each video decoded at 1 fps and encoded once (the run's default), and
* no reuse: `memory_cache_size=0`, every question decodes and encodes its video again (what a model wrapper that
  takes frames per request does).

A warm-up question on a short clip runs first. The table gives wall seconds, questions per second, vision-tower
runs (a forward hook on the tower's embeddings counts calls; one call per chunk of `vision_chunk_size` frames)
and whether both modes gave the same answers. JSON goes to benchmarks/results/eval_memory_reuse.json (atomically).
With the tiny model, decoding and the tower dominate; with the 7B decoder the generation share grows, so the
speed-up here is an upper bound of what reuse buys, while the decode and tower seconds saved are real.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from lmms_eval.api.instance import Instance

from dataset_builder.synthetic_video import write_video
from hour_llava_lmms.evaluation import write_atomically
from hour_llava_lmms.model import HourLlava
from hour_llava_testing.tiny_benchmarks import save_tiny_checkpoint

TASK, SPLIT = "synthetic_mc", "test"
GEN = {"max_new_tokens": 4, "temperature": 0, "do_sample": False, "until": ["\n\n"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--questions", type=int, default=10, help="questions per video")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(".cache/eval_memory_reuse"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/eval_memory_reuse.json"))
    return parser.parse_args(argv)


def prepare(workdir: Path, videos: int, minutes: float) -> tuple[str, list[str], str]:
    """Checkpoint, long videos and a warm-up clip, written once and reused by later runs."""
    checkpoint = workdir / "checkpoint"
    if not (checkpoint / "config.json").exists():
        save_tiny_checkpoint(str(checkpoint))
    paths = []
    for i in range(videos):
        path = workdir / f"video{i}_{minutes:g}min.mp4"
        if not path.exists():
            partial = path.with_suffix(".partial.mp4")
            write_video(partial, num_frames=int(minutes * 60 * 2), fps=2, width=160, height=96)
            partial.replace(path)
        paths.append(str(path))
    warmup = workdir / "warmup.mp4"
    if not warmup.exists():
        write_video(warmup, num_frames=8, fps=4, width=160, height=96)
    return str(checkpoint), paths, str(warmup)


def documents(videos: list[str], questions: int) -> list[dict]:
    """Questions interleaved across videos (document order), each with four lettered options."""
    docs = []
    for q in range(questions):
        for v, video in enumerate(videos):
            options = "\n".join(f"{c}. event {c.lower()} at minute {q + v}" for c in "ABCD")
            prompt = f"What happens at minute {q + v}?\n{options}\nAnswer with the option's letter directly."
            docs.append({"video": video, "prompt": prompt})
    return docs


def requests(docs: list[dict]) -> list[Instance]:
    visual = lambda doc: [doc["video"]]
    return [
        Instance(
            "generate_until",
            (doc["prompt"], dict(GEN), visual, i, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": i, "repeats": 1, "split": SPLIT},
        )
        for i, doc in enumerate(docs)
    ]


def measure(checkpoint: str, docs: list[dict], warmup: str, cache_size: int, batch_size: int) -> dict:
    """One mode: answers, wall seconds, questions/s and tower calls of `generate_until` over every question."""
    lm = HourLlava(pretrained=checkpoint, device="cpu", batch_size=batch_size, memory_cache_size=cache_size)
    lm.task_dict = {TASK: {SPLIT: documents([warmup], 1)}}
    lm.generate_until(requests(lm.task_dict[TASK][SPLIT]))  # warm-up: first-call costs out of the timing
    lm.task_dict = {TASK: {SPLIT: docs}}
    calls = []
    hook = lm.model.model.vision_tower.embeddings.register_forward_hook(lambda *a: calls.append(1))
    start = time.perf_counter()
    answers = lm.generate_until(requests(docs))
    seconds = time.perf_counter() - start
    hook.remove()
    stats = lm.memories.stats.as_dict()
    return {
        "memory_cache_size": cache_size,
        "questions": len(docs),
        "seconds": round(seconds, 3),
        "questions_per_second": round(len(docs) / seconds, 4),
        "tower_calls": len(calls),
        "videos_encoded": stats["encoded_from_frames"] - 1,  # minus the warm-up clip
        "encode_seconds": stats["encode_seconds"],
        "answers": answers,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint, videos, warmup = prepare(args.workdir, args.videos, args.minutes)
    docs = documents(videos, args.questions)
    rows = {
        "reuse": measure(checkpoint, docs, warmup, cache_size=2, batch_size=args.batch_size),
        "no reuse": measure(checkpoint, docs, warmup, cache_size=0, batch_size=args.batch_size),
    }
    same = rows["reuse"]["answers"] == rows["no reuse"]["answers"]
    speedup = rows["reuse"]["questions_per_second"] / rows["no reuse"]["questions_per_second"]
    print(f"{args.videos} videos x {args.questions} questions, {args.minutes:g} min each, batch {args.batch_size}")
    print(f"{'mode':<10}{'seconds':>10}{'questions/s':>14}{'videos encoded':>16}{'tower calls':>13}")
    for name, row in rows.items():
        print(
            f"{name:<10}{row['seconds']:>10.1f}{row['questions_per_second']:>14.3f}{row['videos_encoded']:>16}"
            f"{row['tower_calls']:>13}"
        )
    print(f"speed-up {speedup:.2f}x; same answers in both modes: {same}")
    result = {
        "benchmark": "eval_memory_reuse",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": {name: {k: v for k, v in row.items() if k != "answers"} for name, row in rows.items()},
        "speedup": round(speedup, 3),
        "same_answers": same,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "python": sys.version.split()[0],
    }
    write_atomically(str(args.output), json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
