"""The one row schema every training source comes out in: chat messages whose media are referenced by path.

    {"id": str, "dataset": str, "modality": "video" | "image" | "multi_image" | "text",
     "messages": [{"role": "user" | "assistant" | "system",
                   "content": [{"type": "text" | "video" | "image", "text": str | None, "path": str | None}]}]}

Arrow stores every block with both `text` and `path` (one of them None); `clean_messages` drops the None keys, which
gives exactly what `HourLlavaProcessor.apply_chat_template` reads (`{"type": "video", "path": ...}`), so a
collator is `processor.apply_chat_template([clean_messages(row["messages"], open_images=True) for row in
batch], ...)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import datasets

CONTENT_BLOCK = {"type": datasets.Value("string"), "text": datasets.Value("string"), "path": datasets.Value("string")}
MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.List(CONTENT_BLOCK)})
CHAT_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "dataset": datasets.Value("string"),
        "modality": datasets.Value("string"),
        "messages": MESSAGES,
    }
)
MEDIA_TYPES = ("video", "image")
MODALITIES = ("video", "image", "multi_image", "text")


def text_block(text: str) -> dict:
    return {"type": "text", "text": text, "path": None}


def media_block(kind: str, path: str) -> dict:
    if kind not in MEDIA_TYPES:
        raise ValueError(f"media block type {kind!r}; expected one of {MEDIA_TYPES}")
    return {"type": kind, "text": None, "path": path}


def turn(role: str, blocks: list[dict]) -> dict:
    return {"role": role, "content": blocks}


def qa_messages(video_path: str, questions: list[str], answers: list[str]) -> list[dict]:
    """A multi-turn conversation about one video: the video leads the first user turn (as the reference does)."""
    messages = []
    for index, (question, answer) in enumerate(zip(questions, answers, strict=True)):
        blocks = [media_block("video", video_path)] if index == 0 else []
        messages.append(turn("user", [*blocks, text_block(question)]))
        messages.append(turn("assistant", [text_block(answer)]))
    return messages


def modality_of(messages: list[dict]) -> str:
    """video, image (one image), multi_image (several) or text, from the media blocks of a conversation."""
    kinds = [block["type"] for message in messages for block in message["content"] if block["type"] in MEDIA_TYPES]
    if "video" in kinds:
        return "video"
    if not kinds:
        return "text"
    return "image" if len(kinds) == 1 else "multi_image"


def clean_messages(messages: list[dict], open_images: bool = False) -> list[dict]:
    """Arrow rows -> chat-template messages: drop the None `text`/`path` keys of every block.

    open_images: replace image paths by opened RGB PIL images (`{"type": "image", "image": ...}`), decoded here
    with PIL rather than by transformers' path loader (torchvision, deprecated there); videos stay paths, which
    the video processor decodes at 1 fps.
    """
    return [
        {"role": message["role"], "content": [_clean_block(block, open_images) for block in message["content"]]}
        for message in messages
    ]


def _clean_block(block: dict, open_images: bool) -> dict:
    if open_images and block["type"] == "image" and block.get("path"):
        from PIL import Image

        with Image.open(block["path"]) as image:
            return {"type": "image", "image": image.convert("RGB")}
    return {key: value for key, value in block.items() if value is not None}


def map_media_paths(messages: list[dict], resolve: Callable[[str, str], str]) -> list[dict]:
    """A copy of `messages` with every media path replaced by `resolve(kind, path)` (e.g. relative -> absolute)."""
    return [
        {
            "role": message["role"],
            "content": [
                {**block, "path": resolve(block["type"], block["path"])} if block["type"] in MEDIA_TYPES else block
                for block in message["content"]
            ],
        }
        for message in messages
    ]


def media_paths(messages: list[dict]) -> list[str]:
    """Every media path of a conversation, in order."""
    return [
        os.fspath(block["path"])
        for message in messages
        for block in message["content"]
        if block["type"] in MEDIA_TYPES and block.get("path")
    ]
