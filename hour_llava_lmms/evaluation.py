"""What evaluate.py reports: each benchmark's lmms-eval results and sample log, the journal, and the paper's Table 2,
turned into `summary.json` / `summary.md` and a plot of accuracy against video length.
"""

from __future__ import annotations

import glob
import json
import math
import os
import statistics
from collections import defaultdict

from .benchmarks import Benchmark
from .journal import OK, SKIPPED, STATS, read_entries
from .paper import GROUP_COLUMNS, compare, comparison_models, paper_numbers

LENGTH_BUCKETS = ((60, "<1 min"), (180, "1-3 min"), (600, "3-10 min"), (1800, "10-30 min"), (3600, "30-60 min"))
LONGEST_BUCKET = ">60 min"


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
    """(task, doc_id) -> the latest answer or skip entry for that request."""
    index = {}
    for entry in read_entries(journal_dir) if journal_dir and os.path.isdir(journal_dir) else []:
        if entry.get("status") in (OK, SKIPPED):
            index[(entry["task"], int(entry["doc_id"]))] = entry
    return index


def journal_stats(journal_dir: str | None, since: float) -> list[dict]:
    """The per-rank stats lines (requests, journal hits, skips, vision-tower runs) written after `since`."""
    entries = read_entries(journal_dir) if journal_dir and os.path.isdir(journal_dir) else []
    return [e for e in entries if e.get("status") == STATS and e.get("time", 0) >= since]


