"""The other training sources and the stage mixtures, all in the chat row schema of `dataset_builder.chat`.

    from dataset_builder.mixtures import LlavaJson, build_mixture, videomarathon_chat
    short = LlavaJson(config_name="llava_video_178k", annotations=[...], media_root="data/LLaVA-Video-178K/videos")
    short.download_and_prepare(); short = short.as_dataset("train")
    long = videomarathon_chat(videomarathon_train, video_root="data/VideoMarathon/videos")
    stage3 = build_mixture({"videomarathon": 3, "llava_video_178k": 1}, {"videomarathon": long,
                           "llava_video_178k": short}, seed=0, streaming=True)

`LlavaJson` reads LLaVA-format JSON (`{"id", "image": str | [str] | "video" (+ "data_source"), "conversations":
[{"from": "human"|"gpt", "value"}]}`) for LLaVA-Video-178K (short videos, `media_root/<data_source>/<video>` as
the reference loads them) and LLaVA-OneVision single-image, multi-image and text data. Each `<image>` tag in a user
turn becomes the next media block at its place; media without a tag go first in the first user turn (the reference
prepends the tag). Missing media, paths outside `media_root` and items of another modality are excluded and counted
in a report (`strict=True` raises), like the VideoMarathon builder.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import datasets

from .chat import CHAT_FEATURES, map_media_paths, media_block, modality_of, text_block, turn
from .media import (
    EMPTY_TEXT,
    INVALID_FIELD,
    UNKNOWN_SOURCE,
    ExclusionReport,
    RowError,
    check_media,
    files_fingerprint,
    id_field,
    object_item,
    path_field,
    resolve_under_root,
    shown,
    text_field,
)
from .videomarathon import conversation_turns, read_annotation_items, source_root

logger = logging.getLogger(__name__)

WRONG_MODALITY = "wrong_modality"
SKIP_COLUMN = "_skip_reason"  # videomarathon_chat: why a row is dropped ("" when kept)
MEDIA_TAG = "<image>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
SOURCE_MODALITIES = {
    "llava_video_178k": "video",
    "llava_onevision_si": "image",
    "llava_onevision_mi": "multi_image",
    "llava_onevision_text": "text",
}
SAMPLING_KINDS = ("first", "end", "random")
STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")


# ---------------------------------------------------------------------------------------------------------------
# LLaVA JSON -> chat rows
# ---------------------------------------------------------------------------------------------------------------
def item_media(item: dict, media_root: str | None, use_data_source: bool) -> list[tuple[str, str]]:
    """(kind, absolute path) of an item's media, resolved under `media_root` (MediaPathError if it escapes or is
    not a path; RowError for an `image` that is neither a path nor a list of paths)."""
    if item.get("video") is not None:
        relative = path_field(item["video"], "video")
        source = text_field(item.get("data_source"), "data_source", required=False)
        if use_data_source and source:
            relative = os.path.join(path_field(source, "data_source"), relative)
        kinds = [("video", relative)]
    else:
        images = item.get("image")
        images = [] if images is None else [images] if isinstance(images, str) else images
        if not isinstance(images, list):
            raise RowError(f"image must be a path or a list of paths, got {shown(images)}")
        kinds = [("image", path_field(image, f"image[{index}]")) for index, image in enumerate(images)]
    if kinds and not media_root:
        raise RowError("the item has media but the config has no media_root")
    return [
        (kind, resolve_under_root(media_root, path, what=f"{kind} of item {item.get('id')}")) for kind, path in kinds
    ]


def user_blocks(text: str, media: list[tuple[str, str]]) -> list[dict]:
    """A user turn's blocks: text split at each `<image>` tag, the next media block in its place."""
    pieces = text.split(MEDIA_TAG)
    if len(pieces) - 1 > len(media):
        raise RowError(f"{len(pieces) - 1} {MEDIA_TAG} tags but {len(media)} media in the item")
    blocks = []
    for index, piece in enumerate(pieces):
        if index > 0:
            kind, path = media.pop(0)
            blocks.append(media_block(kind, path))
            piece = piece.lstrip("\n")
        if piece.strip():
            blocks.append(text_block(piece.strip() if index == len(pieces) - 1 else piece))
    return blocks


