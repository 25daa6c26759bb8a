"""VideoMarathon as a `datasets` builder: released QA annotations + local videos -> typed Parquet-ready rows.

    from dataset_builder.videomarathon import VideoMarathon
    builder = VideoMarathon(config_name="grouped", annotations="jsons/videomarathon.json",
                            video_root="data/VideoMarathon/videos", cache_dir="cache")
    builder.download_and_prepare(); train = builder.as_dataset("train")

Annotations (a file or a list of files; .json, .jsonl or .parquet) come in either released format:

* Hub rows (`jylins/videomarathon`): one QA pair per row. The Hub's column names are unverified offline, so each
  field is read from the first present name in `HUB_FIELD_ALIASES` (`video`/`video_path`, `data_source`/`source`,
  `task`/`task_type`, `question_type`/`qa_type`, `options`/`candidates`/`choices`, ...). The topic comes from the
  task when absent.
* The grouped LLaVA-style training file `videomarathon.json`: `{"id", "video", "data_source", "conversations":
  [{"from": "human"|"gpt", "value"}, ...]}`; its items carry no task, topic or question type (those stay null).

Videos live under one root per source: `video_roots={"panda": "/data/panda", ...}`, or `video_root` whose
sub-folders are the sources (the reference layout `VideoMarathon/videos/{activitynet,ego4d,...}`). A row's `video`
is its path relative to its source's root; paths that are absolute or leave the root are refused.

Configs: `qa` (one row per QA pair) and `grouped` (up to `group_size` = 5 QA pairs about the same video as one
multi-turn conversation, as the paper trains; the LLaVA file's own groups are kept). Splits `train` and
`validation` are by video: a hash of (seed, source, video) decides, so no video is in both, and the assignment does
not change when rows are added. No row stops a build: lines that are not JSON, items that are not objects, fields
of the wrong type or value (empty question or answer, a duration that is not a finite positive number, options
that are not a list of texts, a path with a NUL byte, ...), paths that escape their root, duplicate ids and videos
that are missing, unreadable or truncated (`check_videos="probe"` decodes each video's end) are excluded and
counted by reason in a JSON report (`builder.report_path`, written atomically); `strict=True` raises instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets

from .chat import MESSAGES, qa_messages
from .media import (
    DUPLICATE_ID,
    INVALID_FIELD,
    INVALID_JSON,
    UNKNOWN_SOURCE,
    ExclusionReport,
    MediaPathError,
    RowError,
    check_media,
    duration_field,
    files_fingerprint,
    id_field,
    object_item,
    options_field,
    path_field,
    resolve_under_root,
    shown,
    text_field,
)

# The 22 tasks by topic (the dataset card's taxonomy figure); True marks long-form tasks, False short-form ones.
TAXONOMY: dict[str, dict[str, bool]] = {
    "Temporality": {
        "Temporal Perception": False,
        "Duration Perception": True,
        "Temporal Reasoning": True,
        "Temporal Gap Estimation": True,
        "Temporal Order": True,
    },
    "Spatiality": {"Spatial Perception": False, "Spatial Reasoning": True},
    "Object": {
        "Object Recognition": False,
        "Object Attribute": False,
        "Object Interaction": False,
        "Object Reasoning": True,
        "Object Existence": True,
        "Object Permanence": True,
    },
    "Action": {
        "Action Recognition": False,
        "Action Localization": True,
        "Action Sequence": True,
        "Action Reasoning": True,
    },
    "Scene": {"Scene Recognition": False, "Scene Transition": True},
    "Event": {"Event Sequence": True, "Key Event Extraction": True, "Overall Summarization": True},
}
TOPICS = tuple(TAXONOMY)
TASKS = tuple(task for tasks in TAXONOMY.values() for task in tasks)
TASK_TOPIC = {task: topic for topic, tasks in TAXONOMY.items() for task in tasks}
LONG_FORM_TASKS = frozenset(task for tasks in TAXONOMY.values() for task, long in tasks.items() if long)
OPEN_ENDED, MULTIPLE_CHOICE = "open-ended", "multiple-choice"
QUESTION_TYPES = (OPEN_ENDED, MULTIPLE_CHOICE)
QUESTION_TYPE_ALIASES = {"oe": OPEN_ENDED, "open": OPEN_ENDED, "mc": MULTIPLE_CHOICE, "mcq": MULTIPLE_CHOICE}
SOURCES = ("panda", "ego4d", "activitynet", "youcook2", "moviechat")  # the released sources (the card's order)
# Hub-row field -> accepted column names, first present wins.
HUB_FIELD_ALIASES = {
    "id": ("id", "qa_id", "question_id"),
    "video": ("video", "video_path", "video_id"),
    "source": ("data_source", "source"),
    "duration": ("duration",),
    "task": ("task", "task_type", "task_name", "category"),
    "topic": ("topic",),
    "question_type": ("question_type", "qa_type", "type"),
    "question": ("question",),
    "options": ("options", "candidates", "choices"),
    "answer": ("answer",),
}
MC_PROMPT = "Answer with the option's letter from the given choices directly."
OPTION_LABEL = re.compile(r"^\(?[A-Z][.):]\s")
MEDIA_TAG = re.compile(r"<image>\s*|<video>\s*")
ANNOTATION_SUFFIXES = (".json", ".jsonl", ".parquet")

QA_FIELDS = {
    "topic": datasets.Value("string"),
    "task": datasets.Value("string"),
    "question_type": datasets.Value("string"),
    "question": datasets.Value("string"),
    "options": datasets.List(datasets.Value("string")),
    "answer": datasets.Value("string"),
}
VIDEO_FIELDS = {
    "video": datasets.Value("string"),
    "source": datasets.Value("string"),
    "duration": datasets.Value("float32"),
}
QA_FEATURES = datasets.Features({"id": datasets.Value("string"), **VIDEO_FIELDS, **QA_FIELDS, "messages": MESSAGES})
GROUPED_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        **VIDEO_FIELDS,
        "qa": datasets.List({"id": datasets.Value("string"), **QA_FIELDS}),
        "messages": MESSAGES,
    }
)


@dataclass
class QARecord:
    """One QA pair, normalised from either annotation format. `group` is the LLaVA item id for pre-grouped rows."""

    id: str
    video: str
    source: str
    question: str
    answer: str
    duration: float | None = None
    topic: str | None = None
    task: str | None = None
    question_type: str | None = None
    options: list[str] = field(default_factory=list)
    group: str | None = None

    @property
    def video_key(self) -> str:
        return f"{self.source}/{self.video}"

    def qa_fields(self) -> dict:
        return {
            "id": self.id,
            "topic": self.topic,
            "task": self.task,
            "question_type": self.question_type,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
        }


# ---------------------------------------------------------------------------------------------------------------
# Field normalisation
# ---------------------------------------------------------------------------------------------------------------
def _name_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


_TASK_KEYS = {_name_key(task): task for task in TASKS}
_TOPIC_KEYS = {_name_key(topic): topic for topic in TOPICS}


def normalize_task(value: str | None) -> str | None:
    """'temporal_order' / 'Temporal Order' -> 'Temporal Order'; None stays None; anything else is a ValueError."""
    if value is None or value == "":
        return None
    task = _TASK_KEYS.get(_name_key(str(value)))
    if task is None:
        raise ValueError(f"task {value!r} is not one of the 22 VideoMarathon tasks: {', '.join(TASKS)}")
    return task


def normalize_topic(value: str | None, task: str | None) -> str | None:
    """The topic as named in the taxonomy; it must agree with the task's topic when both are given."""
    topic = None
    if value not in (None, ""):
        topic = _TOPIC_KEYS.get(_name_key(str(value)))
        if topic is None:
            raise ValueError(f"topic {value!r} is not one of {', '.join(TOPICS)}")
    if task is not None:
        if topic is not None and topic != TASK_TOPIC[task]:
            raise ValueError(f"topic {topic!r} does not match task {task!r} (topic {TASK_TOPIC[task]!r})")
        topic = TASK_TOPIC[task]
    return topic


