"""Shared fixtures: tiny Hour-LLaVA configurations that keep the paper's token geometry where it matters.

The tiny vision tower sees 140 px frames as a 10 x 10 patch grid, pooled to the paper's 8 x 8, so the memory
repository (65 tokens per frame), the forgetting (16 + 1 per frame, 1/4 of the frames) and the position ids are
those of the real model; only the widths are small.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hour_llava_testing.tiny_model import TINY_TEXT_CONFIG, TINY_VISION_CONFIG  # noqa: E402
from modeling_hour_llava import HourLlavaConfig, HourLlavaForConditionalGeneration  # noqa: E402

TINY_VOCAB = 320
IMAGE_TOKEN = 318
VIDEO_TOKEN = 319


def tiny_config(**overrides) -> HourLlavaConfig:
    vision = dict(TINY_VISION_CONFIG)
    text = dict(
        TINY_TEXT_CONFIG,
        vocab_size=TINY_VOCAB,
        max_position_embeddings=4096,
        tie_word_embeddings=overrides.pop("tie_word_embeddings", False),
    )
    vision.update(overrides.pop("vision", {}))
    text.update(overrides.pop("text", {}))
    kwargs = dict(
        vision_config=vision,
        text_config=text,
        memaug_num_layers=2,
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
    )
    kwargs.update(overrides)
    return HourLlavaConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> HourLlavaForConditionalGeneration:
    torch.manual_seed(seed)
    return HourLlavaForConditionalGeneration(tiny_config(**overrides)).eval()


def video_prompt(num_placeholders: int, before: list[int], after: list[int]) -> torch.Tensor:
    """A (1, L) prompt: text ids, one block of <video> placeholders, text ids."""
    return torch.tensor([before + [VIDEO_TOKEN] * num_placeholders + after])


@pytest.fixture
def config() -> HourLlavaConfig:
    return tiny_config()


@pytest.fixture
def model() -> HourLlavaForConditionalGeneration:
    return tiny_model()