def llava_messages(item: dict, media: list[tuple[str, str]]) -> list[dict]:
    """LLaVA `conversations` -> chat messages; untagged media lead the first user turn. Every assistant turn must
    have text, every user turn text or media (`empty_text` otherwise)."""
    given = conversation_turns(item)
    unknown = sorted({role for role, _ in given if role not in ROLES})
    if unknown:
        raise RowError(f"unknown role(s) {unknown} in conversations; expected one of {sorted(ROLES)}")
    turns = [(ROLES[role], text) for role, text in given]
    while turns and turns[0][0] == "assistant":
        turns = turns[1:]  # the reference drops a leading non-human turn
    if not turns:
        raise RowError("no conversation turns")
    pending, tags = list(media), sum(text.count(MEDIA_TAG) for role, text in turns if role == "user")
    untagged = [media_block(kind, path) for kind, path in pending[tags:]]
    pending = pending[:tags]
    messages, first_user = [], True
    for role, text in turns:
        if role == "user":
            blocks = user_blocks(text, pending)
            if first_user:
                blocks, first_user = untagged + blocks, False
        else:
            blocks = [text_block(text_field(text, f"{role} turn {len(messages)}"))]
        if not blocks:
            raise RowError(f"{role} turn {len(messages)} has neither text nor media", EMPTY_TEXT)
        messages.append(turn(role, blocks))
    return messages


def annotation_entries(annotations, default_strategy: str) -> list[tuple[str, str]]:
    """(path, sampling strategy) per annotation file, from a path, a list of paths, or the reference's
    `{"json_path", "sampling_strategy"}` entries."""
    if isinstance(annotations, (str, os.PathLike, dict)):
        annotations = [annotations]
    entries = []
    for entry in annotations:
        if isinstance(entry, dict):
            entries.append((os.fspath(entry["json_path"]), entry.get("sampling_strategy", default_strategy)))
        else:
            entries.append((os.fspath(entry), default_strategy))
    return entries


def sample_items(items: list, strategy: str, seed: str) -> list:
    """The reference's per-file sampling: `all`, or `first|end|random:P%` (ceil(P% of the items)) or `:N` items."""
    if strategy == "all":
        return items
    kind, _, amount = strategy.partition(":")
    if kind not in SAMPLING_KINDS or not amount:
        raise ValueError(
            f"sampling strategy {strategy!r}; expected 'all' or one of {SAMPLING_KINDS} with ':P%' or ':N'"
        )
    count = math.ceil(float(amount[:-1]) * len(items) / 100) if amount.endswith("%") else int(amount)
    if kind == "first":
        return items[:count]
    if kind == "end":
        return items[len(items) - count :] if count else []
    return sorted(random.Random(seed).sample(items, min(count, len(items))), key=lambda pair: pair[0])


@dataclass
class LlavaJsonConfig(datasets.BuilderConfig):
    """annotations: LLaVA JSON/JSONL file(s), each a path or, as in the reference's data yamls, `{"json_path": ...,
    "sampling_strategy": "first:10%"}`. sampling_strategy: the default for plain paths (`all`, or `first|end|random`
    `:P%` or `:N`, per file; `random` is seeded by `sampling_seed`). media_root: the image folder or the video root.
    use_data_source: videos live under `media_root/<data_source>/`. modality: keep only items of this modality (the
    config's own by default; None keeps all). check_media / strict / report_path: as in the VideoMarathon builder."""

    annotations: str | list | None = None
    sampling_strategy: str = "all"
    sampling_seed: int = 0
    media_root: str | None = None
    use_data_source: bool = True
    modality: str | None = None
    check_media: str = "exists"
    strict: bool = False
    report_path: str | None = None
    annotations_fingerprint: str = ""  # set by the builder from the files: a changed file is a new cache entry


