"""End to end on the CPU: lmms-eval's own CLI and evaluate.py score a tiny Hour-LLaVA checkpoint on tiny local
copies of TempCompass, LongVideoBench, Video-MME, LVBench and the held-out VideoMarathon split (their real column
schemas, real videos written here; one Video-MME video missing, one LVBench video corrupt), in subprocesses.

The plain `lmms-eval` CLI finds the local copies through `HOUR_LLAVA_<BENCHMARK>_DATA` alone (no override file, no
Hub). Each metric lmms-eval reports is recomputed here from the logged answers and the data's own answer keys, the
requests of the two unreadable videos must be exactly the skipped ones (empty answers, counted), and evaluate.py's
simple-mode run must give the chat-mode CLI run's answers and scores.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from hour_llava_lmms import TASKS_DIR, cli
from hour_llava_lmms.benchmarks import BENCHMARKS, PAPER_BENCHMARKS
from hour_llava_testing.tiny_benchmarks import LAYOUTS, save_tiny_checkpoint, write_benchmark_copy

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LETTERS = {"A", "B", "C", "D"}
BROKEN = {"videomme": {"missing": 1}, "lvbench": {"corrupt": 1}}
QUESTIONS_PER_VIDEO = 2


def gold(name: str, row: dict) -> str:
    """The answer letter of a row, from each benchmark's own answer field."""
    if name == "longvideobench":
        return chr(ord("A") + row["correct_choice"])
    return row["answer"][0]  # TempCompass keys are "A. moving fast"; the others are letters


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_cli")
    checkpoint = save_tiny_checkpoint(str(root / "checkpoint"))
    copies = {
        name: write_benchmark_copy(str(root / "data"), name, num_videos=2, **BROKEN.get(name, {}))
        for name in (*PAPER_BENCHMARKS, "videomarathon")
    }
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HOME": str(root / "hf_home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env |= {"TOKENIZERS_PARALLELISM": "false", "OPENAI_API_KEY": ""}
    return {"root": root, "checkpoint": checkpoint, "copies": copies, "env": env}


def run(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    process = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, f"rc={process.returncode}\n{process.stdout[-3000:]}\n{process.stderr[-6000:]}"
    return process


def results_and_samples(output: Path) -> tuple[dict, dict[str, list[dict]]]:
    """lmms-eval's results and sample logs under `output`: one results file per run (evaluate.py runs each benchmark
    on its own), their per-task results merged."""
    paths = glob.glob(str(output / "**" / "*_results.json"), recursive=True)
    assert paths, f"no results under {output}"
    runs = [json.loads(Path(path).read_text()) for path in paths]
    results = {**runs[0], "results": {task: v for run in runs for task, v in run["results"].items()}}
    samples = {}
    for path in glob.glob(str(output / "**" / "*_samples_*.jsonl"), recursive=True):
        task = path.rsplit("_samples_", 1)[1][: -len(".jsonl")]
        samples[task] = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return results, samples


def check_benchmark(name: str, copy: dict, results: dict, samples: list[dict]) -> dict[int, str]:
    """Recompute the benchmark's metric from the logged answers; check skips. Returns {doc_id: answer}."""
    bench = BENCHMARKS[name]
    rows = [row for row in copy["rows"] if name != "videomarathon" or row["options"]]  # its task keeps MC rows
    unreadable = set(copy["missing"]) | set(copy["corrupt"])
    answers = {s["doc_id"]: s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]
               for s in samples}  # fmt: skip
    assert sorted(answers) == list(range(len(rows)))
    for doc_id, answer in answers.items():
        if LAYOUTS[name][3](rows[doc_id]) in unreadable:  # the row's video file
            assert answer == "", (name, doc_id, answer)
        else:
            assert answer in LETTERS, (name, doc_id, answer)  # bare letters, the tiny model's head writes letters
    expected = sum(answers[i] == gold(name, row) for i, row in enumerate(rows)) / len(rows)
    reported = results["results"][bench.task][f"{bench.metric},none"]
    assert reported == pytest.approx(expected * bench.scale), (name, reported, expected)
    return answers


