"""lmms-eval's own LongVideoBench task (`longvideobench_val_v`: its prompt, its `doc_to_visual`, which imports
decord, and its scoring) with our model, through the plain `lmms-eval` CLI on a tiny local copy, offline.

The task file here only includes lmms-eval's own yaml and names the local annotation file (the Hub copy is out of
reach); the videos sit where lmms-eval's code looks for them, under $HF_HOME/datasets/longvideobench/videos.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lmms_eval
import pytest
import yaml

from hour_llava_testing.tiny_benchmarks import save_tiny_checkpoint, write_benchmark_copy

UPSTREAM_YAML = Path(lmms_eval.__file__).parent / "tasks" / "longvideobench" / "longvideobench_val_v.yaml"


@pytest.mark.slow
def test_lmms_eval_longvideobench_val_v_runs_with_our_model_on_a_local_copy(tmp_path):
    import decord  # noqa: F401  (the `eval` extra pins it: lmms-eval's LongVideoBench code imports it)

    checkpoint = save_tiny_checkpoint(str(tmp_path / "checkpoint"))
    copy = write_benchmark_copy(str(tmp_path / "data"), "longvideobench", num_videos=2)
    hf_home = tmp_path / "hf_home"
    shutil.copytree(Path(copy["folder"]) / "videos", hf_home / "datasets" / "longvideobench" / "videos")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    local = {
        "include": str(UPSTREAM_YAML),
        "task": "longvideobench_val_v_local",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"validation": str(Path(copy["folder"]) / "lvb_val.json")}},
    }
    (tasks / "longvideobench_val_v_local.yaml").write_text(yaml.safe_dump(local))

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "lmms-eval"), "--model", "hour_llava"]
    command += ["--model_args", f"pretrained={checkpoint}", "--include_path", str(tasks)]
    command += ["--tasks", "longvideobench_val_v_local", "--log_samples", "--output_path", str(out)]
    command += ["--verbosity", "DEBUG"]
    process = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-6000:]

    [results_path] = out.rglob("*_results.json")
    results = json.loads(results_path.read_text())
    config = results["configs"]["longvideobench_val_v_local"]
    assert "longvideobench_doc_to_visual_v" in config["doc_to_visual"]  # lmms-eval's own function, not ours
    [samples_path] = out.rglob("*_samples_longvideobench_val_v_local.jsonl")
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    answers = {s["doc_id"]: s["filtered_resps"][0] for s in samples}
    assert sorted(answers) == list(range(len(copy["rows"]))) and set(answers.values()) <= {"A", "B", "C", "D"}
    expected = sum(answers[i] == "ABCD"[row["correct_choice"]] for i, row in enumerate(copy["rows"])) / len(answers)
    assert results["results"]["longvideobench_val_v_local"]["lvb_acc,none"] == pytest.approx(expected)
