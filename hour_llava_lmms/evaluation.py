"""What evaluate.py does, as functions: task configs for the chosen data, the lmms-eval command, and the summary.

Data for a benchmark is a local folder (lmms-eval's own layout of that benchmark: annotation files plus the video
folder, see `Benchmark.video_subdir`), a single annotation file, or a Hub dataset id. For each benchmark a task
yaml is written to `<output>/tasks/` that includes our task config and points it at the data; videos are found
through `HOUR_LLAVA_<BENCHMARK>_VIDEOS`, set for the lmms-eval process.
"""

from __future__ import annotations

import glob
import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass

import yaml

from .benchmarks import PAPER_BENCHMARKS, Benchmark, paper_numbers
from .journal import OK, read_entries

LENGTH_BUCKETS = ((60, "<1 min"), (180, "1-3 min"), (600, "3-10 min"), (1800, "10-30 min"), (3600, "30-60 min"))
LONGEST_BUCKET = ">60 min"
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


@dataclass
class DataSource:
    """Where one benchmark's annotations and videos are."""

    dataset_path: str
    data_files: list[str] | None
    video_root: str | None


# ---------------------------------------------------------------------------------------------------------------
# Data and task configs
# ---------------------------------------------------------------------------------------------------------------
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
        f"pass the file itself as --data {bench.name}=FILE"
    )


def resolve_source(bench: Benchmark, data: str | None, videos: str | None) -> DataSource:
    """A folder, a file or a Hub id (default: the benchmark's Hub dataset) -> DataSource."""
    if data is None or (not os.path.exists(data) and data.count("/") == 1 and not data.startswith((".", "/"))):
        return DataSource(data or bench.hub_id, None, videos)
    if not os.path.exists(data):
        raise FileNotFoundError(f"--data {bench.name}={data}: no such file or folder (nor a Hub id owner/name)")
    data = os.path.abspath(data)
    folder = data if os.path.isdir(data) else os.path.dirname(data)
    files = annotation_files(bench, data) if os.path.isdir(data) else [data]
    kinds = {BUILDERS.get(os.path.splitext(path)[1]) for path in files}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(f"{bench.name}: annotation files {files} mix formats or are not parquet/json/csv/arrow")
    root = os.path.abspath(videos) if videos else os.path.join(folder, bench.video_subdir)
    return DataSource(kinds.pop(), files, root)


def task_config(bench: Benchmark, source: DataSource) -> dict:
    """A task yaml (as a dict) that includes our config for the benchmark and points it at the data."""
    config: dict = {"include": bench.yaml_path, "task": bench.task}
    if source.data_files is not None:
        config |= {
            "dataset_path": source.dataset_path,
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {bench.split: source.data_files}},
        }
    elif source.dataset_path != bench.hub_id:
        config |= {"dataset_path": source.dataset_path, "dataset_kwargs": {"token": True}}
    return config


def write_task_configs(sources: dict[Benchmark, DataSource], tasks_dir: str) -> dict[str, str]:
    """One yaml per benchmark in `tasks_dir` (nothing else there, so no stale task is indexed); returns the video
    environment variables the lmms-eval process needs."""
    os.makedirs(tasks_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(tasks_dir, "*.yaml")):
        os.remove(stale)
    env = {}
    for bench, source in sources.items():
        write_atomically(os.path.join(tasks_dir, f"{bench.task}.yaml"), yaml.safe_dump(task_config(bench, source)))
        if source.video_root:
            env[bench.video_env] = source.video_root
    return env


def write_atomically(path: str, text: str) -> None:
    """Write text to a temporary file in the same folder, then rename it over `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------
def latest_results(output_path: str, since: float = 0.0) -> tuple[dict, dict[str, str]]:
    """The newest lmms-eval results.json under `output_path` written after `since`, and its sample files by task."""
    candidates = [
        path
        for path in glob.glob(os.path.join(output_path, "**", "*_results.json"), recursive=True)
        if os.path.getmtime(path) >= since
    ]
    if not candidates:
        return {}, {}
    path = max(candidates, key=os.path.getmtime)
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    stamp = os.path.basename(path)[: -len("_results.json")]
    samples = {}
    for sample_path in glob.glob(os.path.join(os.path.dirname(path), f"{stamp}_samples_*.jsonl")):
        samples[os.path.basename(sample_path)[len(stamp) + len("_samples_") : -len(".jsonl")]] = sample_path
    return results, samples


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def journal_index(journal_dir: str | None) -> dict[tuple[str, int], dict]:
    """(task, doc_id) -> the latest journal entry for that request."""
    index = {}
    for entry in read_entries(journal_dir) if journal_dir and os.path.isdir(journal_dir) else []:
        index[(entry["task"], int(entry["doc_id"]))] = entry
    return index


def length_bucket(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return next((label for edge, label in LENGTH_BUCKETS if seconds < edge), LONGEST_BUCKET)


def _mean(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def _buckets(rows: list[tuple[float, str | None, float | None]], by_length: bool) -> dict:
    """{label: {"accuracy", "n", "mean_seconds"}} by the benchmark's own group or by video length."""
    groups: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for correct, group, seconds in rows:
        label = length_bucket(seconds) if by_length else group
        if label is not None:
            groups[label].append((correct, seconds))
    out = {}
    for label, items in groups.items():
        lengths = [s for _, s in items if s is not None]
        out[label] = {
            "accuracy": _mean([c for c, _ in items]),
            "n": len(items),
            "mean_seconds": statistics.fmean(lengths) if lengths else None,
        }
    return out


