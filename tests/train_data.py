"""Shared data for the training tests: a tiny checkpoint, the synthetic VideoMarathon with its videos, cached
features of half of them (extracted with that checkpoint), coloured images, and helpers to build chat rows."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from dataset_builder import extract_features
from dataset_builder.chat import media_block, text_block, turn
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from hour_llava_testing.tiny_model import write_tiny_checkpoint

TINY_FRAMES = 8


def video_row(path: str, question: str = "What happens in the video?", answer: str = "A shape moves.", **extra):
    messages = [
        turn("user", [media_block("video", path), text_block(question)]),
        turn("assistant", [text_block(answer)]),
    ]
    return {"messages": messages, **extra}


def image_row(path: str, answer: str = "red", **extra):
    question = turn("user", [media_block("image", path), text_block("What colour is this image?")])
    return {"messages": [question, turn("assistant", [text_block(answer)])], **extra}


def text_row(question: str = "Say hello.", answer: str = "Hello.", **extra):
    messages = [turn("user", [text_block(question)]), turn("assistant", [text_block(answer)])]
    return {"messages": messages, **extra}


def build_training_data(root: Path, num_videos: int = 4) -> dict:
    """Write everything under `root`; returns the paths (model, media_root, feature_dir, videos, cached, image)."""
    model = write_tiny_checkpoint(root / "tiny", video_min_frames=TINY_FRAMES)
    synthetic = write_synthetic_videomarathon(
        root / "synthetic",
        SyntheticSpec(num_videos=num_videos, min_duration=6, max_duration=8, fps=4, width=96, height=64),
    )
    media_root = synthetic.video_root
    videos = sorted(
        os.path.relpath(os.path.join(folder, name), media_root)
        for folder, _, names in os.walk(media_root)
        for name in names
        if name.endswith(".mp4")
    )
    cached = videos[: len(videos) // 2]
    feature_dir = str(root / "features")
    list_file = root / "cached.txt"
    list_file.write_text("\n".join(cached) + "\n")
    argv = ["--model", model, "--video-root", media_root, "--output-dir", feature_dir, "--video-list", str(list_file)]
    assert extract_features.main([*argv, "--min-frames", str(TINY_FRAMES), "--cpu", "--threads", "1"]) == 0
    image = root / "red.png"
    Image.fromarray(np.full((48, 64, 3), (220, 30, 30), np.uint8)).save(image)
    return {
        "model": model,
        "media_root": media_root,
        "feature_dir": feature_dir,
        "videos": videos,
        "cached": cached,
        "decoded": videos[len(videos) // 2 :],
        "image": str(image),
        "synthetic": synthetic,
    }


def write_rows(folder: Path, rows: list[dict]) -> str:
    """Chat rows as a Parquet dataset folder that `--dataset` loads."""
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "train.parquet"))
    return str(folder)
