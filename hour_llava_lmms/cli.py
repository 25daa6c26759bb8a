"""Score an Hour-LLaVA checkpoint on TempCompass, LongVideoBench, Video-MME and LVBench with lmms-eval, in one go.

    .venv/bin/python evaluate.py --model work_dirs/hour-llava-7b --output eval/7b \\
        --benchmarks tempcompass,longvideobench,videomme,lvbench \\
        --data videomme=/data/videomme --data lvbench=/data/lvbench      # local copies; default: the Hub datasets

For each benchmark on its own it runs lmms-eval's own CLI (a child process; `--num-processes N` runs N of them under
`accelerate launch`, on CPU too) with our model (`hour_llava`) and task configs, the data named through
`HOUR_LLAVA_<BENCHMARK>_DATA` / `_VIDEOS` (what the plain CLI reads too). A benchmark whose data is missing or whose
run fails is reported as failed, with the reason, and the others still run. Next to lmms-eval's results and sample
logs (`<output>/lmms_eval/<benchmark>/`) it writes `summary.json` and `summary.md` (accuracy against the paper's
Table 2 with the difference, per benchmark and per duration bucket, skipped requests, vision-tower runs per rank)
and `accuracy_vs_length.svg`.

A benchmark defined outside the package runs with `--tasks-dir DIR`: DIR holds its task yaml(s) and a
`hour_llava_benchmarks.yaml` describing it (see `hour_llava_lmms.benchmarks`).

Resumable: answers are journaled question by question (`<output>/journal`, one file per rank) and, with one process,
lmms-eval's response cache is on (`<output>/response_cache`), so rerunning the same command continues where it
stopped. Ctrl-C / SIGTERM stops the lmms-eval processes too, and they end by themselves if evaluate.py is killed.
Exit status: 0 when every benchmark produced a result, 1 when any did not (lmms-eval itself exits 0 on errors), 2 for
bad arguments, 128 + signal when interrupted.

`evaluate.py` at the repository root is this command as a script; `hour-llava-evaluate` is its console script.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from hour_llava_lmms import MODEL_ID
from hour_llava_lmms.benchmarks import BENCHMARKS, PAPER_BENCHMARKS, Benchmark, benchmark, load_benchmarks
from hour_llava_lmms.data_sources import resolve_source
from hour_llava_lmms.evaluation import latest_results, markdown, plot_svg, summarize, write_atomically
from hour_llava_lmms.paper import comparison_models, paper_numbers
from hour_llava_lmms.process_guard import die_with_parent, stop_group

ERROR_LINE = re.compile(r"(Error|Exception|error:|Traceback|Tasks not found)")
TAIL_LINES = 200


def parse_pairs(values: list[str], flag: str, known: dict[str, Benchmark]) -> dict[str, str]:
    """["name=value", ...] -> {name: value}, naming the flag in errors."""
    pairs = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not rest:
            raise ValueError(f"{flag} {value!r}: expected BENCHMARK=VALUE")
        benchmark(name, known)
        pairs[name] = rest
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (pretrained=)")
    parser.add_argument("--output", required=True, help="output folder (results, logs, journal, summary)")
    parser.add_argument("--benchmarks", default=",".join(PAPER_BENCHMARKS), help="comma list (videomarathon too)")
    parser.add_argument("--data", action="append", help="BENCHMARK=folder|file|hub-id (repeatable)")
    parser.add_argument("--videos", action="append", help="BENCHMARK=video folder (default: inside --data)")
    parser.add_argument("--tasks-dir", action="append", help="a folder of task yamls + hour_llava_benchmarks.yaml")
    parser.add_argument("--model-args", default="", help="extra hour_llava model args, k=v,k=v")
    parser.add_argument("--features-dir", help="memory-repository feature files (dataset_builder.extract_features)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-processes", type=int, default=1, help=">1: that many processes (accelerate launch)")
    parser.add_argument("--limit", help="lmms-eval --limit (testing only)")
    parser.add_argument("--force-simple", action="store_true", help="use the simple model class, not chat")
    parser.add_argument("--paper-model", default="Hour-LLaVA-7B", help="the Table 2 row to compare with first")
    parser.add_argument("--no-cache", action="store_true", help="no response cache and no journal: start over")
    args = parser.parse_args(argv)
    if args.num_processes < 1:
        parser.error("--num-processes must be at least 1")
    return args


def known_benchmarks(tasks_dirs: list[str] | None) -> dict[str, Benchmark]:
    """The package's benchmarks plus those defined in each --tasks-dir."""
    known = dict(BENCHMARKS)
    for folder in tasks_dirs or []:
        known |= load_benchmarks(folder)
    return known


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