def normalize_question_type(value: str | None, options: list[str]) -> str | None:
    """open-ended / multiple-choice from the usual spellings; inferred from the options when the field is absent."""
    if value in (None, ""):
        return MULTIPLE_CHOICE if options else None
    key = _name_key(str(value)).replace(" ", "-")
    key = QUESTION_TYPE_ALIASES.get(key.replace("-", ""), QUESTION_TYPE_ALIASES.get(key, key))
    if key not in QUESTION_TYPES:
        raise ValueError(f"question type {value!r}; expected one of {QUESTION_TYPES} (or OE/MC)")
    return key


def format_question(question: str, options: list[str]) -> str:
    """The user text: the question, then the options labelled A., B., ... and the multiple-choice instruction."""
    if not options:
        return question
    labelled = [
        option if OPTION_LABEL.match(option) else f"{chr(ord('A') + index)}. {option}"
        for index, option in enumerate(options)
    ]
    return "\n".join([question, *labelled, MC_PROMPT])


# ---------------------------------------------------------------------------------------------------------------
# Reading annotations
# ---------------------------------------------------------------------------------------------------------------
def read_annotation_items(path: str, report: ExclusionReport | None = None) -> Iterator:
    """Items of a .json (a list), .jsonl (one value per line) or .parquet annotation file, as parsed (callers check
    that each is an object). A .jsonl line that is not JSON (or not UTF-8) is excluded as `invalid_json` in
    `report` (a ValueError naming the line without one); a file that cannot be read at all is a ValueError."""
    if path.endswith(".jsonl"):
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as error:
                    detail = f"{path}:{number}: not valid JSON ({error})"
                    if report is None:
                        raise ValueError(detail) from error
                    report.exclude_row(INVALID_JSON, f"{path}:{number}", detail)
    elif path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as handle:
                items = json.load(handle)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a valid JSON file ({error}); one item per line needs .jsonl") from error
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of annotation items, got {type(items).__name__}")
        yield from items
    elif path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(path).iter_batches()
            for batch in batches:
                yield from batch.to_pylist()
        except pa.ArrowException as error:
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from error
    else:
        raise ValueError(f"{path}: annotation files must end with one of {ANNOTATION_SUFFIXES}")


