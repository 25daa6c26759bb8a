"""Command line: build VideoMarathon-style QA for your own videos.

    python -m dataset_builder.construction --jobs jobs.jsonl --out out --backend openai \\
        --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct --workers 8
    python -m dataset_builder.construction --synthetic 2 --out out --backend transformers --model <folder> ...

`--jobs` is JSON lines, one video each: {"video": "path/under/its/root.mp4", "data_source": "lectures",
"duration": 1834.0, "descriptions": [{"start": 0, "end": 12.5, "text": "..."}, ...]}. The run prints the report
(done, failed, rows, cost); run the same command again to resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..videomarathon import QUESTION_TYPES, TOPICS
from .backends import Backend, OpenAIBackend, TransformersBackend
from .pipeline import PipelineConfig, run_pipeline
from .prompts import Prompts
from .stages import StageSettings, VideoJob


def read_jobs(path: str) -> list[VideoJob]:
    """VideoJobs from a JSON-lines file; a bad line is a ValueError naming it."""
    jobs = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                video = item["video"]
                if os.path.isabs(video) or ".." in video.split("/"):
                    raise ValueError(f"video {video!r} must be relative to its source's root")
                source = item.get("data_source") or item["source"]
                jobs.append(VideoJob(video, source, float(item["duration"]), list(item.get("descriptions") or [])))
            except (KeyError, ValueError, TypeError) as error:
                raise ValueError(f"{path}:{number}: {type(error).__name__}: {error}") from error
    return jobs


def make_backend(args: argparse.Namespace) -> Backend:
    if args.backend == "openai":
        return OpenAIBackend(
            args.base_url,
            args.model,
            cache_dir=args.cache_dir,
            concurrency=args.concurrency,
            requests_per_second=args.requests_per_second,
            timeout=args.timeout,
        )
    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    return TransformersBackend(args.model, cache_dir=args.cache_dir, batch_size=args.batch_size, load_kwargs=kwargs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dataset_builder.construction", description=__doc__.split("\n")[0])
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--jobs", help="JSON lines: one video per line (see the module docstring)")
    inputs.add_argument(
        "--synthetic", type=int, help="write this many synthetic videos under OUT/synthetic and use them"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--backend", choices=("openai", "transformers"), required=True)
    parser.add_argument("--model", required=True, help="model name (openai) or folder / Hub id (transformers)")
    parser.add_argument("--gguf-file", help="transformers: a GGUF file inside --model")
    parser.add_argument("--base-url", default="http://localhost:8000/v1")
    parser.add_argument("--cache-dir", help="completion cache (default OUT/cache)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests-per-second", type=float)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--topics", nargs="+", default=list(TOPICS), choices=TOPICS)
    parser.add_argument("--question-types", nargs="+", default=list(QUESTION_TYPES), choices=QUESTION_TYPES)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--prompts", help="JSON file overriding prompt templates / task definitions")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.cache_dir = args.cache_dir or os.path.join(args.out, "cache")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.synthetic:
        from ..synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
        from .synthetic import synthetic_jobs

        data = write_synthetic_videomarathon(os.path.join(args.out, "synthetic"), SyntheticSpec(args.synthetic))
        jobs = synthetic_jobs(data)
    else:
        jobs = read_jobs(args.jobs)
    config = PipelineConfig(
        out_dir=args.out,
        clip_seconds=args.clip_seconds,
        topics=tuple(args.topics),
        question_types=tuple(args.question_types),
        workers=args.workers,
        settings=StageSettings(max_attempts=args.max_attempts),
        progress=not args.no_progress,
    )
    report = run_pipeline(jobs, make_backend(args), config, prompts=Prompts.from_file(args.prompts))
    print(json.dumps(report, indent=2))
    return 0 if not report["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