def lmms_eval_command(args: argparse.Namespace, bench: Benchmark, out: str) -> list[str]:
    """The child command for one benchmark: our launcher (lmms-eval's CLI after an environment check), under
    `accelerate launch` for several processes. The response cache is used with one process only: with several,
    it would call the model on some ranks and not on others (see `hour_llava_lmms.ranks`); the journal resumes."""
    journal = None if args.no_cache else os.path.join(out, "journal")
    cli = [
        "--model", MODEL_ID,
        "--model_args", model_args(args, journal),
        "--tasks", bench.task,
        "--include_path", bench.tasks_dir,
        "--batch_size", str(args.batch_size),
        "--output_path", os.path.join(out, "lmms_eval", bench.name),
        "--log_samples",
    ]  # fmt: skip
    if not args.no_cache and args.num_processes == 1:
        cli += ["--use_cache", os.path.join(out, "response_cache")]
    if args.limit:
        cli += ["--limit", args.limit]
    if args.force_simple:
        cli.append("--force_simple")
    if args.num_processes > 1:
        accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
        launch = [accelerate, "launch", "--multi_gpu", "--num_processes", str(args.num_processes)]
        return [*launch, "--main_process_port", "0", "-m", "hour_llava_lmms.launch", *cli]
    return [sys.executable, "-m", "hour_llava_lmms.launch", *cli]


def child_env(data_env: dict[str, str], run_info: str, num_processes: int) -> dict[str, str]:
    """The parent's environment without the repository root on PYTHONPATH (its evaluate.py script would shadow the
    `evaluate` library lmms-eval imports), plus the benchmark's data and video settings, the run-info path, and for
    several processes without a GPU ACCELERATE_USE_CPU (accelerate's multi-process launcher on the CPU)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    python_path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != here]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if num_processes > 1:
        import torch

        if not torch.cuda.is_available():
            env.setdefault("ACCELERATE_USE_CPU", "true")
    return env | data_env | {"HOUR_LLAVA_RUN_INFO": run_info, "HOUR_LLAVA_DIE_WITH_PARENT": "1"}


def data_env(bench: Benchmark, data: str | None, videos: str | None) -> dict[str, str]:
    """The benchmark's HOUR_LLAVA_<BENCHMARK>_DATA / _VIDEOS for the child, checked here first (a missing folder or
    annotation file raises, naming the benchmark)."""
    source = resolve_source(bench, data, videos)
    env = {bench.data_env: os.pathsep.join(source.data_files) if source.data_files else source.dataset_path}
    if source.video_root:
        env[bench.video_env] = source.video_root
    return env


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_child(command: list[str], cwd: str, env: dict[str, str], log_path: str) -> tuple[int, list[str]]:
    """Run the child in its own session (process group) that dies with us; echo and log its output. SIGINT / SIGTERM
    stop the whole group and raise Interrupted. Returns (exit status, its last lines)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=die_with_parent, bufsize=1, text=True, errors="replace",
    )  # fmt: skip
    received: list[int] = []

    def forward(signum, frame):
        """First signal: SIGTERM to the group (the output is still read while it stops); a second one: SIGKILL."""
        received.append(signum)
        try:
            os.killpg(process.pid, signal.SIGTERM if len(received) == 1 else signal.SIGKILL)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            for line in process.stdout:
                sys.stdout.write(line)
                log.write(line)
                tail.append(line.rstrip("\n"))
        returncode = process.wait()
    finally:
        if process.poll() is None or received:
            stop_group(process)  # whatever is left of the group: SIGTERM, then SIGKILL after a grace period
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Interrupted(received[0])
    return returncode, list(tail)


