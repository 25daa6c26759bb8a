"""Publishing built datasets: a Parquet folder with a dataset card, pushed to the Hub as it is, or a `videofolder`.

    folder = write_parquet_folder({"grouped": grouped, "qa": qa}, "out/videomarathon", card=videomarathon_card(...))
    push_folder(folder, "me/videomarathon")            # Parquet + README, nothing of ours needed to read it
    push_to_hub({"grouped": grouped, "qa": qa}, "me/videomarathon", card=...)   # the same, through a temporary folder
    load_dataset("me/videomarathon", "qa")             # or load_dataset("out/videomarathon", "qa", streaming=True)

Videos are referenced by path, never embedded: VideoMarathon's videos are up to an hour long and are not ours to
redistribute. For small sets (synthetic data, a test split) `write_videofolder` copies the videos next to a
`metadata.jsonl` per split, the Hub's native video layout, which `load_dataset(folder)` reads as `Video` columns.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import datasets
import yaml

from .media import resolve_under_root
from .videomarathon import LONG_FORM_TASKS, SOURCES, TAXONOMY, source_root

ROWS_PER_SHARD = 500_000
SOURCE_LINKS = {
    "panda": "Panda-70M: download from the URLs listed in the Hub dataset (jylins/videomarathon)",
    "ego4d": "Ego4D: the official site (https://ego4d-data.org/), under its licence agreement",
    "activitynet": "ActivityNet: lmms-lab/ActivityNetQA on the Hub",
    "youcook2": "YouCook2: lmms-lab/YouCook2 on the Hub",
    "moviechat": "MovieChat-1K: Enxin/MovieChat-1K_train on the Hub",
}
LINK_MODES = ("copy", "hardlink", "symlink")


def write_parquet_folder(
    configs: dict[str, datasets.DatasetDict],
    folder: str | os.PathLike,
    card: str = "",
    default_config: str | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
) -> str:
    """Write `folder/<config>/<split>-NNNNN-of-NNNNN.parquet` and a README.md whose YAML lists the configs, so
    `load_dataset(folder, config)` (and the same repo on the Hub) needs no code of ours. Empty splits are left out.

    card: the README body (markdown, with an optional YAML front matter whose keys are kept).
    """
    folder = os.fspath(folder)
    entries = []
    for name, splits in configs.items():
        files = []
        for split, dataset in splits.items():
            if len(dataset) == 0:
                continue
            count = max(1, math.ceil(len(dataset) / rows_per_shard))
            for index in range(count):
                shard = dataset.shard(count, index, contiguous=True)
                relative = f"{name}/{split}-{index:05d}-of-{count:05d}.parquet"
                os.makedirs(os.path.join(folder, name), exist_ok=True)
                shard.to_parquet(os.path.join(folder, relative))
            files.append({"split": split, "path": f"{name}/{split}-*.parquet"})
        entry = {"config_name": name, "data_files": files}
        if name == (default_config or next(iter(configs))):
            entry["default"] = True
        entries.append(entry)
    write_card(os.path.join(folder, "README.md"), card, {"configs": entries})
    return folder


def write_card(path: str, card: str, metadata: dict) -> None:
    """README.md = YAML front matter (the card's own keys, then `metadata`) + markdown body."""
    header, body = split_front_matter(card)
    header.update(metadata)
    text = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + body.lstrip()
    with open(path, "w") as handle:
        handle.write(text)


def split_front_matter(card: str) -> tuple[dict, str]:
    """(YAML keys, markdown body) of a card that may start with a `---` block."""
    if card.startswith("---\n"):
        end = card.find("\n---", 4)
        if end > 0:
            return yaml.safe_load(card[4:end]) or {}, card[end + 4 :]
    return {}, card


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload dataset (Parquet + card)",
) -> str:
    """Create the dataset repo if needed and upload the folder as one commit; returns the commit id."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=os.fspath(folder), repo_id=repo_id, repo_type="dataset", commit_message=commit_message
    )
    return info.oid


def push_to_hub(
    configs: dict[str, datasets.DatasetDict],
    repo_id: str,
    card: str = "",
    default_config: str | None = None,
    private: bool = False,
    token: str | None = None,
) -> str:
    """`write_parquet_folder` into a temporary folder, then `push_folder`: built datasets to a Hub dataset repo in
    one commit (Parquet per config and split, the card as README.md). Returns the commit id."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hub-push-") as folder:
        write_parquet_folder(configs, folder, card=card, default_config=default_config)
        return push_folder(folder, repo_id, private=private, token=token)


