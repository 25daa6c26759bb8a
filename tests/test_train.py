"""train.py on a tiny model: the three stages chained, exact resume after a kill, LoRA, broken videos.

Data: the synthetic VideoMarathon (dataset_builder) as grouped Parquet for the video stages, and coloured images
with questions about them for stage 1. Every run is train.py's own `main` (or its command line).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dataset_builder.chat import media_block, text_block, turn
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from dataset_builder.videomarathon import VideoMarathon
from hour_llava_testing.tiny_model import write_tiny_checkpoint
from hour_llava_training import STAGES, apply_stage, module_group
from hour_llava_training import cli as train

REPO = Path(__file__).resolve().parents[1]

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}
FAST = ["--tiny_min_frames", "8", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--seed", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("data")
    synthetic = write_synthetic_videomarathon(
        root / "synthetic", SyntheticSpec(num_videos=4, min_duration=6, max_duration=8, fps=4, width=96, height=64)
    )
    builder = VideoMarathon(
        config_name="grouped",
        cache_dir=str(root / "cache"),
        annotations=synthetic.hub_rows,
        video_root=synthetic.video_root,
        validation_fraction=0.0,
        group_size=2,
    )
    builder.download_and_prepare()
    builder.as_dataset(split="train").to_parquet(str(root / "videos_grouped" / "train.parquet"))
    images = root / "images"
    images.mkdir()
    rows = []
    for index, (name, rgb) in enumerate(list(COLOURS.items()) * 2):
        Image.fromarray(np.full((48, 64, 3), rgb, np.uint8)).save(images / f"{index}.png")
        question = turn("user", [media_block("image", f"{index}.png"), text_block("What colour is this image?")])
        rows.append({"messages": [question, turn("assistant", [text_block(name)])]})
    datasets.Dataset.from_list(rows).to_parquet(str(root / "images_chat" / "train.parquet"))
    return {
        "videos": str(root / "videos_grouped"),
        "video_root": synthetic.video_root,
        "images": str(root / "images_chat"),
        "image_root": str(images),
    }


def weights(folder: str) -> dict[str, torch.Tensor]:
    files = sorted(Path(folder).glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(f).items()}


def losses(folder: str) -> list[float]:
    return json.loads((Path(folder) / "training_summary.json").read_text())["losses"]


def changed_groups(before: dict, after: dict) -> set[str]:
    return {module_group(name) for name in before if not torch.equal(before[name], after[name])}


def test_three_stages_train_exactly_their_modules_and_lower_the_loss(data, tmp_path):
    # One batch of 2 samples seen 10 times; MemAug alone (stage 1, in front of a frozen random decoder) needs a
    # larger rate to move the loss.
    stage_data = {
        "stage1": (data["images"], data["image_root"], "3e-2"),
        "stage2": (data["videos"], data["video_root"], "1e-3"),
        "stage3": (data["videos"], data["video_root"], "1e-3"),
    }
    previous = None
    for stage, (dataset, media_root, rate) in stage_data.items():
        output = tmp_path / stage
        source = ["--tiny"] if previous is None else ["--model_name_or_path", previous]
        summary = train.run_training(
            [
                "--stage", stage, *source, "--dataset", dataset, "--media_root", media_root,
                "--output_dir", str(output), "--max_steps", "10", "--max_train_samples", "2", "--lr_mode", "released",
                "--learning_rate", rate, "--warmup_steps", "0", "--lr_scheduler_type", "constant",
                "--save_strategy", "no", *FAST,
            ]
        )  # fmt: skip
        before = weights(previous or str(output / "tiny-init"))
        after = weights(str(output))
        expected = set(STAGES[stage].trainable)
        assert changed_groups(before, after) == expected, stage
        frozen_tower_layernorm = [n for n in before if n.startswith("model.vision_tower.post_layernorm.")]
        assert all(torch.equal(before[n], after[n]) for n in frozen_tower_layernorm)
        curve = summary["losses"]
        assert len(curve) == 10 and np.mean(curve[-3:]) < np.mean(curve[:3]) - 0.1, (stage, curve)
        previous = str(output)


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize("use_memaug", [True, False])
def test_stage3_trains_memaug_only_where_the_model_uses_it(use_memaug):
    """A hand-made compression in MemAug's place (`use_memaug=False`) leaves its blocks out of the forward: they stay
    frozen, out of the trained counts and the optimizer, so DDP sees no unused parameter."""
    from conftest import tiny_model

    model = tiny_model(use_memaug=use_memaug, temporal_forgetting_mode="uniform" if use_memaug else "keyframe")
    counts = apply_stage(model, STAGES["stage3"])
    memaug = [p for name, p in model.named_parameters() if module_group(name) == "memaug"]
    assert memaug and all(p.requires_grad == use_memaug for p in memaug)
    assert (counts["memaug"] > 0) == use_memaug and counts["projector"] > 0 and counts["language_model"] > 0


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(data, tmp_path):
    common = [
        "--stage", "stage3", "--tiny", "--dataset", data["videos"], "--media_root", data["video_root"],
        "--num_train_epochs", "1", "--max_train_samples", "8", "--save_steps", "2", "--save_strategy", "steps", *FAST,
    ]  # fmt: skip
    straight = tmp_path / "straight"
    train.run_training([*common, "--output_dir", str(straight)])
    killed = tmp_path / "killed"
    process = run_cli([*common, "--output_dir", str(killed)])
    deadline = time.time() + 600
    while not (killed / "checkpoint-2" / "trainer_state.json").exists():
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "training_summary.json").exists()  # it really died before the end
    train.run_training([*common, "--output_dir", str(killed), "--resume_from_checkpoint", "auto"])
    final_straight, final_resumed = weights(str(straight)), weights(str(killed))
    for name, tensor in final_straight.items():
        torch.testing.assert_close(final_resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert losses(str(straight))[-1] == pytest.approx(losses(str(killed))[-1], abs=1e-5)


def lora_delta(adapter: dict[str, torch.Tensor], module: str, scale: float) -> torch.Tensor:
    """What a LoRA adapter adds to `module`'s weight: (B @ A) * alpha / r."""
    prefix = f"base_model.model.{module}"
    return (adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"]) * scale


def test_a_lora_run_saves_an_adapter_that_merges_into_the_remote_code_checkpoint(data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hour_llava_training import HourLlavaCollator

    output = tmp_path / "lora"
    train.run_training(
        [
            "--stage", "stage3", "--tiny", "--dataset", data["videos"], "--media_root", data["video_root"],
            "--output_dir", str(output), "--max_steps", "2", "--max_train_samples", "2", "--lr_mode", "released",
            "--learning_rate", "1e-2", "--warmup_steps", "0", "--save_strategy", "no", "--use_peft", "--merge_lora",
            "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0", *FAST,
        ]
    )  # fmt: skip
    assert (output / "adapter_config.json").is_file() and (output / "adapter_model.safetensors").is_file()
    base_dir, merged_dir = str(output / "tiny-init"), str(output / "merged")

    # The adapter loads on the base with PEFT and merges to the same model as the saved merged checkpoint.
    base = AutoModelForImageTextToText.from_pretrained(base_dir, trust_remote_code=True)
    from_adapter = PeftModel.from_pretrained(base, str(output)).merge_and_unload().eval()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, trust_remote_code=True).eval()
    assert type(merged).__name__ == "HourLlavaForConditionalGeneration"
    processor = AutoProcessor.from_pretrained(merged_dir, trust_remote_code=True)
    row = datasets.load_dataset(data["videos"], split="train")[0]
    batch = HourLlavaCollator(processor, media_root=data["video_root"])([row])
    batch.pop("labels")
    with torch.no_grad():
        expected, got = from_adapter(**batch).logits, merged(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    # MemAug and the projector were trained in full; the decoder's projections moved by exactly B @ A * alpha / r;
    # everything else (tower, norms, embeddings, head, newline) is the base's.
    before, after = weights(base_dir), weights(merged_dir)
    adapter = load_file(output / "adapter_model.safetensors")
    lora_modules = {name.removesuffix(".lora_A.weight") for name in adapter if name.endswith(".lora_A.weight")}
    lora_modules = {name.removeprefix("base_model.model.") for name in lora_modules}
    assert len(lora_modules) == 2 * 7  # 2 decoder layers x (q, k, v, o, gate, up, down)
    for name, tensor in before.items():
        module = name.removesuffix(".weight")
        if module_group(name) in ("memaug", "projector"):
            assert not torch.equal(tensor, after[name]), name
        elif module in lora_modules:
            assert not torch.equal(tensor, after[name]), name
            torch.testing.assert_close(after[name], tensor + lora_delta(adapter, module, 8 / 4), msg=name)
        else:
            assert torch.equal(tensor, after[name]), name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_give_the_loss_curve_of_one_with_the_same_global_batch(data, tmp_path):
    """Stage 2 (the vision tower trains too) under DDP on CPU (gloo), batch 1 x 2 processes, against batch 2 x 1.

    Uniform spatial forgetting: the random mode draws from each process's own global generator, which no split of
    the batch can reproduce. `--ddp_find_unused_parameters false` makes DDP fail if any trained parameter sits out
    a step (the tower's post_layernorm would, were it not frozen). accelerate's `--cpu` launcher needs MPI for
    several processes; `--multi_gpu` with the Trainer's `--use_cpu` starts them with torch's launcher instead.
    """
    model = write_tiny_checkpoint(tmp_path / "uniform", video_min_frames=8, spatial_forgetting_mode="uniform")
    common = [
        "--stage", "stage2", "--model_name_or_path", model, "--dataset", data["videos"],
        "--media_root", data["video_root"], "--max_steps", "3", "--max_train_samples", "6", "--lr_mode", "released",
        "--learning_rate", "1e-3", "--warmup_steps", "0", "--lr_scheduler_type", "constant", "--save_strategy", "no",
        "--seed", "0", "--logging_steps", "1", "--ddp_find_unused_parameters", "false", "--use_cpu",
    ]  # fmt: skip
    one = train.run_training([*common, "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "one")])
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process",
        "1", "--main_process_port", str(free_port()), str(REPO / "train.py"),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [*common, "--per_device_train_batch_size", "1", "--output_dir", str(tmp_path / "two")]
    done = subprocess.run([*launch, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert done.stderr.count("train: done") == 2 or done.stdout.count("train: done") == 2  # really two processes
    two = json.loads((tmp_path / "two" / "training_summary.json").read_text())
    assert len(one["losses"]) == 3
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-4)
    assert two["tokens_seen"] == one["tokens_seen"]  # non-padding tokens, summed over the processes