class LlavaJson(datasets.GeneratorBasedBuilder):
    """LLaVA-format training JSON as chat rows (one `train` split)."""

    BUILDER_CONFIG_CLASS = LlavaJsonConfig
    BUILDER_CONFIGS = [
        LlavaJsonConfig(name=name, version=datasets.Version("1.0.0"), modality=modality)
        for name, modality in SOURCE_MODALITIES.items()
    ]

    def __init__(self, *args, **kwargs):
        if kwargs.get("annotations"):
            paths = [path for path, _ in annotation_entries(kwargs["annotations"], "all")]
            kwargs.setdefault("annotations_fingerprint", files_fingerprint(paths))
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=__doc__.split("\n\n")[0], features=CHAT_FEATURES)

    @property
    def report_path(self) -> str:
        if self.config.report_path:
            return self.config.report_path
        return os.path.join(self._cache_dir_root, "reports", f"llava_json-{self.config_id}.json")

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        if not self.config.annotations:
            raise ValueError(f"{self.config.name} needs annotations=<LLaVA json file or list of files>")
        rows, report = self.prepare_rows(annotation_entries(self.config.annotations, self.config.sampling_strategy))
        report.write(self.report_path)
        report.raise_if_strict(self.config.strict, self.report_path)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"rows": rows})]

    def prepare_rows(self, entries: list[tuple[str, str]]) -> tuple[list[dict], ExclusionReport]:
        """Chat rows of every sampled item that converts and whose media pass the check; the rest counted by
        reason. `entries`: (path, sampling strategy) per file."""
        report, rows = ExclusionReport(name=f"llava_json/{self.config.name}"), []
        for path, strategy in entries:
            items = list(enumerate(read_annotation_items(path, report)))
            seed = f"{self.config.sampling_seed}\0{os.path.basename(path)}"  # not the folder: moving data keeps it
            for index, item in sample_items(items, strategy, seed):
                row = self.convert(item, f"{os.path.basename(path)}#{index}", report)
                if row is not None:
                    rows.append(row)
        report.kept = {"train": len(rows)}
        return rows, report

    def convert(self, item, position: str, report: ExclusionReport) -> dict | None:
        """One item -> a chat row, or None with the reason counted in `report` (`position`: file#index, the id of
        an item without one)."""
        config = self.config
        row_id = position
        try:
            row_id = id_field(object_item(item).get("id"), position)
            media = item_media(item, config.media_root, config.use_data_source)
            messages = llava_messages(item, media)
        except RowError as error:
            report.exclude_row(error.reason, row_id, str(error))
            return None
        except (ValueError, TypeError) as error:
            report.exclude_row(INVALID_FIELD, row_id, str(error))
            return None
        modality = modality_of(messages)
        if config.modality and modality != config.modality:
            report.exclude_row(WRONG_MODALITY, row_id, f"a {modality} item in a {config.modality} source")
            return None
        for _, path in media:
            reason, detail, _ = check_media(path, config.check_media)
            if reason:
                report.exclude_media(reason, path, detail, 1)
                return None
        return {"id": row_id, "dataset": config.name, "modality": modality, "messages": messages}

    def _generate_examples(self, rows: list[dict]) -> Iterator[tuple[str, dict]]:
        for index, row in enumerate(rows):
            yield f"{index}", row


