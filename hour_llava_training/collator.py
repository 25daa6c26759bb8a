"""Chat rows -> model inputs with assistant-only labels; a broken sample is skipped and counted, never fatal.

    trainer = SFTTrainer(model, args=SFTConfig(..., remove_unused_columns=False, max_length=None,
                                                dataset_kwargs={"skip_prepare_dataset": True}),
                         train_dataset=rows, processing_class=processor,
                         data_collator=HourLlavaDataCollator(processor, media_root="videos"))

Rows follow `dataset_builder.chat` (`{"messages": [{"role", "content": [{"type", "text" | "path"}]}]}`). One batch may
mix every kind of sample: cached feature files, decoded videos, images and text-only rows; the processor returns
each kind in its own tensor and the model routes each video by `video_is_features`.

Paths follow the dataset builders' rule (`dataset_builder.media.resolve_under_root`): a relative path resolves under
`media_root` (the working directory if none is given) and may not leave it (`..`, symlinks); an absolute path must
lie under `media_root` or `feature_dir` when either is given. A video with a cached memory-repository file in
`feature_dir` is read from there instead of being decoded; the cache follows `dataset_builder.extract_features`
(run over `media_root`): `synthetic/video_0000.mp4` -> `<feature_dir>/synthetic/video_0000.safetensors`, the same
file `dataset_builder.mixtures.videomarathon_chat(feature_root=...)` points rows at.

Labels are the input ids of each assistant answer and its end-of-turn token (`red<|im_end|>`), -100 elsewhere: the
turn header, the system prompt, user turns, placeholders and padding. The processor finds them from the token ids
(`HourLlavaProcessor.assistant_label_mask`), not from transformers' `{% generation %}` mask, which is all zeros for
samples with a video on transformers 5.17.

A sample that cannot be used is dropped from its batch and counted under one of `SKIP_REASONS`: no assistant turn,
a media block without a path, a path outside its root, a missing file, an undecodable video, a broken or foreign
feature file, non-finite features or frames, anything else the processor refuses for that sample alone, a sample
in which no token is supervised (the chat template's turn markers were not found: a run of such samples stops at the
broken-sample limit instead of training on nothing), or text that spells out a turn marker (`<|im_start|>`,
`<|im_end|>`: it would tokenize as one, open or close a turn in the middle of a message, and shift the labels). A batch
with nothing left becomes one text-only sample whose labels are all ignored, so the step still runs (the same number
of steps on every process) and teaches nothing. The collator keeps its own counts (`skipped`, `feature_hits`) and,
with `report_in_batch=True` (set by `HourLlavaSFTTrainer`), also puts them in the batch under `REPORT_KEY`, so they
survive data-loader worker processes: the trainer takes them out before the forward and sums them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

import torch

from dataset_builder.chat import clean_messages
from dataset_builder.extract_features import feature_name
from dataset_builder.media import ESCAPES_ROOT, MISSING, UNREADABLE, MediaPathError, resolve_under_root
from modeling_hour_llava.errors_hour_llava import VideoDecodeError
from modeling_hour_llava.features_hour_llava import FEATURE_SUFFIXES, NON_FINITE_FEATURES_REASON
from modeling_hour_llava.processing_hour_llava import FOREIGN_FEATURES_REASON

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100
MEDIA_TYPES = ("video", "image")
REPORT_KEY = "hour_llava_report"

# Why a sample was skipped: stable strings (training_summary.json and the log count by them).
EMPTY_CONVERSATION = "empty_conversation"
MISSING_PATH = "missing_path"
UNDECODABLE_VIDEO = "undecodable_video"
BROKEN_FEATURES = "broken_feature_file"
FOREIGN_FEATURES = "foreign_feature_file"
NON_FINITE = "non_finite_media"
UNPROCESSABLE = "unprocessable_sample"
NO_TARGETS = "no_supervised_tokens"
MARKER_IN_TEXT = "turn_marker_in_text"
SKIP_REASONS = (
    EMPTY_CONVERSATION,
    MISSING_PATH,
    ESCAPES_ROOT,
    MISSING,
    UNREADABLE,
    UNDECODABLE_VIDEO,
    BROKEN_FEATURES,
    FOREIGN_FEATURES,
    NON_FINITE,
    UNPROCESSABLE,
    NO_TARGETS,
    MARKER_IN_TEXT,
)
# The processor's float media tensors, checked for NaN / inf (uint8 frames cannot hold them).
FLOAT_MEDIA_KEYS = ("pixel_values", "pixel_values_videos", "video_features")
# What a batch with no usable sample trains on: one text-only turn, every label ignored.
NOTHING_TO_LEARN = [
    {"role": "user", "content": [{"type": "text", "text": "."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "."}]},
]


class SampleError(ValueError):
    """A row that cannot be trained on: `reason` (one of `SKIP_REASONS`) and a detail naming the file or field."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


