"""train.py on a tiny model: the three stages chained, exact resume after a kill, LoRA, broken videos.

Data: the synthetic VideoMarathon (dataset_builder) as grouped Parquet for the video stages, and coloured images
with questions about them for stage 1. Every run is train.py's own `main` (or its command line).
"""

from __future__ import annotations

import json
import os
import signal
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
from hour_llava_training import STAGES, module_group

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import train  # noqa: E402

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
        summary = train.main(
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


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(data, tmp_path):
    common = [
        "--stage", "stage3", "--tiny", "--dataset", data["videos"], "--media_root", data["video_root"],
        "--num_train_epochs", "1", "--max_train_samples", "8", "--save_steps", "2", "--save_strategy", "steps", *FAST,
    ]  # fmt: skip
    straight = tmp_path / "straight"
    train.main([*common, "--output_dir", str(straight)])
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
    train.main([*common, "--output_dir", str(killed), "--resume_from_checkpoint", "auto"])
    final_straight, final_resumed = weights(str(straight)), weights(str(killed))
    for name, tensor in final_straight.items():
        torch.testing.assert_close(final_resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert losses(str(straight))[-1] == pytest.approx(losses(str(killed))[-1], abs=1e-5)
