"""train.py against the data users really have and the machines they really run on (tiny model, synthetic data).

Every broken kind of sample (undecodable video, truncated / foreign / non-finite feature file, null or escaping path,
missing file, empty conversation) is skipped and counted by reason wherever it falls: first and last batch, batch
size 1, data-loader workers, several processes. Too many stop the run naming them; non-finite steps never reach a
checkpoint; torn checkpoints are passed over and the resumed run ends bit-identical; a final save cut short leaves
no loadable half model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from mock_hub import mock_hub, run_hub_client  # noqa: F401
from safetensors.torch import load_file
from train_data import build_training_data, text_row, video_row, write_rows

from hour_llava_training import TooManyBrokenSamples, TooManyNonFiniteSteps
from hour_llava_training import cli as train
from hour_llava_training.checkpoints import MARKER
from modeling_hour_llava.features_hour_llava import FEATURE_FILE_FORMAT, load_feature_file, save_feature_file

REPO = Path(__file__).resolve().parents[1]
FAST = ["--stage", "stage3", "--lr_mode", "released", "--learning_rate", "1e-3", "--warmup_steps", "0", "--seed", "0"]
FAST += ["--logging_steps", "1", "--report_to", "none", "--use_cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("robust")
    built = build_training_data(root)
    media, features = Path(built["media_root"]), Path(built["feature_dir"])
    cached = built["cached"][0]
    good, duration = load_feature_file(features / (os.path.splitext(cached)[0] + ".safetensors"))
    (media / "synthetic" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 40)
    truncated = (features / (os.path.splitext(cached)[0] + ".safetensors")).read_bytes()
    (features / "synthetic" / "truncated.safetensors").write_bytes(truncated[: len(truncated) // 2])
    # Our writer refuses NaN; a file written by another tool (or an older version) holds them all the same.
    safetensors.torch.save_file(
        {"features": torch.full_like(good, float("nan"))},
        str(features / "synthetic" / "nan.safetensors"),
        metadata={"format": FEATURE_FILE_FORMAT, "duration": str(duration)},
    )
    save_feature_file(features / "synthetic" / "foreign.safetensors", good[..., :16].contiguous(), duration)
    save_feature_file(features / "synthetic" / "extreme.safetensors", torch.full_like(good, 3e38), duration)
    outside = media.parent / "outside"
    outside.mkdir()
    shutil.copy(media / built["decoded"][0], outside / "real.mp4")
    built["broken"] = {
        "undecodable_video": video_row("synthetic/corrupt.mp4", id="corrupt"),
        "broken_feature_file": video_row("synthetic/truncated.mp4", id="truncated"),
        "non_finite_media": video_row("synthetic/nan.mp4", id="nan"),
        "foreign_feature_file": video_row("synthetic/foreign.mp4", id="foreign"),
        "missing_path": {**video_row("x"), "id": "null"},
        "path_escapes_root": video_row("../outside/real.mp4", id="escapes"),
        "missing_media": video_row("synthetic/gone.mp4", id="gone"),
        "empty_conversation": {"id": "empty", "messages": [video_row("x")["messages"][0]]},
    }
    built["broken"]["missing_path"]["messages"][0]["content"][0]["path"] = None
    built["good"] = [video_row(video, id=f"good-{i}") for i, video in enumerate(built["videos"])] + [
        text_row(id="text")
    ]
    return built


def run(data: dict, rows: list[dict], output: Path, *args: str) -> dict:
    dataset = write_rows(output.parent / f"{output.name}-rows", rows)
    model = ["--model_name_or_path", data["model"], "--dataset", dataset]
    media = ["--media_root", data["media_root"], "--feature_dir", data["feature_dir"], "--output_dir", str(output)]
    return train.run_training([*model, *media, *FAST, *args])


def no_nan_anywhere(folder: Path) -> list[str]:
    """Names of non-finite tensors in every safetensors file under `folder` (should be none)."""
    return [
        f"{path.relative_to(folder)}:{name}"
        for path in folder.rglob("*.safetensors")
        for name, tensor in load_file(path).items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]


def matrix_rows(data: dict) -> list[dict]:
    """16 rows: every broken kind once (one first, one last), good ones between (16 splits evenly over 1, 2, 4
    samples per batch and 2 processes, so no row is drawn twice)."""
    broken, good = list(data["broken"].values()), data["good"]
    middle = [row for index, bad in enumerate(broken[1:-1]) for row in (good[index % len(good)], bad)]
    rows = [broken[0], *middle, *good[: 16 - 2 - len(middle)], broken[-1]]
    assert len(rows) == 16
    return rows


@pytest.mark.parametrize(("batch", "workers"), [(1, 0), (2, 2), (4, 1)])
def test_every_kind_of_broken_sample_is_skipped_and_counted_wherever_it_falls(data, tmp_path, batch, workers):
    rows = matrix_rows(data)
    output = tmp_path / "run"
    summary = run(
        data, rows, output, "--per_device_train_batch_size", str(batch), "--dataloader_num_workers", str(workers),
        "--train_sampling_strategy", "sequential", "--num_train_epochs", "1", "--max_broken_fraction", "0.8",
        "--save_steps", "3", "--save_strategy", "steps",
    )  # fmt: skip
    expected = dict.fromkeys(data["broken"], 1)
    assert summary["skipped_samples"] == dict(expected)
    assert summary["rows_drawn"] == len(rows)
    cached = [row for row in rows if row["messages"][0]["content"][0].get("path") in data["cached"]]
    assert summary["cached_features_used"] == len(cached) > 0
    written = json.loads((output / "training_summary.json").read_text())
    assert written["skipped_samples"] == summary["skipped_samples"]
    named = {entry["sample"].rsplit("/", 1)[-1]: entry["reason"] for entry in written["skipped_sample_examples"]}
    assert named == {row["id"]: reason for reason, row in data["broken"].items()}
    assert not no_nan_anywhere(output)
    assert (output / "config.json").is_file() and (output / "README.md").is_file()


def test_a_corrupt_first_sample_at_batch_size_1_in_random_order_does_not_stop_the_run(data, tmp_path):
    rows = [data["broken"]["undecodable_video"], *data["good"]]
    # seed 5: the random sampler draws the corrupt row in one of the 2 batches of the run (the count says so).
    summary = run(data, rows, tmp_path / "run", "--per_device_train_batch_size", "1", "--max_broken_fraction", "0.5",
                  "--max_steps", "2", "--save_strategy", "no", "--seed", "5")  # fmt: skip
    assert summary["steps"] == 2 and summary["skipped_samples"] == {"undecodable_video": 1}


def test_too_many_broken_samples_stop_the_run_naming_them(data, tmp_path):
    rows = [*data["broken"].values(), *data["good"]]
    with pytest.raises(TooManyBrokenSamples, match=r"max_broken_fraction 0\.1.*corrupt \(undecodable_video\)"):
        run(data, rows, tmp_path / "run", "--per_device_train_batch_size", "2", "--max_broken_fraction", "0.1",
            "--train_sampling_strategy", "sequential", "--save_strategy", "no")  # fmt: skip
    assert not (tmp_path / "run" / "config.json").exists()


def test_non_finite_steps_are_skipped_and_never_reach_a_checkpoint(data, tmp_path):
    """Features of 3e38 are finite (the collator lets them through) but overflow in the projector: the loss and the
    gradients of that step are NaN; the step changes no weight and is counted."""
    extreme = video_row("synthetic/extreme.mp4", id="extreme")
    rows = [data["good"][0], extreme, data["good"][1], extreme, data["good"][2]]
    output = tmp_path / "run"
    summary = run(data, rows, output, "--per_device_train_batch_size", "1", "--train_sampling_strategy", "sequential",
                  "--save_steps", "1", "--save_strategy", "steps", "--num_train_epochs", "1")  # fmt: skip
    assert summary["nonfinite_steps"] == [2, 4] and summary["steps"] == 5
    assert not no_nan_anywhere(output)
    step1, step2 = (load_file(output / f"checkpoint-{step}" / "model.safetensors") for step in (1, 2))
    assert all(torch.equal(step1[name], step2[name]) for name in step1)  # the skipped step changed nothing
    with pytest.raises(TooManyNonFiniteSteps, match=r"steps \[2, 4\].*max_nonfinite_steps 1"):
        run(data, rows, tmp_path / "stops", "--per_device_train_batch_size", "1", "--train_sampling_strategy",
            "sequential", "--save_strategy", "no", "--max_nonfinite_steps", "1")  # fmt: skip


def tear(folder: Path, how: str) -> None:
    """Simulate a power loss inside a checkpoint whose trainer_state.json (and marker) survived."""
    if how == "model_empty":
        (folder / "model.safetensors").write_bytes(b"")
    elif how == "model_half":
        weights = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    elif how == "optimizer_empty":
        (folder / "optimizer.pt").write_bytes(b"")
    elif how == "no_marker":
        (folder / MARKER).unlink()


def test_resume_passes_over_torn_checkpoints_and_ends_bit_identical(data, tmp_path):
    rows = data["good"] * 2
    common = ["--per_device_train_batch_size", "1", "--max_steps", "7", "--save_steps", "1", "--save_strategy", "steps"]
    straight = tmp_path / "straight"
    run(data, rows, straight, *common)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for name in os.listdir(resumed):
        if not name.startswith("checkpoint-"):
            path = resumed / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for step, how in zip((7, 6, 5, 4), ("model_empty", "model_half", "optimizer_empty", "no_marker"), strict=True):
        tear(resumed / f"checkpoint-{step}", how)
    summary = run(data, rows, resumed, *common, "--resume_from_checkpoint", "auto")
    assert summary["steps"] == 7
    expected, got = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []
    straight_losses = json.loads((straight / "training_summary.json").read_text())["losses"]
    assert summary["losses"][-3:] == straight_losses[-3:]


def test_a_named_torn_checkpoint_is_refused(data, tmp_path):
    rows = data["good"]
    output = tmp_path / "run"
    run(data, rows, output, "--per_device_train_batch_size", "1", "--max_steps", "1", "--save_steps", "1")
    tear(output / "checkpoint-1", "model_half")
    with pytest.raises(ValueError, match=r"incomplete checkpoint \(model.safetensors has"):
        run(data, rows, output, "--per_device_train_batch_size", "1", "--max_steps", "2",
            "--resume_from_checkpoint", str(output / "checkpoint-1"))  # fmt: skip


def test_a_final_save_cut_short_leaves_no_loadable_model(data, tmp_path, monkeypatch):
    """A crash between two renames of the final publish (as a kill would): no config.json, so nothing loads as a
    model; rerunning publishes the whole folder."""
    from transformers import AutoConfig

    from hour_llava_training import checkpoints

    rows = data["good"]
    output = tmp_path / "run"
    calls = {"n": 0}
    real_replace = os.replace

    def crash_on_third(source, target):
        if os.path.basename(os.path.dirname(source)) == ".final-staging":
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("killed during the final save")
        return real_replace(source, target)

    monkeypatch.setattr(checkpoints.os, "replace", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(data, rows, output, "--per_device_train_batch_size", "1", "--max_steps", "1", "--save_strategy", "no")
    monkeypatch.undo()
    assert not (output / "config.json").exists()
    with pytest.raises((OSError, ValueError)):
        AutoConfig.from_pretrained(output, trust_remote_code=True)
    run(data, rows, output, "--per_device_train_batch_size", "1", "--max_steps", "1", "--save_strategy", "no")
    for name in ("config.json", "model.safetensors", "processor_config.json", "training_summary.json", "README.md"):
        assert (output / name).is_file(), name
    assert not (output / ".final-staging").exists()


def test_pickled_weights_need_allow_pickle(data, tmp_path):
    from transformers import AutoModelForImageTextToText

    folder = tmp_path / "pickled"
    shutil.copytree(data["model"], folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    rows = write_rows(tmp_path / "rows", data["good"])
    args = ["--model_name_or_path", str(folder), "--dataset", rows, "--media_root", data["media_root"], *FAST]
    args += ["--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--save_strategy", "no"]
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*--allow_pickle"):
        train.run_training(args)
    assert train.run_training([*args, "--allow_pickle"])["steps"] == 1


def test_broken_samples_are_counted_over_processes_and_workers(data, tmp_path):
    """2 processes (gloo), each with a data-loader worker: the counts of every process and worker add up; a sample
    whose features overflow on one process makes every process skip that step."""
    from test_train import free_port

    rows = matrix_rows(data)
    assert rows[1]["id"].startswith("good")
    rows[1] = video_row("synthetic/extreme.mp4", id="extreme")
    dataset = write_rows(tmp_path / "rows", rows)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
        "--main_process_port", str(free_port()), str(REPO / "train.py"),
        "--model_name_or_path", data["model"], "--dataset", dataset, "--media_root", data["media_root"],
        "--feature_dir", data["feature_dir"], "--output_dir", str(tmp_path / "out"), *FAST,
        "--per_device_train_batch_size", "2", "--dataloader_num_workers", "1", "--max_broken_fraction", "0.8",
        "--train_sampling_strategy", "sequential", "--save_strategy", "no",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["skipped_samples"] == dict.fromkeys(data["broken"], 1)
    assert summary["rows_drawn"] == len(rows)
    assert summary["nonfinite_steps"] == [1]  # rows 0-1 on process 0, 2-3 on process 1: step 1
    assert (done.stdout + done.stderr).count("step 1: NaN or infinite loss or gradients; step skipped") == 2
    assert not no_nan_anywhere(tmp_path / "out") and len(summary["skipped_sample_examples"]) == len(data["broken"])


class Payload:
    """Unpickling this runs code (it would create `path`): what a hostile optimizer.pt could hold."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_resume_files_are_never_unpickled_beyond_weights_only(data, tmp_path):
    from hour_llava_training.checkpoints import write_marker

    rows = data["good"]
    output = tmp_path / "run"
    run(data, rows, output, "--per_device_train_batch_size", "1", "--max_steps", "1", "--save_steps", "1")
    sentinel = tmp_path / "code-ran"
    torch.save({"state": Payload(str(sentinel))}, output / "checkpoint-1" / "optimizer.pt")
    write_marker(str(output / "checkpoint-1"), 1)  # a complete checkpoint, as far as sizes go
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        run(data, rows, output, "--per_device_train_batch_size", "1", "--max_steps", "2",
            "--resume_from_checkpoint", "auto")  # fmt: skip
    assert not sentinel.exists()