def _field(item: dict, name: str):
    for alias in HUB_FIELD_ALIASES[name]:
        if alias in item and item[alias] is not None:
            return item[alias]
    return None


def _name_field(item: dict, name: str) -> str:
    """An optional name (task, topic, question type, source) as text; other types are refused."""
    return text_field(_field(item, name), name, required=False)


def hub_row_record(item: dict, index: int) -> QARecord:
    """A Hub row -> QARecord, validating every field (a RowError names the bad field and its report reason)."""
    options = options_field(_field(item, "options"))
    task = normalize_task(_name_field(item, "task"))
    return QARecord(
        id=id_field(_field(item, "id"), index),
        video=path_field(_field(item, "video"), "video"),
        source=_name_field(item, "source"),
        question=text_field(_field(item, "question"), "question"),
        answer=text_field(_field(item, "answer"), "answer"),
        duration=duration_field(_field(item, "duration")),
        topic=normalize_topic(_name_field(item, "topic"), task),
        task=task,
        question_type=normalize_question_type(_name_field(item, "question_type"), options),
        options=options,
    )


def conversation_turns(item: dict) -> list[tuple[str, str]]:
    """(role, text) of a LLaVA item's `conversations`: a list of objects with `from`/`role` and `value`/`content`
    texts (a string, a null turn or a non-text value is a RowError naming the turn)."""
    conversations = item.get("conversations")
    if not isinstance(conversations, list):
        raise RowError(f"conversations must be a list of turns, got {type(conversations).__name__} "
                       f"{shown(conversations)}")  # fmt: skip
    turns = []
    for number, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise RowError(f"conversations[{number}] must be an object with 'from' and 'value', got {shown(turn)}")
        role = text_field(turn.get("from", turn.get("role")), f"conversations[{number}].from")
        text = text_field(turn.get("value", turn.get("content")), f"conversations[{number}].value", required=False)
        turns.append((role, text))
    return turns


