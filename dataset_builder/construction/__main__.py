"""Command line: build VideoMarathon-style QA for your own videos.

    python -m dataset_builder.construction --jobs jobs.jsonl --out out --backend openai \\
        --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct --workers 8
    python -m dataset_builder.construction --jobs jobs.jsonl --video-root videos --out out --backend openai \
        --model Qwen/Qwen2.5-7B-Instruct --captioner vision --vlm-model Qwen/Qwen2-VL-7B-Instruct --frames-per-clip 4
    python -m dataset_builder.construction --synthetic 2 --out out --backend transformers --model <folder> ...

`--jobs` is JSON lines, one video each: {"video": "path/under/its/root.mp4", "data_source": "lectures",
"duration": 1834.0, "descriptions": [{"start": 0, "end": 12.5, "text": "..."}, ...]}. "duration" may be left
out when --video-root is given (it is probed from `<video-root>/<data_source>/<video>`); "descriptions" are for
the text captioner (`--captioner text`, the default), the vision captioner reads the frames instead. The run
prints the report (done, failed, rows, cost); run the same command again to resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..videomarathon import QUESTION_TYPES, TOPICS
from .backends import Backend, OpenAIBackend, TransformersBackend, TransformersVLMBackend
from .pipeline import PipelineConfig, run_pipeline
from .prompts import Prompts
from .stages import StageSettings, TextCaptioner, VideoJob
from .vision import VisionCaptioner


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
                duration = None if item.get("duration") is None else float(item["duration"])
                jobs.append(VideoJob(video, source, duration, list(item.get("descriptions") or [])))
            except (KeyError, ValueError, TypeError) as error:
                raise ValueError(f"{path}:{number}: {type(error).__name__}: {error}") from error
    return jobs


def make_backend(args: argparse.Namespace, vision: bool = False) -> Backend:
    """The LLM backend, or with `vision` the captioner's VLM backend (--vlm-* options, defaulting to the LLM's)."""
    kind = (args.vlm_backend or args.backend) if vision else args.backend
    model = (args.vlm_model or args.model) if vision else args.model
    if kind == "openai":
        return OpenAIBackend(
            (args.vlm_base_url or args.base_url) if vision else args.base_url,
            model,
            cache_dir=args.cache_dir,
            concurrency=args.concurrency,
            requests_per_second=args.requests_per_second,
            timeout=args.timeout,
        )
    if vision:
        kwargs = {"trust_remote_code": True} if args.trust_remote_code else {}
        return TransformersVLMBackend(model, cache_dir=args.cache_dir, batch_size=args.batch_size, load_kwargs=kwargs)
    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    return TransformersBackend(
        model, cache_dir=args.cache_dir, batch_size=args.batch_size, load_kwargs=kwargs, constrained=args.constrained
    )


def make_captioner(args: argparse.Namespace, llm: Backend):
    if args.captioner == "text":
        return TextCaptioner(llm)
    vlm = make_backend(args, vision=True)
    return VisionCaptioner(
        vlm, frames_per_clip=args.frames_per_clip, max_side=args.max_side, batch_clips=args.batch_size
    )


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
    parser.add_argument(
        "--constrained",
        action="store_true",
        help="transformers: write the JSON skeleton and let the model fill only its values (for small models)",
    )
    parser.add_argument("--video-root", help="folder with one sub-folder of videos per data_source")
    parser.add_argument("--captioner", choices=("text", "vision"), default="text")
    parser.add_argument("--vlm-backend", choices=("openai", "transformers"), help="default: --backend")
    parser.add_argument("--vlm-model", help="the captioner's vision-language model (default: --model)")
    parser.add_argument("--vlm-base-url", help="default: --base-url")
    parser.add_argument("--trust-remote-code", action="store_true", help="transformers VLM with remote code")
    parser.add_argument("--frames-per-clip", type=int, default=4)
    parser.add_argument("--max-side", type=int, default=448, help="frames' longer side in pixels")
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
        args.video_root = args.video_root or data.video_root
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
        video_root=args.video_root,
    )
    llm = make_backend(args)
    report = run_pipeline(jobs, llm, config, make_captioner(args, llm), Prompts.from_file(args.prompts))
    print(json.dumps(report, indent=2))
    return 0 if not report["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