def summarize_benchmark(bench: Benchmark, results: dict, samples_path: str | None, journal: dict) -> dict:
    """Accuracy (percent) from lmms-eval's results, recomputed from the samples, skipped count and buckets."""
    metrics = results.get("results", {}).get(bench.task, {})
    value = metrics.get(f"{bench.metric},none")
    summary = {
        "task": bench.task,
        "metric": bench.metric,
        "accuracy": None if value is None else float(value) * (100.0 / bench.scale),
        "n": None,
        "skipped": 0,
    }
    if not samples_path:
        return summary
    rows, skipped = [], 0
    for sample in read_jsonl(samples_path):
        correct, group = bench.sample_correct(sample)
        entry = journal.get((bench.task, int(sample["doc_id"])), {})
        skipped += entry.get("status") not in (None, OK)
        durations = entry.get("durations") or []
        rows.append((correct, group, sum(durations) if durations else None))
    summary |= {
        "n": len(rows),
        "skipped": skipped,
        "accuracy_from_samples": _mean([c for c, _, _ in rows]),
        "groups": _buckets(rows, by_length=False),
        "lengths": _buckets(rows, by_length=True),
    }
    return summary


def summarize(benches: list[Benchmark], results: dict, samples: dict, journal_dir: str | None, model: str) -> dict:
    """The whole summary: per benchmark, next to the paper's Table 2 numbers for `model`."""
    journal = journal_index(journal_dir)
    paper = paper_numbers()
    reference = paper["models"].get(model, {})
    out = {"paper_model": model, "paper_status": paper.get("status"), "benchmarks": {}}
    for bench in benches:
        entry = summarize_benchmark(bench, results, samples.get(bench.task), journal)
        entry["paper"] = reference.get(bench.name) if bench.name in PAPER_BENCHMARKS else None
        entry["paper_seconds"] = bench.paper_seconds
        if entry["accuracy"] is not None and entry["paper"] is not None:
            entry["delta"] = entry["accuracy"] - entry["paper"]
        out["benchmarks"][bench.name] = entry
    out["skipped_total"] = sum(b["skipped"] for b in out["benchmarks"].values())
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    """The summary as markdown: one row per benchmark, then one per bucket."""
    lines = [
        f"# Hour-LLaVA evaluation (paper column: {summary['paper_model']}, Table 2)",
        "",
        "| benchmark | accuracy % | paper % | delta | questions | skipped (unreadable video) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, b in summary["benchmarks"].items():
        lines.append(
            f"| {name} | {_fmt(b['accuracy'])} | {_fmt(b['paper'])} | {_fmt(b.get('delta'))} | "
            f"{b['n'] if b['n'] is not None else 'n/a'} | {b['skipped']} |"
        )
    lines += ["", "| benchmark | bucket | accuracy % | questions | mean length s |", "|---|---|---:|---:|---:|"]
    for name, b in summary["benchmarks"].items():
        for kind in ("groups", "lengths"):
            for label, bucket in sorted((b.get(kind) or {}).items(), key=lambda kv: kv[1]["mean_seconds"] or 0):
                lines.append(
                    f"| {name} | {label} | {_fmt(bucket['accuracy'])} | {bucket['n']} | "
                    f"{_fmt(bucket['mean_seconds'], 0)} |"
                )
    lines += [
        "",
        f"Skipped requests in total: {summary['skipped_total']}.",
        "",
        f"Paper numbers: {summary['paper_status']}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Plot (plain SVG: matplotlib is not a dependency)
# ---------------------------------------------------------------------------------------------------------------
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def plot_svg(summary: dict, width: int = 640, height: int = 400) -> str:
    """Accuracy against video length (log scale), one line per benchmark from its length buckets; the paper's
    number as a hollow marker at the benchmark's average length."""
    left, right, top, bottom = 60, 160, 30, 50
    series = []
    for i, (name, b) in enumerate(summary["benchmarks"].items()):
        points = sorted(
            (v["mean_seconds"], v["accuracy"])
            for v in (b.get("lengths") or {}).values()
            if v["mean_seconds"] and v["accuracy"] is not None
        )
        series.append((name, COLOURS[i % len(COLOURS)], points, b.get("paper"), b.get("paper_seconds")))
    xs = [x for _, _, pts, _, _ in series for x, _ in pts] + [s for *_, p, s in series if p is not None and s]
    lo, hi = math.log10(max(1.0, min(xs, default=1.0))), math.log10(max(xs, default=3600.0))
    lo, hi = math.floor(lo), max(math.ceil(hi), math.floor(lo) + 1)

    def sx(seconds: float) -> float:
        return left + (math.log10(max(seconds, 1.0)) - lo) / (hi - lo) * (width - left - right)

    def sy(accuracy: float) -> float:
        return top + (1 - accuracy / 100.0) * (height - top - bottom)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18">Accuracy against video length</text>',
    ]
    for acc in range(0, 101, 20):
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(acc):.1f}" y2="{sy(acc):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{sy(acc) + 4:.1f}" text-anchor="end">{acc}</text>')
    for power in range(lo, hi + 1):
        x = sx(10**power)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{10**power} s</text>')
    out.append(f'<text x="{(width - right + left) / 2}" y="{height - 10}" text-anchor="middle">video length</text>')
    out.append(f'<text x="14" y="{top + 10}">accuracy %</text>')
    for i, (name, colour, points, paper, paper_seconds) in enumerate(series):
        if len(points) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in points:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}"/>')
        if paper is not None and paper_seconds:
            out.append(
                f'<circle cx="{sx(paper_seconds):.1f}" cy="{sy(paper):.1f}" r="6" fill="none" stroke="{colour}" '
                'stroke-width="2"/>'
            )
        y = top + 16 * i
        out.append(f'<rect x="{width - right + 12}" y="{y}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{width - right + 28}" y="{y + 10}">{name}</text>')
    out.append(f'<text x="{width - right + 12}" y="{top + 16 * len(series) + 14}">o paper (avg length)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
