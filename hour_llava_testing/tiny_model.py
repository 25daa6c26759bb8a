"""A tiny random Hour-LLaVA checkpoint folder (model, processor, remote code): the start of smoke runs and tests."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

TINY_FRAME_SIZE = 140  # 10 x 10 patches of 14 px, pooled to the paper's 8 x 8 memory grid
# The tiny widths (the token geometry stays the paper's): a 2-layer SigLIP of width 32 and a 2-layer Qwen2 of width 64.
TINY_VISION_CONFIG = {
    "model_type": "siglip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": TINY_FRAME_SIZE,
    "patch_size": 14,
    "vision_use_head": False,
}
TINY_TEXT_CONFIG = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}


def write_tiny_checkpoint(
    path: str | os.PathLike,
    seed: int = 0,
    video_min_frames: int = 128,
    customize: Callable[[torch.nn.Module, object], None] | None = None,
    frame_size: int = TINY_FRAME_SIZE,
    tokenizer=None,
    **config_overrides,
) -> str:
    """Write a tiny random model with the paper's token geometry and its processor to `path`; returns the path.

    video_min_frames: the fewest frames a video gives (the reference's 128; fewer keeps CPU tests fast): the video
    processor's `min_frames` and the model's `memory_min_frames`. customize: called as `customize(model, tokenizer)`
    on the random model before it is saved (to edit weights). frame_size: the tower's image size and the processor's
    resize. tokenizer: default `hour_llava_testing.tiny_tokenizer.build_tokenizer()`. config_overrides:
    `HourLlavaConfig` fields (`vision` and `text` update the sub-configs).
    """
    from transformers import SiglipImageProcessor

    from hour_llava_testing.tiny_tokenizer import build_tokenizer
    from modeling_hour_llava import (
        HourLlavaConfig,
        HourLlavaForConditionalGeneration,
        HourLlavaProcessor,
        HourLlavaVideoProcessor,
    )

    tokenizer = build_tokenizer() if tokenizer is None else tokenizer
    vision = dict(TINY_VISION_CONFIG, image_size=frame_size)
    text = dict(TINY_TEXT_CONFIG, vocab_size=len(tokenizer))
    vision.update(config_overrides.pop("vision", {}))
    text.update(config_overrides.pop("text", {}))
    config = HourLlavaConfig(
        vision_config=vision,
        text_config=text,
        memaug_num_layers=config_overrides.pop("memaug_num_layers", 2),
        memory_min_frames=video_min_frames,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = HourLlavaForConditionalGeneration(config)
    if customize is not None:
        with torch.no_grad():
            customize(model, tokenizer)
    size = {"height": frame_size, "width": frame_size}
    processor = HourLlavaProcessor(
        image_processor=SiglipImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(size=size, min_frames=video_min_frames),
        token_geometry=HourLlavaProcessor.geometry_from_config(config),
    )
    # Generation stops at the end of the turn, as a chat checkpoint's generation config says.
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return os.fspath(path)