def length_bucket(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return next((label for edge, label in LENGTH_BUCKETS if seconds < edge), LONGEST_BUCKET)


def _mean(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def _buckets(rows: list[tuple[float, str | None, float | None, bool]], by_length: bool) -> dict:
    """{label: {"accuracy", "n", "skipped", "mean_seconds"}} by the benchmark's own group or by video length;
    skipped questions count (as wrong) in their bucket."""
    groups: dict[str, list[tuple[float, float | None, bool]]] = defaultdict(list)
    for correct, group, seconds, skipped in rows:
        label = length_bucket(seconds) if by_length else group
        if label is not None:
            groups[label].append((correct, seconds, skipped))
    out = {}
    for label, items in groups.items():
        lengths = [s for _, s, _ in items if s is not None]
        out[label] = {
            "accuracy": _mean([c for c, _, _ in items]),
            "n": len(items),
            "skipped": sum(skipped for _, _, skipped in items),
            "mean_seconds": statistics.fmean(lengths) if lengths else None,
        }
    return out


def summarize_benchmark(bench: Benchmark, results: dict, samples_path: str | None, journal: dict) -> dict:
    """Accuracy (percent) from lmms-eval's results, recomputed from the samples, skipped count and buckets.

    `lengths` buckets questions by the decoded length of their video; questions whose video was never read (skipped)
    have no length and are counted in `lengths_unknown` instead."""
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
    rows = []
    for sample in read_jsonl(samples_path):
        correct, group = bench.sample_correct(sample)
        entry = journal.get((bench.task, int(sample["doc_id"])), {})
        durations = entry.get("durations") or []
        rows.append((correct, group, sum(durations) if durations else None, entry.get("status") == SKIPPED))
    unknown = [row for row in rows if row[2] is None]
    summary |= {
        "n": len(rows),
        "skipped": sum(row[3] for row in rows),
        "accuracy_from_samples": _mean([row[0] for row in rows]),
        "groups": _buckets(rows, by_length=False),
        "lengths": _buckets(rows, by_length=True),
        "lengths_unknown": {"n": len(unknown), "skipped": sum(row[3] for row in unknown)},
    }
    return summary


def summarize(benches: list[Benchmark], runs: dict[str, dict], journal_dir: str | None, paper_model: str) -> dict:
    """The whole summary: per benchmark (its run's status and error, accuracy, buckets, skips, per-rank stats), each
    score next to the paper's Table 2 for `paper_model` and the baselines, with the difference.

    runs: {benchmark name: {"status": "ok" | "failed", "error": str | None, "results": dict, "samples": path | None,
    "started": time, "seconds": float, "returncode": int | None}}."""
    journal = journal_index(journal_dir)
    paper = paper_numbers()
    models = comparison_models(paper_model, paper["models"])
    out = {"paper_model": paper_model, "paper_models": models, "paper_source": paper["source"], "benchmarks": {}}
    for bench in benches:
        run = runs[bench.name]
        entry = summarize_benchmark(bench, run.get("results") or {}, run.get("samples"), journal)
        if entry["accuracy"] is None and run["status"] == "ok":
            run |= {"status": "failed", "error": run.get("error") or f"no {bench.metric} in lmms-eval's results"}
        entry |= {k: run.get(k) for k in ("status", "error", "returncode", "seconds")}
        entry["ranks"] = journal_stats(journal_dir, run["started"]) if run.get("started") else []
        in_paper = bench.name in paper["columns"]
        entry["paper"] = paper["models"][paper_model].get(bench.name) if in_paper else None
        entry["paper_seconds"] = bench.paper_seconds
        if entry["accuracy"] is not None and entry["paper"] is not None:
            entry["delta"] = entry["accuracy"] - entry["paper"]
        entry["compared"] = compare(entry["accuracy"], bench.name, paper["models"], models) if in_paper else {}
        for group, bucket in (entry.get("groups") or {}).items():
            column = GROUP_COLUMNS.get((bench.name, group))
            if column:
                bucket["compared"] = compare(bucket["accuracy"], column, paper["models"], models)
        out["benchmarks"][bench.name] = entry
    out["skipped_total"] = sum(b["skipped"] for b in out["benchmarks"].values())
    out["failed"] = {name: b["error"] for name, b in out["benchmarks"].items() if b["status"] != "ok"}
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _versus(compared: dict, models: list[str]) -> list[str]:
    """ "63.6 (-1.2)" per model: the paper's score and ours minus it."""
    cells = []
    for model in models:
        item = compared.get(model) or {}
        if item.get("paper") is None:
            cells.append("-")
        else:
            delta = item.get("delta")
            cells.append(f"{item['paper']:.1f} ({'n/a' if delta is None else f'{delta:+.1f}'})")
    return cells


def markdown(summary: dict) -> str:
    """The summary as markdown: one row per benchmark (and per Video-MME duration the paper reports) with the paper's
    numbers and our difference, then the failures, then one row per bucket."""
    models = summary["paper_models"]
    lines = [
        f"# Hour-LLaVA evaluation against the paper's Table 2 (asked for: {summary['paper_model']})",
        "",
        "Paper columns give the paper's score and, in brackets, ours minus it (Video-MME without subtitles).",
        "",
        "| benchmark | accuracy % | questions | skipped | " + " | ".join(models) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(models),
    ]
    for name, b in summary["benchmarks"].items():
        n = b["n"] if b["n"] is not None else "n/a"
        lines.append(f"| {name} | {_fmt(b['accuracy'])} | {n} | {b['skipped']} | " + " | ".join(
            _versus(b.get("compared") or {}, models)) + " |")  # fmt: skip
        for group, bucket in sorted((b.get("groups") or {}).items()):
            if bucket.get("compared"):
                lines.append(f"| {name} {group} | {_fmt(bucket['accuracy'])} | {bucket['n']} | {bucket['skipped']} | "
                             + " | ".join(_versus(bucket["compared"], models)) + " |")  # fmt: skip
    if summary["failed"]:
        lines += ["", "Failed benchmarks (no score):", ""]
        lines += [f"- {name}: {error}" for name, error in summary["failed"].items()]
    lines += ["", "| benchmark | bucket | accuracy % | questions | skipped | mean length s |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    for name, b in summary["benchmarks"].items():
        for kind in ("groups", "lengths"):
            for label, bucket in sorted((b.get(kind) or {}).items(), key=lambda kv: kv[1]["mean_seconds"] or 0):
                lines.append(
                    f"| {name} | {label} | {_fmt(bucket['accuracy'])} | {bucket['n']} | {bucket['skipped']} | "
                    f"{_fmt(bucket['mean_seconds'], 0)} |"
                )
        unknown = b.get("lengths_unknown") or {}
        if unknown.get("n"):
            lines.append(f"| {name} | length unknown (not read) | - | {unknown['n']} | {unknown['skipped']} | - |")
    lines += [
        "",
        f"Skipped requests in total: {summary['skipped_total']} (answered as empty, scored wrong).",
        "",
        f"Paper numbers: {summary['paper_source']}",
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
