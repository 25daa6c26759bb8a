"""evaluate.py as a process manager, end to end on the CPU with a tiny checkpoint and a tiny LVBench copy (3 videos,
2 questions each: lmms-eval's sharding gives each of two ranks one question of every video):

* one benchmark's data missing and another's broken: the healthy one is still scored, the summary says which
  failed and why, and the exit status is 1 (lmms-eval itself exits 0 after such errors);
* `--num-processes 2` really runs two ranks on the CPU, each video is encoded by one rank only (3 tower runs in all),
  each rank journals to its own file, and the scores equal the one-process run's;
* evaluate.py killed (SIGKILL, nothing can be caught) or stopped (SIGTERM) leaves no lmms-eval process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hour_llava_testing.tiny_benchmarks import save_tiny_checkpoint, write_benchmark_copy

REPO = Path(__file__).resolve().parents[1]
VIDEOS, QUESTIONS_PER_VIDEO = 3, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_processes")
    checkpoint = save_tiny_checkpoint(str(root / "checkpoint"))
    lvbench = write_benchmark_copy(str(root / "data"), "lvbench", num_videos=VIDEOS)
    broken = root / "broken_videomme"
    (broken / "videomme").mkdir(parents=True)
    (broken / "videomme" / "test.parquet").write_bytes(b"not a parquet file")  # lmms-eval cannot load it
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HOME": str(root / "hf_home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env |= {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return {"root": root, "checkpoint": checkpoint, "lvbench": lvbench["folder"], "broken": str(broken), "env": env}


def evaluate(tiny: dict, out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "evaluate.py"), "--model", tiny["checkpoint"], "--output", str(out), *args]
    return subprocess.run(command, cwd=REPO, env=tiny["env"], capture_output=True, text=True, timeout=900)


def answers(out: Path) -> dict[int, str]:
    [path] = (out / "lmms_eval" / "lvbench").rglob("*_samples_hour_llava_lvbench.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["doc_id"]: row["filtered_resps"][0] for row in rows}


@pytest.fixture(scope="module")
def one_process(tiny):
    """LVBench in one process, next to a benchmark whose data folder is missing and one whose annotations are not
    readable by lmms-eval."""
    out = tiny["root"] / "one_process"
    missing = tiny["root"] / "no_such_tempcompass"
    data = [f"lvbench={tiny['lvbench']}", f"tempcompass={missing}", f"videomme={tiny['broken']}"]
    process = evaluate(tiny, out, "--benchmarks", "tempcompass,lvbench,videomme", *(f"--data={d}" for d in data))
    return {"out": out, "process": process, "summary": json.loads((out / "summary.json").read_text())}


@pytest.mark.slow
def test_a_benchmark_without_data_fails_alone_and_the_others_are_scored(one_process, tiny):
    process, summary = one_process["process"], one_process["summary"]
    assert process.returncode == 1, process.stderr[-3000:]
    lvbench = summary["benchmarks"]["lvbench"]
    assert lvbench["status"] == "ok" and lvbench["n"] == VIDEOS * QUESTIONS_PER_VIDEO
    assert lvbench["accuracy"] is not None
    assert set(summary["failed"]) == {"tempcompass", "videomme"}
    assert "no_such_tempcompass" in summary["failed"]["tempcompass"]  # the data check names the missing folder
    assert summary["failed"]["videomme"].startswith("lmms-eval exited 0 without results")  # its swallowed error
    table = (one_process["out"] / "summary.md").read_text()
    assert "- tempcompass: data:" in table and "- videomme: lmms-eval exited 0" in table
    assert "videomme failed" in process.stderr and "tempcompass failed" in process.stderr


@pytest.mark.slow
def test_two_cpu_processes_encode_each_video_once_and_score_as_one(one_process, tiny):
    out = tiny["root"] / "two_processes"
    process = evaluate(tiny, out, "--benchmarks", "lvbench", "--data", f"lvbench={tiny['lvbench']}",
                       "--num-processes", "2")  # fmt: skip
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    lvbench = summary["benchmarks"]["lvbench"]

    ranks = {entry["rank"]: entry for entry in lvbench["ranks"]}
    assert sorted(ranks) == [0, 1] and all(entry["world_size"] == 2 for entry in ranks.values())
    assert sum(entry["encoded_from_frames"] for entry in ranks.values()) == VIDEOS  # one tower run per video
    assert all(entry["encoded_from_frames"] >= 1 for entry in ranks.values())  # both ranks did work
    assert all(entry["requests"] == VIDEOS for entry in ranks.values())  # lmms-eval's shards: 3 questions each

    for rank in (0, 1):  # each rank writes its own journal, and only its own answers
        lines = [json.loads(line) for line in (out / "journal" / f"answers_rank{rank}.jsonl").read_text().splitlines()]
        assert lines and {line["rank"] for line in lines} == {rank}
    assert answers(out) == answers(one_process["out"])
    assert lvbench["accuracy"] == one_process["summary"]["benchmarks"]["lvbench"]["accuracy"]


def family(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone, or a zombie
        return ""


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "processes"), [(signal.SIGKILL, "2"), (signal.SIGTERM, "1")])
def test_killing_evaluate_py_leaves_no_process_behind(tiny, tmp_path, sig, processes):
    """SIGKILL cannot be caught: the lmms-eval processes must notice and end (two ranks under accelerate's launcher,
    the worst case); SIGTERM is forwarded to the child's process group."""
    command = [sys.executable, str(REPO / "evaluate.py"), "--model", tiny["checkpoint"], "--output", str(tmp_path)]
    command += ["--benchmarks", "lvbench", "--data", f"lvbench={tiny['lvbench']}", "--num-processes", processes]
    parent = subprocess.Popen(command, cwd=REPO, env=tiny["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    want = 1 + 2 * (processes == "2")  # the child, and under accelerate its two ranks
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and parent.poll() is None:
            seen.update({child.pid: child for child in family(parent.pid)})
            if sum("hour_llava_lmms.launch" in command_line(child) for child in seen.values()) >= want:
                break
            time.sleep(0.5)
        assert parent.poll() is None, "evaluate.py ended before it could be killed"
        time.sleep(3)  # the ranks are importing lmms-eval or loading the model
        seen.update({child.pid: child for child in family(parent.pid)})
        parent.send_signal(sig)
        parent.wait(timeout=120)
        _, alive = psutil.wait_procs(list(seen.values()), timeout=60)
        leftover = [command_line(p)[:120] for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not leftover, f"still running after evaluate.py got {sig.name}: {leftover}"
    finally:
        for process in [*seen.values(), psutil.Process(parent.pid)] if parent.poll() is None else seen.values():
            try:
                process.kill()
            except psutil.Error:
                pass
    if sig == signal.SIGTERM:
        assert parent.returncode == 128 + sig
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert "interrupted by SIGTERM" in summary["failed"]["lvbench"]
