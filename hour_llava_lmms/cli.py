"""Score an Hour-LLaVA checkpoint on TempCompass, LongVideoBench, Video-MME and LVBench with lmms-eval, in one go.

    .venv/bin/python evaluate.py --model work_dirs/hour-llava-7b --output eval/7b \\
        --benchmarks tempcompass,longvideobench,videomme,lvbench \\
        --data videomme=/data/videomme --data lvbench=/data/lvbench      # local copies; default: the Hub datasets

It runs lmms-eval's own CLI (a child process; `--num-processes N` runs it under `accelerate launch`) with our model
(`hour_llava`) and task configs, then writes next to lmms-eval's results and sample logs:
`summary.json` and `summary.md` (accuracy against the paper's Table 2, per benchmark and per duration bucket, and
how many requests were skipped because their video could not be read) and `accuracy_vs_length.svg`.

Resumable: answers are journaled question by question (`<output>/journal`) and lmms-eval's response cache is on
(`<output>/response_cache`), so rerunning the same command continues where it stopped. Exit status: 0 when every
benchmark produced a result, 1 when any did not (lmms-eval itself exits 0 on errors), 2 for bad arguments.

`evaluate.py` at the repository root is this command as a script; `hour-llava-evaluate` is its console script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from hour_llava_lmms import MODEL_ID
from hour_llava_lmms.benchmarks import PAPER_BENCHMARKS, benchmark
from hour_llava_lmms.evaluation import (
    latest_results,
    markdown,
    plot_svg,
    resolve_source,
    summarize,
    write_atomically,
    write_task_configs,
)


def parse_pairs(values: list[str], flag: str) -> dict[str, str]:
    """["name=value", ...] -> {name: value}, naming the flag in errors."""
    pairs = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not rest:
            raise SystemExit(f"{flag} {value!r}: expected BENCHMARK=VALUE")
        benchmark(name)
        pairs[name] = rest
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (pretrained=)")
    parser.add_argument("--output", required=True, help="output folder (results, logs, journal, summary)")
    parser.add_argument("--benchmarks", default=",".join(PAPER_BENCHMARKS), help="comma list (videomarathon too)")
    parser.add_argument("--data", action="append", help="BENCHMARK=folder|file|hub-id (repeatable)")
    parser.add_argument("--videos", action="append", help="BENCHMARK=video folder (default: inside --data)")
    parser.add_argument("--model-args", default="", help="extra hour_llava model args, k=v,k=v")
    parser.add_argument("--features-dir", help="memory-repository feature files (dataset_builder.extract_features)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-processes", type=int, default=1, help=">1: run under accelerate launch")
    parser.add_argument("--limit", help="lmms-eval --limit (testing only)")
    parser.add_argument("--force-simple", action="store_true", help="use the simple model class, not chat")
    parser.add_argument("--paper-model", default="Hour-LLaVA-7B", help="paper_table2.json row to compare with")
    parser.add_argument("--no-cache", action="store_true", help="no response cache and no journal: start over")
    return parser.parse_args(argv)


def model_args(args: argparse.Namespace, journal_dir: str | None) -> str:
    """lmms-eval's --model_args. lmms-eval runs in the output folder, so a local checkpoint folder goes by its
    absolute path (a relative one would be taken for a Hub id there); a Hub id stays as it is."""
    model = os.path.abspath(args.model) if os.path.isdir(args.model) else args.model
    parts = [f"pretrained={model}"]
    if journal_dir:
        parts.append(f"journal_dir={journal_dir}")
    if args.features_dir:
        parts.append(f"features_dir={os.path.abspath(args.features_dir)}")
    if args.model_args:
        parts.append(args.model_args)
    return ",".join(parts)


def lmms_eval_command(args: argparse.Namespace, tasks: list[str], tasks_dir: str, out: str) -> list[str]:
    """The child command: our launcher (lmms-eval's CLI after an environment check), maybe under accelerate."""
    journal = None if args.no_cache else os.path.join(out, "journal")
    cli = [
        "--model", MODEL_ID,
        "--model_args", model_args(args, journal),
        "--tasks", ",".join(tasks),
        "--include_path", tasks_dir,
        "--batch_size", str(args.batch_size),
        "--output_path", os.path.join(out, "lmms_eval"),
        "--log_samples",
    ]  # fmt: skip
    if not args.no_cache:
        cli += ["--use_cache", os.path.join(out, "response_cache")]
    if args.limit:
        cli += ["--limit", args.limit]
    if args.force_simple:
        cli.append("--force_simple")
    if args.num_processes > 1:
        accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
        return [accelerate, "launch", "--num_processes", str(args.num_processes), "-m", "hour_llava_lmms.launch", *cli]
    return [sys.executable, "-m", "hour_llava_lmms.launch", *cli]


def child_env(video_env: dict[str, str], run_info: str) -> dict[str, str]:
    """The parent's environment without the repository root on PYTHONPATH (its evaluate.py script would shadow the
    `evaluate` library lmms-eval imports), plus video folders and the run-info path."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    python_path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != here]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env | video_env | {"HOUR_LLAVA_RUN_INFO": run_info}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benches = [benchmark(name.strip()) for name in args.benchmarks.split(",") if name.strip()]
    data, videos = parse_pairs(args.data, "--data"), parse_pairs(args.videos, "--videos")
    out = os.path.abspath(args.output)
    sources = {b: resolve_source(b, data.get(b.name), videos.get(b.name)) for b in benches}
    tasks_dir = os.path.join(out, "tasks")
    video_env = write_task_configs(sources, tasks_dir)
    run_info = os.path.join(out, "run_info.json")
    command = lmms_eval_command(args, [b.task for b in benches], tasks_dir, out)
    print("running:", " ".join(command), flush=True)
    start = time.time()
    # The child runs in the output folder: the repository root (with evaluate.py) is not on its sys.path.
    returncode = subprocess.run(command, cwd=out, env=child_env(video_env, run_info)).returncode
    results, samples = latest_results(os.path.join(out, "lmms_eval"), since=start)
    summary = summarize(benches, results, samples, None if args.no_cache else os.path.join(out, "journal"),
                        args.paper_model)  # fmt: skip
    summary |= {"model": args.model, "lmms_eval_returncode": returncode, "seconds": round(time.time() - start, 1)}
    write_atomically(os.path.join(out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    write_atomically(os.path.join(out, "summary.md"), markdown(summary))
    write_atomically(os.path.join(out, "accuracy_vs_length.svg"), plot_svg(summary))
    print(markdown(summary))
    missing = [name for name, b in summary["benchmarks"].items() if b["accuracy"] is None]
    if missing or not results:
        print(f"evaluate.py: no result for {', '.join(missing) or 'any benchmark'} (lmms-eval exit {returncode}); "
              f"see the lmms-eval output above", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