@pytest.mark.slow
def test_lmms_eval_cli_and_evaluate_py_score_the_four_benchmarks(setup):
    root, env = setup["root"], setup["env"]
    benches = [BENCHMARKS[name] for name in PAPER_BENCHMARKS]

    # 1. lmms-eval's console script, chat mode (its default), our task configs as shipped; the local copies are named
    #    by HOUR_LLAVA_<BENCHMARK>_DATA only (videos default to the copy's own video folder).
    cli_out = root / "cli_out"
    every = [*benches, BENCHMARKS["videomarathon"]]
    data_env = {b.data_env: setup["copies"][b.name]["folder"] for b in every}
    command = [str(BIN / "lmms-eval"), "--model", "hour_llava", "--model_args", f"pretrained={setup['checkpoint']}"]
    command += ["--tasks", ",".join(b.task for b in every), "--include_path", TASKS_DIR]
    command += ["--batch_size", "2", "--output_path", str(cli_out), "--log_samples", "--verbosity", "DEBUG"]
    process = run(command, root, env | data_env)
    assert "SKIPPED 4 requests (2 videos)" in process.stdout + process.stderr
    results, samples = results_and_samples(cli_out)
    assert results["config"]["model_backend"].endswith("HourLlavaChat (chat)")
    assert results["configs"]["hour_llava_videomme"]["dataset_path"] == "parquet"  # the local copy, not the Hub
    chat_answers = {b.name: check_benchmark(b.name, setup["copies"][b.name], results, samples[b.task]) for b in every}

    # 2. evaluate.py, simple mode, with the held-out VideoMarathon split too, run from the repository root.
    out = root / "evaluate_out"
    names = [*PAPER_BENCHMARKS, "videomarathon"]
    command = [sys.executable, str(REPO / "evaluate.py"), "--model", setup["checkpoint"], "--output", str(out)]
    command += ["--benchmarks", ",".join(names), "--batch-size", "2", "--force-simple"]
    command += [arg for name in names for arg in ("--data", f"{name}={setup['copies'][name]['folder']}")]
    run(command, REPO, env)
    results, samples = results_and_samples(out / "lmms_eval")
    assert results["config"]["model_backend"].endswith("HourLlava (simple)")
    for bench in every:
        answers = check_benchmark(bench.name, setup["copies"][bench.name], results, samples[bench.task])
        assert answers == chat_answers[bench.name]  # the same prompts, so the same answers in both modes

    summary = json.loads((out / "summary.json").read_text())
    skipped = {name: entry["skipped"] for name, entry in summary["benchmarks"].items()}
    assert skipped == {"tempcompass": 0, "longvideobench": 0, "videomme": 2, "lvbench": 2, "videomarathon": 0}
    assert summary["skipped_total"] == 4
    for name, entry in summary["benchmarks"].items():
        assert entry["accuracy"] == pytest.approx(entry["accuracy_from_samples"]), name
        assert sum(bucket["n"] for bucket in entry["lengths"].values()) == entry["n"] - entry["skipped"]
        # Skipped questions are in their benchmark's own groups (and counted there) and, their video never read,
        # in the unknown-length count: every question is in every breakdown.
        assert entry["lengths_unknown"] == {"n": entry["skipped"], "skipped": entry["skipped"]}, name
        if entry["groups"]:
            assert sum(bucket["n"] for bucket in entry["groups"].values()) == entry["n"], name
            assert sum(bucket["skipped"] for bucket in entry["groups"].values()) == entry["skipped"], name
        assert entry["status"] == "ok" and entry["error"] is None
    assert summary["failed"] == {}
    assert summary["benchmarks"]["videomme"]["paper"] == 63.6
    assert set(summary["benchmarks"]["videomme"]["groups"]) == {"short", "medium"}
    # Video-MME's medium group is compared with the paper's medium column (without subtitles), overall with overall.
    medium = summary["benchmarks"]["videomme"]["groups"]["medium"]
    assert medium["compared"]["Hour-LLaVA-7B"] == {"paper": 63.8, "delta": round(medium["accuracy"] - 63.8, 2)}
    compared = summary["benchmarks"]["tempcompass"]["compared"]
    assert [compared[m]["paper"] for m in compared] == [68.1, 63.6, 64.3, 63.4, 70.9]  # 7B, 3B, LLaVA-Video, GPT-4o
    table = (out / "summary.md").read_text()
    assert "| videomme |" in table and f"68.1 ({summary['benchmarks']['tempcompass']['accuracy'] - 68.1:+.1f})" in table
    ElementTree.parse(out / "accuracy_vs_length.svg")  # well-formed SVG

    # Inside the evaluation run, `import evaluate` was the Hugging Face library, not our script.
    info = json.loads((out / "run_info.json").read_text())
    assert Path(info["evaluate_module"]).parts[-3:] == ("site-packages", "evaluate", "__init__.py")


def test_import_evaluate_from_the_repository_root_gives_the_library():
    """Python started in the repository root has it first on sys.path; our script must hand over to the library."""
    code = "import evaluate, sys; print(evaluate.__file__); print(hasattr(evaluate, 'load'))"
    process = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    path, has_load = process.stdout.split()[-2:]
    assert Path(path).parts[-3:] == ("site-packages", "evaluate", "__init__.py") and has_load == "True"


def test_a_relative_checkpoint_folder_reaches_lmms_eval_as_an_absolute_path(tmp_path, monkeypatch):
    """lmms-eval runs in the output folder: `--model runs/x/model` must not become a Hub id there."""
    (tmp_path / "runs" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    args = cli.parse_args(["--model", "runs/model", "--output", "out", "--benchmarks", "lvbench"])
    assert cli.model_args(args, None) == f"pretrained={tmp_path / 'runs' / 'model'}"
    args = cli.parse_args(["--model", "org/hour-llava", "--output", "out", "--benchmarks", "lvbench"])
    assert cli.model_args(args, None) == "pretrained=org/hour-llava"
