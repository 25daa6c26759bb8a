"""The CPU proof of benchmarks/gpu_check.py: `--device cpu --tiny` runs every stage end to end, and its JSON holds
what the GPU run will be judged by (structure, token counts, finite and falling losses, fp32 greedy answers equal
between the CPU reference and the "device", which is the CPU here, and every goal row with a status and a reason).
A stage whose extra is missing is skipped with the reason; one that runs out of time is recorded, not fatal.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from modeling_hour_llava import video_token_budget

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check = load_check()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gpu_check")
    output = root / "gpu_check.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--device",
            "cpu",
            "--tiny",
            "--output",
            str(output),
            "--workdir",
            str(root / "w"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    report = json.loads(output.read_text())
    failed = {name: entry.get("log_tail") for name, entry in report["stages"].items() if entry["status"] != "ok"}
    assert completed.returncode == 0, (completed.stdout[-3000:], failed)
    assert "| goal | threshold | measured | status | why |" in completed.stdout
    return report


@pytest.mark.slow
def test_every_stage_runs_or_says_why_not(tiny_run):
    assert tiny_run["schema"] == check.SCHEMA
    assert tiny_run["settings"]["device"] == "cpu" and tiny_run["settings"]["tiny"] is True
    assert list(tiny_run["stages"]) == check.STAGE_NAMES
    for stage in check.STAGES:
        entry = tiny_run["stages"][stage.name]
        missing = [name for name in stage.needs if importlib.util.find_spec(name) is None]
        if missing:
            assert entry["status"] == "skipped" and all(name in entry["reason"] for name in missing), entry
        else:
            assert entry["status"] == "ok", (stage.name, entry.get("reason"), entry.get("log_tail"))
            assert 0 < entry["seconds"] <= entry["limit_seconds"]
    assert tiny_run["machine"]["packages"]["torch"]


@pytest.mark.slow
def test_parity_fp32_on_the_device_matches_the_cpu_reference_exactly(tiny_run):
    comparisons = tiny_run["stages"]["parity"]["result"]["comparisons"]
    fp32 = comparisons["fp32_sdpa_vs_cpu_fp32"]
    assert fp32["greedy_equal"] is True and fp32["max_abs_logit_diff"] == 0.0  # the device is the CPU here
    assert len(fp32["tokens"]) == 2 and all(len(t) == check.PARITY_NEW_TOKENS for t in fp32["tokens"])
    for name in ("bf16_sdpa_vs_cpu_fp32", "bf16_eager_vs_cpu_fp32", "eager_vs_sdpa_bf16"):
        assert math.isfinite(comparisons[name]["max_abs_logit_diff"]) and isinstance(
            comparisons[name]["greedy_equal"], bool
        )
    # bf16 really is another precision: its logits differ, by bf16 rounding (about 1e-2 of the largest logit)
    assert 0 < comparisons["bf16_sdpa_vs_cpu_fp32"]["max_rel_logit_diff"] < 0.1
    assert comparisons["eager_vs_sdpa_fp32"]["greedy_equal"] is True
    assert comparisons["eager_vs_sdpa_fp32"]["max_rel_logit_diff"] < 1e-4
    assert all(margin > 0 for margin in fp32["reference_min_margin"])


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["hour_7b", "hour_3b"])
def test_hour_stage_measures_every_part_and_reuses_the_memory(tiny_run, stage):
    result = tiny_run["stages"][stage]["result"]
    config = check.hour_config(stage.removeprefix("hour_"), tiny=True)
    memory_tokens, video_tokens = video_token_budget(check.TINY_FRAMES, config)
    assert (result["frames"], result["memory_tokens"], result["video_tokens"]) == (160, memory_tokens, video_tokens)
    assert (memory_tokens, video_tokens) == (160 * 65, 40 * 17)  # the paper's geometry: 65 per frame, 1/4 kept
    assert result["parameter_devices"] == ["cpu"] and result["parameter_dtypes"] == ["torch.bfloat16"]
    assert result["memory_frame_tokens_shape"] == [160, 64, config.text_config.hidden_size]
    assert result["tower_calls_first"] == math.ceil(160 / config.vision_chunk_size)
    first, second = result["first_question"], result["second_question"]
    assert second["tower_calls"] == 0  # the second question never touches the tower
    for answer in (first, second):
        assert answer["new_tokens"] == check.NEW_TOKENS
        assert answer["prompt_tokens"] == check.PREFIX_TOKENS + video_tokens + check.QUESTION_TOKENS
        assert 0 < answer["memaug_seconds"] < answer["prefill_step_seconds"] < answer["answer_seconds"]
        assert answer["decoder_prefill_seconds"] > 0 and answer["tokens_per_second"] > 0
    assert first["end_to_end_seconds"] == pytest.approx(result["encode_seconds"] + first["answer_seconds"])
    assert result["peak"]["measure"] == "rss" and result["peak"]["peak_rss_bytes"] > 0


@pytest.mark.slow
def test_cross_attention_stage_states_the_score_matrix_it_avoids(tiny_run):
    result = tiny_run["stages"]["cross_attention"]["result"]
    config = check.hour_config("7b", tiny=True)
    queries = video_token_budget(check.TINY_FRAMES, config)[1] + check.PREFIX_TOKENS + check.QUESTION_TOKENS
    assert (result["queries"], result["memory_tokens"]) == (queries, 160 * 65)
    assert result["score_matrix_bytes_bf16"] == config.text_config.num_attention_heads * queries * 160 * 65 * 2
    implementations = result["implementations"]
    assert set(implementations) == {"sdpa", "sdpa_flash_only", "eager"}
    assert all(implementations[name]["finite"] and implementations[name]["seconds"] > 0 for name in ("sdpa", "eager"))
    flash = implementations["sdpa_flash_only"]  # the flash kernel may refuse a call; then the JSON says why
    assert flash.get("finite") is True or flash["error"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train", "train_fsdp"])
def test_training_losses_are_finite_and_fall_with_cached_and_decoded_videos(tiny_run, stage):
    result = tiny_run["stages"][stage]["result"]
    assert result["steps"] == check.TRAIN_STEPS and len(result["losses"]) == check.TRAIN_STEPS
    assert result["losses_finite"] and all(math.isfinite(x) for x in result["losses"])
    assert result["loss_falling"] and sum(result["losses"][-3:]) < sum(result["losses"][:3])
    assert 0 < result["cached_features_used"] < result["samples_seen"]  # both kinds of video were trained on
    assert result["skipped_samples"] == {}
    assert result["accelerate_state"] and all(s["mixed_precision"] == "bf16" for s in result["accelerate_state"])


@pytest.mark.slow
def test_evaluate_stage_scores_the_tiny_copies_on_the_device_asked(tiny_run):
    result = tiny_run["stages"]["evaluate"]["result"]
    assert set(result["benchmarks"]) == set(check.EVAL_BENCHMARKS)
    assert all(entry["n"] > 0 and entry["skipped"] == 0 for entry in result["benchmarks"].values())
    assert result["model_args"] and all("device=cpu" in args for args in result["model_args"])
    assert any(p["argv0"] == "lmms-eval" for p in result["probed_processes"])  # the probe reached lmms-eval's child


@pytest.mark.slow
def test_goals_are_rows_with_a_status_and_a_reason(tiny_run):
    goals = {row["goal"]: row for row in tiny_run["goals"]}
    assert len(goals) == 5 and all(row["status"] in ("pass", "fail", "not-run") for row in goals.values())
    bf16 = next(row for name, row in goals.items() if name.startswith("tiny model, bf16 greedy"))
    parity = tiny_run["stages"]["parity"]["result"]["comparisons"]["bf16_sdpa_vs_cpu_fp32"]
    assert bf16["measured"] is parity["greedy_equal"] and bf16["status"] == (
        "pass" if parity["greedy_equal"] else "fail"
    )
    shape_goals = [row for row in goals.values() if row is not bf16]
    assert all(row["status"] == "not-run" and "tiny shapes on the CPU" in row["why"] for row in shape_goals)
    end_to_end = next(row for name, row in goals.items() if name.startswith("7B shape, one hour"))
    assert end_to_end["measured"] == tiny_run["stages"]["hour_7b"]["result"]["first_question"]["end_to_end_seconds"]


def stage_args(tmp_path: Path, time_scale: float = 1.0) -> Namespace:
    return Namespace(device="cpu", tiny=True, time_scale=time_scale, workdir=str(tmp_path))


def test_a_stage_whose_extra_is_missing_is_skipped_with_the_reason(tmp_path):
    stage = check.Stage("parity", ("hour_llava_no_such_extra",), 10, 10)
    entry = check.run_stage(stage, stage_args(tmp_path), tmp_path)
    assert entry["status"] == "skipped" and "hour_llava_no_such_extra" in entry["reason"]
    assert not list(tmp_path.iterdir())  # no child was started
    goals = check.judge_goals({"parity": entry}, "cuda", tiny=False)
    bf16 = next(row for row in goals if row["goal"].startswith("tiny model, bf16"))
    assert bf16["status"] == "not-run" and "hour_llava_no_such_extra" in bf16["why"]


def test_a_stage_over_its_time_limit_is_killed_and_recorded(tmp_path):
    stage = check.Stage("cross_attention", (), 1, 1)
    entry = check.run_stage(stage, stage_args(tmp_path, time_scale=0.5), tmp_path)
    assert entry["status"] == "timeout" and entry["returncode"] is None
    assert "no result within" in entry["reason"] and entry["seconds"] < 30
    goals = check.judge_goals({"cross_attention": entry}, "cuda", tiny=False)
    assert next(row for row in goals if row["goal"].startswith("MemAug"))["status"] == "not-run"


def test_cuda_without_a_gpu_is_refused_with_a_pointer_to_the_cpu_proof(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda", "--output", str(tmp_path / "x.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2 and "--device cpu --tiny" in completed.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "vision, text",
    [
        (None, None),
        ({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}, {"hidden_size": 64}),
        (dict(check.TINY_VISION), dict(check.TINY_TEXT)),
    ],
)
def test_the_sub_config_fallback_of_older_transformers_builds_what_subconfigspec_builds(vision, text):
    """The GPU image's transformers 5.17 has no `SubConfigSpec`; there `HourLlavaConfig.build_sub_configs` turns dict or
    missing sub-configs into configs. It must give what `SubConfigSpec` gives on the transformers of the lock."""
    from modeling_hour_llava import HourLlavaConfig

    reference = HourLlavaConfig(vision_config=copy.deepcopy(vision), text_config=copy.deepcopy(text))
    config = HourLlavaConfig(vision_config=copy.deepcopy(vision), text_config=copy.deepcopy(text))
    config.vision_config, config.text_config = copy.deepcopy(vision), copy.deepcopy(text)
    config.build_sub_configs()
    for key in ("vision_config", "text_config"):
        built, expected = getattr(config, key), getattr(reference, key)
        assert type(built) is type(expected) and built.to_dict() == expected.to_dict(), key


def test_a_stopped_check_ends_its_stage_and_keeps_the_json(tmp_path):
    """An outer `timeout` sends SIGTERM: the running stage (a session of its own, which would outlive the check and
    hold the GPU) is killed with its children, and the JSON says which stage was cut short."""
    import os
    import signal
    import time

    output, workdir = tmp_path / "x.json", tmp_path / "w"
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--stages", "hour_7b,hour_3b"]
        + ["--output", str(output), "--workdir", str(workdir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not (workdir / "stage-hour_7b.log").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 1, stdout
    report = json.loads(output.read_text())
    entry = report["stages"]["hour_7b"]
    assert entry["status"] == "interrupted" and "SIGTERM" in entry["reason"]
    assert "hour_3b" not in report["stages"]
    with pytest.raises(ProcessLookupError):
        os.killpg(entry["pid"], 0)  # no process of the stage's group is left