def llava_item_records(item: dict, index: int) -> list[QARecord]:
    """A grouped LLaVA item -> one QARecord per (human, gpt) pair, with the media tag removed from the question."""
    turns = conversation_turns(item)
    if turns and turns[0][0] not in ("human", "user"):
        turns = turns[1:]  # the reference drops a leading non-human turn
    item_id = id_field(item.get("id"), index)
    video = path_field(item.get("video"), "video")
    source = text_field(item.get("data_source", item.get("source")), "data_source", required=False)
    duration = duration_field(item.get("duration"))
    records = []
    for pair in range(len(turns) // 2):
        (asker, question), (answerer, answer) = turns[2 * pair], turns[2 * pair + 1]
        if asker not in ("human", "user") or answerer not in ("gpt", "assistant"):
            raise RowError(f"conversation turns {2 * pair}-{2 * pair + 1} are {asker!r}/{answerer!r}")
        records.append(
            QARecord(
                id=f"{item_id}-{pair}",
                video=video,
                source=source,
                question=text_field(MEDIA_TAG.sub("", question), f"conversations[{2 * pair}].value (question)"),
                answer=text_field(answer, f"conversations[{2 * pair + 1}].value (answer)"),
                duration=duration,
                group=item_id,
            )
        )
    if not records:
        raise RowError("no (human, gpt) pair in 'conversations'")
    return records


def load_records(paths: list[str], report: ExclusionReport) -> list[QARecord]:
    """Every QA pair of every annotation file, in file order; every malformed item is excluded and counted by
    reason (`RowError.reason`), none stops the build."""
    records: list[QARecord] = []
    for path in paths:
        for index, item in enumerate(read_annotation_items(path, report)):
            name = f"{path}#{item.get('id', index) if isinstance(item, dict) else index}"
            try:
                item = object_item(item)
                if "conversations" in item:
                    records.extend(llava_item_records(item, index))
                else:
                    records.append(hub_row_record(item, index))
            except RowError as error:
                report.exclude_row(error.reason, name, f"{path}: item {index}: {error}")
            except (ValueError, TypeError) as error:  # normalize_task/topic/question_type name the field
                report.exclude_row(INVALID_FIELD, name, f"{path}: item {index}: {error}")
    return records


# ---------------------------------------------------------------------------------------------------------------
# Checks, splits and groups
# ---------------------------------------------------------------------------------------------------------------
def video_split(source: str, video: str, validation_fraction: float, seed: int = 0) -> str:
    """'validation' or 'train' for a video, from a hash of (seed, source, video): stable and row-independent."""
    digest = hashlib.sha256(f"{seed}\0{source}\0{video}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if position < validation_fraction else "train"


def source_root(source: str, video_root: str | None, video_roots: dict[str, str] | None) -> str | None:
    """Where a source's videos live: its own root, else `video_root/<source>`, else None (unknown source)."""
    if video_roots and source in video_roots:
        return video_roots[source]
    if video_root and source and "/" not in source and "\0" not in source and source not in (".", ".."):
        return os.path.join(video_root, source)
    return None


def locate_video(
    group: list[QARecord], video_root: str | None, video_roots: dict[str, str] | None
) -> tuple[str | None, str | None, str]:
    """(path, None, "") for a video inside its source root, else (None, exclusion reason, detail)."""
    source, video = group[0].source, group[0].video
    root = source_root(source, video_root, video_roots)
    if root is None:
        return None, UNKNOWN_SOURCE, f"no video root for source {source!r}"
    try:
        return resolve_under_root(root, video, what=f"video of rows {group[0].id}..."), None, ""
    except MediaPathError as error:
        return None, error.reason, str(error)


def check_videos(
    records: list[QARecord],
    video_root: str | None,
    video_roots: dict[str, str] | None,
    mode: str,
    report: ExclusionReport,
    workers: int = 1,
) -> list[QARecord]:
    """Keep the records whose video resolves inside its source root and passes `check_media` (each video once,
    `workers` at a time: probing 28K videos is I/O-bound); fill missing durations from the probe."""
    from concurrent.futures import ThreadPoolExecutor

    by_video: dict[str, list[QARecord]] = defaultdict(list)
    for record in records:
        by_video[record.video_key].append(record)
    located = {key: locate_video(group, video_root, video_roots) for key, group in by_video.items()}
    paths = {key: path for key, (path, _, _) in located.items() if path is not None}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = dict(zip(paths, pool.map(lambda path: check_media(path, mode), paths.values()), strict=True))
    kept = []
    for key, group in by_video.items():
        _, reason, detail = located[key]
        duration = None
        if reason is None:
            reason, detail, duration = checks[key]
        if reason:
            report.exclude_media(reason, key, detail, len(group))
            continue
        for record in group:
            if record.duration is None and duration is not None:
                record.duration = round(duration, 3)
        kept.extend(group)
    return kept


def drop_duplicate_ids(records: list[QARecord], report: ExclusionReport) -> list[QARecord]:
    """Row ids are dataset keys: the first row with an id stays, later ones are excluded."""
    seen, kept = set(), []
    for record in records:
        if record.id in seen:
            report.exclude_row(DUPLICATE_ID, record.id, f"duplicate id {record.id!r}")
            continue
        seen.add(record.id)
        kept.append(record)
    return kept


def group_records(records: list[QARecord], group_size: int, seed: int | None = 0) -> list[list[QARecord]]:
    """Up to `group_size` QA pairs of one video per group. Pre-grouped (LLaVA) records keep their groups; the others
    are ordered by id, shuffled per video with `seed` (None keeps id order), and cut into consecutive groups."""
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    pregrouped: dict[str, list[QARecord]] = defaultdict(list)
    by_video: dict[str, list[QARecord]] = defaultdict(list)
    for record in records:
        (pregrouped[record.group] if record.group is not None else by_video[record.video_key]).append(record)
    groups = list(pregrouped.values())
    for key in sorted(by_video):
        members = sorted(by_video[key], key=lambda record: record.id)
        if seed is not None:
            random.Random(f"{seed}\0{key}").shuffle(members)
        groups.extend(members[start : start + group_size] for start in range(0, len(members), group_size))
    return groups


def statistics(records: list[QARecord]) -> dict:
    """Counts by topic, task, question type and source, videos and hours: what the dataset card shows."""
    durations = {record.video_key: record.duration for record in records}
    known = [duration for duration in durations.values() if duration is not None]
    return {
        "qa_pairs": len(records),
        "videos": len(durations),
        "hours": round(sum(known) / 3600, 3) if known else None,
        "topics": dict(Counter(record.topic or "unknown" for record in records).most_common()),
        "tasks": dict(Counter(record.task or "unknown" for record in records).most_common()),
        "question_types": dict(Counter(record.question_type or "unknown" for record in records).most_common()),
        "sources": dict(Counter(record.source for record in records).most_common()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------------------
def qa_row(record: QARecord) -> dict:
    question = format_question(record.question, record.options)
    return {
        **record.qa_fields(),
        "video": record.video,
        "source": record.source,
        "duration": record.duration,
        "messages": qa_messages(record.video_key, [question], [record.answer]),
    }


def grouped_row(group: list[QARecord]) -> dict:
    first = group[0]
    suffix = first.group if first.group is not None else f"{first.video_key}#{group[0].id}"
    return {
        "id": suffix,
        "video": first.video,
        "source": first.source,
        "duration": first.duration,
        "qa": [record.qa_fields() for record in group],
        "messages": qa_messages(
            first.video_key,
            [format_question(record.question, record.options) for record in group],
            [record.answer for record in group],
        ),
    }


# ---------------------------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class VideoMarathonConfig(datasets.BuilderConfig):
    """annotations: file(s) in either format. video_root / video_roots: where each source's videos are.
    check_videos: "none" | "exists" | "probe" (open every video and decode its last seconds; slower, but catches
    unreadable and truncated files and fills missing durations with the decoded ones; `check_workers` threads).
    strict: raise instead of excluding. validation_fraction, split_seed: the split by video. group_size,
    group_seed: the grouped config's QA pairs per sample and per-video shuffle (None: id order). report_path:
    where the exclusion report goes (default: next to the builder's cache)."""

    annotations: str | list[str] | None = None
    video_root: str | None = None
    video_roots: dict[str, str] | None = None
    check_videos: str = "exists"
    strict: bool = False
    validation_fraction: float = 0.01
    split_seed: int = 0
    group_size: int = 5
    group_seed: int | None = 0
    report_path: str | None = None
    check_workers: int = 8
    annotations_fingerprint: str = ""  # set by the builder from the files: a changed file is a new cache entry


class VideoMarathon(datasets.GeneratorBasedBuilder):
    """VideoMarathon QA rows (`qa`) or grouped multi-turn samples (`grouped`), split by video."""

    BUILDER_CONFIG_CLASS = VideoMarathonConfig
    BUILDER_CONFIGS = [
        VideoMarathonConfig(name="qa", version=datasets.Version("1.0.0"), description="one row per QA pair"),
        VideoMarathonConfig(
            name="grouped", version=datasets.Version("1.0.0"), description="up to 5 QA pairs per video per row"
        ),
    ]
    DEFAULT_CONFIG_NAME = "grouped"

    def __init__(self, *args, **kwargs):
        if kwargs.get("annotations"):
            kwargs.setdefault("annotations_fingerprint", files_fingerprint(kwargs["annotations"]))
        super().__init__(*args, **kwargs)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=__doc__.split("\n\n")[0],
            features=GROUPED_FEATURES if self.config.name == "grouped" else QA_FEATURES,
            homepage="https://videomarathon.github.io/",
            license="apache-2.0 (annotations, academic research only); videos: the licences of their sources",
        )

    @property
    def report_path(self) -> str:
        if self.config.report_path:
            return self.config.report_path
        return os.path.join(self._cache_dir_root, "reports", f"videomarathon-{self.config_id}.json")

    def _annotation_paths(self) -> list[str]:
        paths = self.config.annotations
        if not paths:
            raise ValueError("VideoMarathon needs annotations=<file or list of files> (.json, .jsonl or .parquet)")
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        missing = [os.fspath(path) for path in paths if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"annotation file(s) not found: {missing}")
        return [os.fspath(path) for path in paths]

    def prepare_records(self) -> tuple[dict[str, list[QARecord]], ExclusionReport]:
        """Read, validate, check videos and split; write the report (and raise with strict=True)."""
        config = self.config
        if not config.video_root and not config.video_roots:
            raise ValueError("VideoMarathon needs video_root=<folder with one sub-folder per source> or video_roots")
        report = ExclusionReport(name=f"videomarathon/{config.name}")
        records = drop_duplicate_ids(load_records(self._annotation_paths(), report), report)
        records = check_videos(
            records, config.video_root, config.video_roots, config.check_videos, report, config.check_workers
        )
        splits: dict[str, list[QARecord]] = {"train": [], "validation": []}
        for record in records:
            splits[video_split(record.source, record.video, config.validation_fraction, config.split_seed)].append(
                record
            )
        report.kept = {split: len(rows) for split, rows in splits.items()}
        report.statistics = {"all": statistics(records), **{split: statistics(rows) for split, rows in splits.items()}}
        report.write(self.report_path)
        report.raise_if_strict(config.strict, self.report_path)
        return splits, report

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        splits, _ = self.prepare_records()
        names = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION}
        return [
            datasets.SplitGenerator(name=names[split], gen_kwargs={"records": records})
            for split, records in splits.items()
            if records  # an empty split (validation_fraction=0, or every video in train) is left out
        ]

    def _generate_examples(self, records: list[QARecord]) -> Iterator[tuple[str, dict]]:
        if self.config.name == "grouped":
            for group in group_records(records, self.config.group_size, self.config.group_seed):
                row = grouped_row(group)
                yield row["id"], row
        else:
            for record in records:
                yield record.id, qa_row(record)