def row_name(row: dict, index: int) -> str:
    """How the log and errors name a row: `dataset/id` where the row has them."""
    name = str(row.get("id", f"#{index} of its batch"))
    return f"{row['dataset']}/{name}" if row.get("dataset") else name


class HourLlavaDataCollator:
    """Build a training batch from chat rows with `HourLlavaProcessor.apply_chat_template`, skipping broken samples.

    processor: an `HourLlavaProcessor`. media_root: folder that relative media paths are under (and may not leave).
    feature_dir: folder of cached memory repositories mirroring the video paths under `media_root`.
    processor_kwargs: extra video/image processor options. feature_width: the vision tower's width (the model's
    `vision_config.hidden_size`); a feature file of another width is skipped as foreign (`HourLlavaSFTTrainer` fills
    it from the model). report_in_batch: also return what was skipped under `REPORT_KEY` (for
    `HourLlavaSFTTrainer`, which removes it before the forward; leave it off with another trainer).
    """

    def __init__(
        self,
        processor,
        media_root: str | os.PathLike | None = None,
        feature_dir: str | os.PathLike | None = None,
        processor_kwargs: dict | None = None,
        feature_width: int | None = None,
        report_in_batch: bool = False,
    ):
        if not callable(getattr(processor, "assistant_label_mask", None)):
            raise TypeError(
                f"{type(processor).__module__}.{type(processor).__name__} has no assistant_label_mask, which the "
                "training labels come from: give an HourLlavaProcessor of this package (a checkpoint's own copy of "
                "processing_hour_llava.py may predate it: save the checkpoint again with this package)"
            )
        self.processor = processor
        self.media_root = os.fspath(media_root) if media_root is not None else None
        self.feature_dir = os.fspath(feature_dir) if feature_dir is not None else None
        self.processor_kwargs = dict(processor_kwargs or {})
        self.feature_width = feature_width
        self.report_in_batch = report_in_batch
        self.skipped: Counter[str] = Counter()
        self.feature_hits = 0

    # -------------------------------------------------------------------------------------------------------------
    # Rows -> conversations with checked paths
    # -------------------------------------------------------------------------------------------------------------
    def confine(self, path: str, what: str) -> str:
        """`path` resolved under its root (the builders' rule); SampleError if it leaves it."""
        if not os.path.isabs(path):
            root = self.media_root or os.getcwd()
            try:
                return resolve_under_root(root, path, what=what)
            except MediaPathError as error:
                raise SampleError(ESCAPES_ROOT, str(error)) from error
        roots = [root for root in (self.media_root, self.feature_dir) if root]
        for root in roots:
            try:
                return resolve_under_root(root, os.path.relpath(path, root), what=what)
            except MediaPathError:
                continue
        if roots:
            raise SampleError(ESCAPES_ROOT, f"{what} {path!r} lies outside {' and '.join(map(repr, roots))}")
        return path

    def resolve(self, block: dict) -> dict:
        """One media block with its path checked and made absolute, pointed at a cached feature file where one exists,
        and images opened (a broken image is found here, by name)."""
        kind, path = block["type"], block.get("path")
        if not path:
            raise SampleError(MISSING_PATH, f"a {kind} block without a path")
        path = self.confine(os.fspath(path), f"{kind} path")
        if kind == "video" and self.feature_dir and not path.endswith(FEATURE_SUFFIXES):
            relative = os.path.relpath(path, os.path.realpath(self.media_root or os.getcwd()))
            cached = os.path.join(self.feature_dir, feature_name(relative))
            if not relative.startswith(os.pardir) and os.path.isfile(cached):
                path = cached
        if not os.path.isfile(path):
            raise SampleError(MISSING, f"{path}: no such file")
        if kind == "image":
            return {"type": "image", "image": open_image(path)}
        return {**block, "path": path}

    def check_turn_markers(self, messages: list[dict]) -> None:
        """SampleError if a text block spells out the special token that opens an assistant turn or the end-of-turn
        token: the labels are found from those tokens (`HourLlavaProcessor.assistant_label_mask`)."""
        turn, tokenizer = self.processor.turn_format, self.processor.tokenizer
        special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
        markers = [tokenizer.decode([i]) for i in turn.header[:1] + (turn.end,) if i in special]
        for index, message in enumerate(messages):
            for block in message["content"]:
                found = [m for m in markers if block["type"] == "text" and m in block.get("text", "")]
                if found:
                    raise SampleError(
                        MARKER_IN_TEXT, f"message {index} ({message['role']}) spells out the turn marker {found[0]!r}"
                    )

    def conversation(self, row: dict) -> list[dict]:
        """A row's messages ready for the chat template; SampleError if it cannot be trained on."""
        messages = row.get("messages")
        if not messages or not any(message.get("role") == "assistant" for message in messages):
            raise SampleError(EMPTY_CONVERSATION, "no assistant turn to learn from")
        messages = clean_messages([{**message, "content": message.get("content") or []} for message in messages])
        self.check_turn_markers(messages)
        for message in messages:
            message["content"] = [
                self.resolve(block) if block["type"] in MEDIA_TYPES else block for block in message["content"]
            ]
        return messages

    # -------------------------------------------------------------------------------------------------------------
    # Conversations -> a batch, sample by sample where the batch fails
    # -------------------------------------------------------------------------------------------------------------
    def encode(self, conversations: list[list[dict]]) -> dict:
        batch = self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True, **self.processor_kwargs},
        )
        supervised = self.processor.assistant_label_mask(batch["input_ids"], batch.get("attention_mask"))
        batch["labels"] = batch["input_ids"].masked_fill(~supervised, IGNORE_INDEX)
        return dict(batch)

    def media_problem(self, batch: dict) -> tuple[str, str] | None:
        """(reason, detail) if the batch's media cannot be trained on: non-finite values, or features that are not
        this model's (width, or a patch grid that is neither the tower's nor the memory's)."""
        features = batch.get("video_features")
        if features is not None:
            geometry = self.processor.token_geometry
            grids = {geometry["vision_grid_size"] ** 2, geometry["memory_pool_size"] ** 2}
            if self.feature_width is not None and features.shape[-1] != self.feature_width:
                width = self.feature_width
                return FOREIGN_FEATURES, f"features of width {features.shape[-1]}; this model's tower gives {width}"
            if features.shape[1] not in grids:
                return FOREIGN_FEATURES, f"{features.shape[1]} tokens per frame; this model reads {sorted(grids)}"
        for key in FLOAT_MEDIA_KEYS:
            tensor = batch.get(key)
            if tensor is not None and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                return NON_FINITE, f"{key} holds NaN or infinite values"
        return None

    def target_problem(self, batch: dict) -> tuple[str, str] | None:
        """(NO_TARGETS, detail) if a sample of the batch has no supervised token, or None."""
        if (batch["labels"] != IGNORE_INDEX).any(dim=1).all():
            return None
        turn = self.processor.turn_format
        header, end = self.processor.decode(list(turn.header)), self.processor.decode([turn.end])
        return NO_TARGETS, (
            f"no token is supervised: no assistant turn opened by {header!r} and closed by {end!r} was found in "
            "the token ids (HourLlavaProcessor.turn_format, read from the chat template)"
        )

    def sample_problem(self, conversation: list[dict]) -> tuple[str, str] | None:
        """Why one conversation cannot be encoded on its own, or None."""
        try:
            batch = self.encode([conversation])
        except VideoDecodeError as error:
            if error.reason.startswith(FOREIGN_FEATURES_REASON):
                return FOREIGN_FEATURES, str(error)
            if error.reason.startswith(NON_FINITE_FEATURES_REASON):
                return NON_FINITE, str(error)
            return (BROKEN_FEATURES if error.path.endswith(FEATURE_SUFFIXES) else UNDECODABLE_VIDEO), str(error)
        except Exception as error:  # the processor raises many types; one sample's failure must not end the run
            return UNPROCESSABLE, f"{type(error).__name__}: {error}"
        problem = self.media_problem(batch)
        if problem is None:
            return self.target_problem(batch)
        return problem[0], f"{', '.join(media_paths(conversation))}: {problem[1]}"

    def encode_samples(self, samples: list[tuple[str, list[dict]]]) -> tuple[dict | None, list[dict]]:
        """(batch of the usable samples or None, skipped entries). The whole batch is encoded at once; only when
        that fails, its media are unusable or a sample has no supervised token, is each sample tried alone to find the
        broken ones."""
        if not samples:
            return None, []
        batch_error = None
        try:
            batch = self.encode([conversation for _, conversation in samples])
            if self.media_problem(batch) is None and self.target_problem(batch) is None:
                return batch, []
        except Exception as error:  # the broken sample is found sample by sample below
            batch_error = error
        good, skipped = [], []
        for name, conversation in samples:
            problem = self.sample_problem(conversation)
            if problem is None:
                good.append(conversation)
            else:
                skipped.append({"sample": name, "reason": problem[0], "detail": problem[1]})
        if not skipped and batch_error is not None:
            raise batch_error  # every sample works alone: a bug, not the data
        return (self.encode(good) if good else None), skipped

    def nothing_to_learn(self) -> dict:
        batch = self.encode([NOTHING_TO_LEARN])
        batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
        return batch

    def __call__(self, rows: list[dict]) -> dict:
        samples, skipped = [], []
        for index, row in enumerate(rows):
            name = row_name(row, index)
            try:
                samples.append((name, self.conversation(row)))
            except SampleError as error:
                skipped.append({"sample": name, "reason": error.reason, "detail": error.detail})
        batch, failed = self.encode_samples(samples)
        skipped += failed
        if batch is None:
            batch = self.nothing_to_learn()
        cached = int(batch["video_is_features"].sum()) if "video_is_features" in batch else 0
        for entry in skipped:
            self.skipped[entry["reason"]] += 1
            logger.warning("skipping sample %s (%s): %s", entry["sample"], entry["reason"], entry["detail"])
        self.feature_hits += cached
        if self.report_in_batch:
            batch[REPORT_KEY] = {"rows": len(rows), "skipped": skipped, "cached_features": cached}
        return batch


def open_image(path: str):
    """An RGB PIL image; SampleError naming the file if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises several types for damaged files
        raise SampleError(UNREADABLE, f"{path}: unreadable image ({error})") from error


def media_paths(conversation: list[dict]) -> list[str]:
    return [block["path"] for message in conversation for block in message["content"] if "path" in block]


HourLlavaCollator = HourLlavaDataCollator  # the name before it became public