def failure_from_output(returncode: int, tail: list[str]) -> str:
    """Why a run wrote no results: the exit status and the last error line lmms-eval printed."""
    errors = [line.strip() for line in tail if ERROR_LINE.search(line)]
    last = errors[-1] if errors else (tail[-1].strip() if tail else "no output")
    return f"lmms-eval exited {returncode} without results; last error: {last[-400:]}"


def run_benchmark(args: argparse.Namespace, bench: Benchmark, data: str | None, videos: str | None, out: str) -> dict:
    """One benchmark end to end: check its data, run lmms-eval, find its results. Never raises for a failed run."""
    run = {"status": "failed", "error": None, "results": {}, "samples": None, "returncode": None}
    started = time.time()
    run["started"] = started
    try:
        env = data_env(bench, data, videos)
    except (OSError, ValueError) as error:
        run["error"] = f"data: {error}"
        return run
    command = lmms_eval_command(args, bench, out)
    print(f"[{bench.name}] running:", " ".join(command), flush=True)
    returncode, tail = run_child(
        command, out, child_env(env, os.path.join(out, "run_info.json"), args.num_processes),
        os.path.join(out, "logs", f"{bench.name}.log"),
    )  # fmt: skip
    results, samples = latest_results(os.path.join(out, "lmms_eval", bench.name), since=started)
    run |= {"returncode": returncode, "seconds": round(time.time() - started, 1), "results": results}
    run["samples"] = samples.get(bench.task)
    if results:
        run["status"] = "ok"
    else:
        run["error"] = failure_from_output(returncode, tail)
    return run


def write_summary(benches: list[Benchmark], runs: dict, args: argparse.Namespace, out: str, start: float) -> dict:
    journal = None if args.no_cache else os.path.join(out, "journal")
    summary = summarize(benches, runs, journal, args.paper_model)
    summary |= {"model": args.model, "num_processes": args.num_processes, "seconds": round(time.time() - start, 1)}
    write_atomically(os.path.join(out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    write_atomically(os.path.join(out, "summary.md"), markdown(summary))
    write_atomically(os.path.join(out, "accuracy_vs_length.svg"), plot_svg(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        known = known_benchmarks(args.tasks_dir)
        benches = [benchmark(name.strip(), known) for name in args.benchmarks.split(",") if name.strip()]
        comparison_models(args.paper_model, paper_numbers()["models"])
        data, videos = parse_pairs(args.data, "--data", known), parse_pairs(args.videos, "--videos", known)
    except (OSError, ValueError) as error:
        print(f"evaluate.py: {error}", file=sys.stderr)
        return 2
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    runs: dict[str, dict] = {}
    interrupted = None
    for bench in benches:
        try:
            runs[bench.name] = run_benchmark(args, bench, data.get(bench.name), videos.get(bench.name), out)
        except Interrupted as stop:
            interrupted = stop
            break
    for bench in benches:
        runs.setdefault(bench.name, {"status": "failed", "error": f"not run: interrupted by {interrupted}"})
    summary = write_summary(benches, runs, args, out, start)
    print(markdown(summary))
    if interrupted is not None:
        print(f"evaluate.py: interrupted by {interrupted}; rerun the same command to continue", file=sys.stderr)
        return 128 + interrupted.signum
    if summary["failed"]:
        for name, error in summary["failed"].items():
            print(f"evaluate.py: {name} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