# ---------------------------------------------------------------------------------------------------------------
# VideoMarathon rows -> chat rows, and mixtures
# ---------------------------------------------------------------------------------------------------------------
def videomarathon_chat(
    dataset: datasets.Dataset | datasets.IterableDataset,
    video_root: str | None = None,
    video_roots: dict[str, str] | None = None,
    feature_root: str | None = None,
    name: str = "videomarathon",
    skipped: Counter | None = None,
):
    """VideoMarathon rows (either config, built here or loaded from the Hub) -> chat rows whose video block points
    at the local video, or at its memory-repository file `feature_root/<source>/<video stem>.safetensors` (what
    stage 3 trains on; the processor reads it as features).

    A row whose video cannot be placed (its path leaves its root, or its source has no video root) is skipped with
    a warning naming the row, and counted by reason in `skipped` (as rows are read, so a streamed dataset counts
    as it streams)."""

    def place(row: dict) -> str:
        if feature_root:
            relative = os.path.splitext(f"{row['source']}/{row['video']}")[0] + ".safetensors"
            return resolve_under_root(feature_root, relative, what=f"features of row {row['id']}")
        root = source_root(row["source"], video_root, video_roots)
        if root is None:
            raise RowError(f"row {row['id']}: no video root for source {row['source']!r}", UNKNOWN_SOURCE)
        return resolve_under_root(root, row["video"], what=f"video of row {row['id']}")

    def convert(row: dict) -> dict:
        reason, messages = "", row["messages"]
        try:
            path = place(row)
            messages = map_media_paths(messages, lambda kind, _: path if kind == "video" else _)
        except RowError as error:
            reason = error.reason
            logger.warning("videomarathon_chat: row %s skipped (%s): %s", row["id"], reason, error)
        return {"id": row["id"], "dataset": name, "modality": "video", "messages": messages, SKIP_COLUMN: reason}

    def kept(reason: str) -> bool:
        if reason and skipped is not None:
            skipped[reason] += 1
        return not reason

    columns = [column for column in (dataset.column_names or []) if column not in CHAT_FEATURES]
    converted = dataset.map(convert, remove_columns=columns)
    # Counted on every call: a map-style filter is not read back from datasets' cache (the map may be).
    fresh = {"load_from_cache_file": False, "keep_in_memory": True} if isinstance(dataset, datasets.Dataset) else {}
    return converted.filter(kept, input_columns=SKIP_COLUMN, **fresh).remove_columns(SKIP_COLUMN).cast(CHAT_FEATURES)


def build_mixture(
    weights: dict[str, float],
    sources: dict[str, datasets.Dataset | datasets.IterableDataset],
    seed: int = 0,
    streaming: bool = False,
    stopping_strategy: str = "first_exhausted",
    num_shards: int = 64,
):
    """Interleave chat-row sources with probabilities proportional to `weights` ("3 long : 1 short" is
    `{"videomarathon": 3, "llava_video_178k": 1}`), seeded. `first_exhausted` (default) stops when a source runs
    out, so no row repeats and the ratio holds; `all_exhausted` oversamples the small sources until every row is
    seen. `streaming=True` returns an IterableDataset (map-style sources are streamed in `num_shards` shards)."""
    if set(weights) != set(sources):
        raise ValueError(f"weights name {sorted(weights)} but sources name {sorted(sources)}; they must match")
    if any(weight <= 0 for weight in weights.values()):
        raise ValueError(f"mixture weights must be positive: {weights}")
    if stopping_strategy not in STOPPING_STRATEGIES:
        raise ValueError(f"stopping_strategy={stopping_strategy!r}; expected one of {STOPPING_STRATEGIES}")
    names = list(weights)
    parts = []
    for name in names:
        part = sources[name]
        missing = [column for column in CHAT_FEATURES if column not in (part.column_names or CHAT_FEATURES)]
        if missing:
            raise ValueError(f"source {name!r} lacks chat columns {missing}; convert it (e.g. videomarathon_chat)")
        part = part.select_columns(list(CHAT_FEATURES)).cast(CHAT_FEATURES)
        if streaming and isinstance(part, datasets.Dataset):
            part = part.to_iterable_dataset(num_shards=min(num_shards, max(1, len(part))))
        parts.append(part)
    total = sum(weights.values())
    return datasets.interleave_datasets(
        parts, probabilities=[weights[name] / total for name in names], seed=seed, stopping_strategy=stopping_strategy
    )