def write_videofolder(
    splits: datasets.DatasetDict,
    folder: str | os.PathLike,
    video_root: str | None = None,
    video_roots: dict[str, str] | None = None,
    link: str = "copy",
    card: str = "",
) -> str:
    """The `videofolder` layout: `folder/<split>/<source>/<video>` plus `folder/<split>/metadata.jsonl`, one line per
    row with `file_name` (the video, relative to the split folder) and every other column except `video`, which
    `load_dataset` fills with the `Video` feature. For small sets: the videos are copied (or linked)."""
    if link not in LINK_MODES:
        raise ValueError(f"link={link!r}; expected one of {LINK_MODES}")
    folder = os.fspath(folder)
    for split, dataset in splits.items():
        split_dir = os.path.join(folder, split)
        os.makedirs(split_dir, exist_ok=True)
        with open(os.path.join(split_dir, "metadata.jsonl"), "w") as metadata:
            for row in dataset:
                file_name = f"{row['source']}/{row['video']}"
                place_video(row, os.path.join(split_dir, file_name), video_root, video_roots, link)
                fields = {key: value for key, value in row.items() if key != "video"}
                metadata.write(json.dumps({"file_name": file_name, **fields}) + "\n")
    write_card(os.path.join(folder, "README.md"), card, {})
    return folder


def place_video(row: dict, target: str, video_root: str | None, video_roots: dict[str, str] | None, link: str) -> None:
    """Copy or link a row's video to `target` (once: later rows of the same video find it there)."""
    if os.path.exists(target):
        return
    root = source_root(row["source"], video_root, video_roots)
    if root is None:
        raise ValueError(f"row {row['id']}: no video root for source {row['source']!r}; pass video_root(s)")
    source = resolve_under_root(root, row["video"], what=f"video of row {row['id']}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if link == "copy":
        shutil.copyfile(source, target)
    elif link == "hardlink":
        os.link(source, target)
    else:
        os.symlink(source, target)


# ---------------------------------------------------------------------------------------------------------------
# The VideoMarathon card
# ---------------------------------------------------------------------------------------------------------------
def taxonomy_table() -> str:
    lines = ["| Topic | Task | Form |", "|---|---|---|"]
    for topic, tasks in TAXONOMY.items():
        lines.extend(f"| {topic} | {task} | {'long' if task in LONG_FORM_TASKS else 'short'} |" for task in tasks)
    return "\n".join(lines)


def counts_table(title: str, counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    lines = [f"| {title} | QA pairs | share |", "|---|---|---|"]
    lines.extend(f"| {name} | {count:,} | {100 * count / total:.1f}% |" for name, count in counts.items())
    return "\n".join(lines)


def statistics_section(stats: dict) -> str:
    """Markdown for the `statistics` of a builder's report (`ExclusionReport.statistics`)."""
    overall = stats.get("all", {})
    lines = ["| split | QA pairs | videos | hours |", "|---|---|---|---|"]
    for split in ("train", "validation", "all"):
        if split in stats:
            part = stats[split]
            hours = "n/a" if part.get("hours") is None else f"{part['hours']:,.2f}"
            lines.append(f"| {split} | {part['qa_pairs']:,} | {part['videos']:,} | {hours} |")
    sections = ["\n".join(lines)]
    for key, title in (
        ("topics", "Topic"),
        ("tasks", "Task"),
        ("question_types", "Question type"),
        ("sources", "Source"),
    ):
        if overall.get(key):
            sections.append(counts_table(title, overall[key]))
    return "\n\n".join(sections)


def videomarathon_card(statistics: dict, pretty_name: str = "VideoMarathon", excluded: dict | None = None) -> str:
    """The dataset card: loading, configs, schema, task taxonomy, statistics, sources and the licence note."""
    front = {
        "license": "apache-2.0",
        "pretty_name": pretty_name,
        "language": ["en"],
        "task_categories": ["visual-question-answering", "video-text-to-text"],
        "tags": ["video", "long-video", "hour-llava"],
    }
    sources = "\n".join(f"- `{source}`: {SOURCE_LINKS[source]}" for source in SOURCES)
    excluded_text = ""
    if excluded:
        excluded_text = "\n\nRows excluded while building (by reason): " + ", ".join(
            f"{reason}: {count:,}" for reason, count in excluded.items()
        )
    body = f"""# {pretty_name}

Long-video instruction data for Hour-LLaVA (VideoMarathon: 22 tasks over 6 topics, open-ended and multiple-choice
questions about videos of 3 to 60 minutes), built with `dataset_builder.videomarathon` and stored as plain Parquet:

```python
from datasets import load_dataset
grouped = load_dataset("<this repo>", "grouped", split="train")         # up to 5 QA pairs per video per row
qa = load_dataset("<this repo>", "qa", split="validation", streaming=True)  # one QA pair per row
```

Train and validation are split by video (a hash of the video path): no video is in both.

## Schema

- `video`: path of the video relative to the root of its `source` (videos are referenced, not embedded),
  `source`, `duration` (seconds, when known).
- `qa` config: `id`, `topic`, `task`, `question_type` (`open-ended` / `multiple-choice`), `question`, `options`
  (`A. ...`), `answer`; `grouped` config: the same fields in the `qa` list, one entry per turn.
- `messages`: the conversation as chat messages; the first user turn holds `{{"type": "video", "path":
  "<source>/<video>"}}`. Point the paths at your copy of the videos before training.

## Task taxonomy

{taxonomy_table()}

## Statistics

{statistics_section(statistics)}{excluded_text}

## Sources and licence

The annotations are VideoMarathon's (apache-2.0, for academic research only). **The videos are not included and
must be fetched from their sources**, under those sources' own licences:

{sources}

Place them as `<video_root>/<source>/<video>`.
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body
