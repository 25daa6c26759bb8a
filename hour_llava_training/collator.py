"""Chat rows -> model inputs with assistant-only labels, robust to broken videos.

Rows follow `dataset_builder.chat` (`{"messages": [{"role", "content": [{"type", "text" | "path"}]}]}`). Relative
media paths resolve against `media_root`; a video with a cached memory-repository file in `feature_dir` is read from
there instead of being decoded. The cache follows `dataset_builder.extract_features` (run over `media_root`):
`synthetic/video_0000.mp4` -> `<feature_dir>/synthetic/video_0000.safetensors`, the same file
`dataset_builder.mixtures.videomarathon_chat(feature_root=...)` points rows at (those count as cached too).
Labels are the input ids where the processor's `{% generation %}` marks say "assistant", -100 elsewhere (padding
included).

A sample whose video cannot be decoded is dropped from its batch and counted (`skipped`, by reason); a batch with
nothing left is replaced by the last good sample with every label ignored, so the step still runs (the same number
of steps on every process) and teaches nothing.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import Counter

import torch

from dataset_builder.chat import clean_messages
from dataset_builder.extract_features import FEATURE_SUFFIX, feature_name

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100
MEDIA_TYPES = ("video", "image")


class HourLlavaCollator:
    """Build a training batch from chat rows with `HourLlavaProcessor.apply_chat_template`.

    processor: an `HourLlavaProcessor`. media_root: folder that relative media paths are under. feature_dir: folder
    of cached memory repositories mirroring the media paths. processor_kwargs: extra video/image processor options.
    """

    def __init__(
        self,
        processor,
        media_root: str | None = None,
        feature_dir: str | None = None,
        processor_kwargs: dict | None = None,
    ):
        self.processor = processor
        self.media_root = media_root
        self.feature_dir = feature_dir
        self.processor_kwargs = dict(processor_kwargs or {})
        self.skipped: Counter[str] = Counter()
        self.feature_hits = 0
        self._fallback: list[dict] | None = None

    def resolve(self, block: dict) -> dict:
        """One media block with its path made absolute, or pointed at a cached feature file."""
        path = block["path"]
        relative = not os.path.isabs(path)
        if block["type"] == "video" and path.endswith(FEATURE_SUFFIX):
            self.feature_hits += 1  # rows built on the cache already (videomarathon_chat with feature_root)
        elif block["type"] == "video" and self.feature_dir and relative:
            cached = os.path.join(self.feature_dir, feature_name(path))
            if os.path.isfile(cached):
                self.feature_hits += 1
                return {**block, "path": cached}
        if relative and self.media_root:
            path = os.path.join(self.media_root, path)
        return {**block, "path": path}

    def conversation(self, row: dict) -> list[dict]:
        messages = clean_messages(row["messages"])
        for message in messages:
            message["content"] = [
                self.resolve(block) if block["type"] in MEDIA_TYPES and "path" in block else block
                for block in message["content"]
            ]
        return messages

    def encode(self, conversations: list[list[dict]]) -> dict:
        batch = self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs={"padding": True, **self.processor_kwargs},
        )
        labels = batch["input_ids"].masked_fill(batch.pop("assistant_masks") == 0, IGNORE_INDEX)
        if "attention_mask" in batch:
            labels = labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        batch["labels"] = labels
        return dict(batch)

    def __call__(self, rows: list[dict]) -> dict:
        from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError

        conversations = [self.conversation(row) for row in rows]
        while conversations:
            try:
                batch = self.encode(conversations)
            except VideoDecodeError as error:
                kept = [c for c in conversations if not _uses(c, error.path)]
                if len(kept) == len(conversations):
                    raise
                self.skipped[error.reason.split(" (")[0]] += len(conversations) - len(kept)
                logger.warning("skipping %d sample(s): %s", len(conversations) - len(kept), error)
                conversations = kept
                continue
            self._fallback = copy.deepcopy(conversations[:1])
            return batch
        if self._fallback is None:
            raise RuntimeError("every sample of the first batch has a broken video; nothing to train on")
        batch = self.encode(self._fallback)
        batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
        return batch


def _uses(conversation: list[dict], path: str) -> bool:
    return any(block.get("path") == path for message in conversation for block in message["content"])