def test_an_older_checkpoint_is_rotated_away_only_once_the_new_one_is_complete(data, tmp_path, monkeypatch):
    from hour_llava_training import trainer as trainer_module

    rows = data["good"]
    output = tmp_path / "run"
    real_write_marker = trainer_module.write_marker

    def die_on_step_2(folder, step, extra=None):
        if step == 2:
            raise KeyboardInterrupt("killed before the marker of checkpoint-2")
        return real_write_marker(folder, step, extra)

    monkeypatch.setattr(trainer_module, "write_marker", die_on_step_2)
    with pytest.raises(KeyboardInterrupt):
        run(data, rows, output, "--per_device_train_batch_size", "1", "--max_steps", "3", "--save_steps", "1",
            "--save_total_limit", "1")  # fmt: skip
    assert (output / "checkpoint-1" / MARKER).is_file() and not (output / "checkpoint-2" / MARKER).exists()


PUSH = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
from hour_llava_training import cli
cli.main(sys.argv[1:])
files = HfApi().list_repo_files("you/hour-llava-s3")
print(json.dumps({"files": files, "card": open(hf_hub_download("you/hour-llava-s3", "README.md")).read()}))
"""


def test_push_to_hub_uploads_the_run_and_its_own_model_card(data, tmp_path, mock_hub):  # noqa: F811
    dataset = write_rows(tmp_path / "rows", data["good"])
    args = ["--model_name_or_path", data["model"], "--dataset", dataset, "--media_root", data["media_root"], *FAST]
    args += ["--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--per_device_train_batch_size", "1"]
    args += ["--save_strategy", "no", "--push_to_hub", "--hub_model_id", "you/hour-llava-s3"]
    done = run_hub_client(mock_hub, PUSH, args, tmp_path / "client", timeout=600)
    pushed = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"config.json", "model.safetensors", "modeling_hour_llava.py", "training_summary.json"} <= set(
        pushed["files"]
    )
    assert not any(name.startswith((".final-staging", "checkpoint-")) for name in pushed["files"])
    card = pushed["card"]
    assert "# Hour-LLaVA, stage3" in card and "fine-tuned version of [None]" not in card
    assert "from_pretrained('you/hour-llava-s3'" in card  # the usage snippet loads the pushed repo
