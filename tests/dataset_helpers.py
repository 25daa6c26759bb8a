"""Helpers shared by the dataset tests: a tiny processor whose token geometry matches the tiny model."""

from __future__ import annotations

from conftest import tiny_config

SIZE = 28  # frames and images at 28 px keep the chat-template tests fast; placeholder counts do not depend on it


def tiny_processor():
    """HourLlavaProcessor with the tiny tokenizer and the tiny model's geometry; (processor, tokenizer)."""
    from transformers import SiglipImageProcessor

    from hour_llava_testing.tiny_tokenizer import build_tokenizer
    from modeling_hour_llava import HourLlavaProcessor, HourLlavaVideoProcessor

    tokenizer = build_tokenizer()
    size = {"height": SIZE, "width": SIZE}
    processor = HourLlavaProcessor(
        image_processor=SiglipImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(size=size),
        token_geometry=HourLlavaProcessor.geometry_from_config(tiny_config()),
    )
    return processor, tokenizer
