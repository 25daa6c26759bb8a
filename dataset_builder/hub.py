"""Publishing built datasets: a Parquet folder with a dataset card, pushed to the Hub as it is, or a `videofolder`.

    configs = {"grouped": grouped, "qa": qa}             # DatasetDicts built by dataset_builder.videomarathon
    folder = write_parquet_folder(configs, "out/videomarathon", card=videomarathon_card(statistics, configs))
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
from .synthetic_videomarathon import SOURCE as SYNTHETIC_SOURCE
from .videomarathon import LONG_FORM_TASKS, SOURCES, TAXONOMY, source_root

ROWS_PER_SHARD = 500_000
SOURCE_LINKS = {
    "panda": "Panda-70M: download from the URLs listed in the Hub dataset (jylins/videomarathon)",
    "ego4d": "Ego4D: the official site (https://ego4d-data.org/), under its licence agreement",
    "activitynet": "ActivityNet: lmms-lab/ActivityNetQA on the Hub",
    "youcook2": "YouCook2: lmms-lab/YouCook2 on the Hub",
    "moviechat": "MovieChat-1K: Enxin/MovieChat-1K_train on the Hub",
    SYNTHETIC_SOURCE: "`hour-llava-build-dataset synthetic` (or `write_synthetic_videomarathon`) writes them again",
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
    ignore_patterns: list[str] | None = None,
) -> str:
    """Create the dataset repo if needed and upload the folder as one commit (files matching `ignore_patterns`
    left out); returns the commit id."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=os.fspath(folder),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=commit_message,
        ignore_patterns=ignore_patterns,
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


# The terms a card states, by where the rows come from. VideoMarathon's annotations are released by their authors
# under Apache-2.0 "for academic research only" (its Hub card); the videos stay under their sources' licences.
VIDEOMARATHON_TERMS = {
    "license": "other",
    "license_name": "videomarathon-research-only",
    "license_link": "https://videomarathon.github.io/",
}
VIDEOMARATHON_TERMS_TEXT = (
    "The annotations are VideoMarathon's: its authors release them under Apache-2.0 **for academic research "
    "only**, and this build keeps those terms (research use only; cite the paper). **The videos are not included "
    "and must be fetched from their sources**, under those sources' own licences:"
)
SYNTHETIC_TERMS_TEXT = (
    "Every row and video is synthetic, generated by `dataset_builder.synthetic_videomarathon` (no third-party "
    "content), under the package's Apache-2.0 licence. The videos are not included and must be fetched from their "
    "sources: here, regenerated with `hour-llava-build-dataset synthetic` and the same settings:"
)
OTHER_TERMS_TEXT = (
    "These rows come from sources this card cannot vouch for: set the licence (`videomarathon_card(..., "
    "license=...)`) to the terms of your annotations. The videos are not included and must be fetched from their "
    "sources, under those sources' own licences:"
)


def non_empty_splits(configs: dict[str, datasets.DatasetDict]) -> dict[str, list[str]]:
    """{config: [split, ...]} as `write_parquet_folder` writes them (empty splits and configs left out)."""
    present = {name: [split for split, rows in splits.items() if len(rows)] for name, splits in configs.items()}
    return {name: splits for name, splits in present.items() if splits}


def video_durations(configs: dict[str, datasets.DatasetDict]) -> dict[tuple[str, str], float | None]:
    """{(source, video): duration in seconds or None} over every config and split (a video counts once)."""
    durations: dict[tuple[str, str], float | None] = {}
    for splits in configs.values():
        for rows in splits.values():
            for source, video, duration in zip(rows["source"], rows["video"], rows["duration"], strict=True):
                if durations.get((source, video)) is None:
                    durations[(source, video)] = duration
    return durations


def duration_summary(durations: dict[tuple[str, str], float | None]) -> str:
    """One sentence: how many videos, their shortest, longest and mean duration and the total, from the data."""
    known = [duration for duration in durations.values() if duration is not None]
    if not known:
        return f'{len(durations):,} videos (durations unknown: build with `check_videos="probe"` to measure them)'
    text = (
        f"{len(durations):,} videos of {format_duration(min(known))} to {format_duration(max(known))} "
        f"(mean {format_duration(sum(known) / len(known))}, {format_duration(sum(known))} in all)"
    )
    unknown = len(durations) - len(known)
    return text + (f"; {unknown:,} of unknown duration" if unknown else "")


def format_duration(seconds: float) -> str:
    """`42 s`, `3.5 min` or `1.25 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def terms_of(sources: set[str]) -> tuple[dict, str]:
    """(front-matter licence keys, the sentence above the source list) for rows from `sources`."""
    if sources and sources <= set(SOURCES):
        return dict(VIDEOMARATHON_TERMS), VIDEOMARATHON_TERMS_TEXT
    if sources == {SYNTHETIC_SOURCE}:
        return {"license": "apache-2.0"}, SYNTHETIC_TERMS_TEXT
    return {"license": "unknown"}, OTHER_TERMS_TEXT


def loading_snippet(present: dict[str, list[str]]) -> str:
    """`load_dataset` lines for configs and splits that exist in the folder."""
    lines = ["from datasets import load_dataset"]
    for name, splits in present.items():
        what = "up to 5 QA pairs per video per row" if name == "grouped" else "one QA pair per row"
        if name not in ("grouped", "qa"):
            what = "rows of this config"
        lines.append(f'{name} = load_dataset("<this repo>", "{name}", split="{splits[0]}")  # {what}')
    name, splits = next(iter(present.items()))
    lines.append(f'streamed = load_dataset("<this repo>", "{name}", split="{splits[-1]}", streaming=True)')
    return "\n".join(lines)


def videomarathon_card(
    statistics: dict,
    configs: dict[str, datasets.DatasetDict],
    pretty_name: str = "VideoMarathon",
    excluded: dict | None = None,
    license: str | None = None,
) -> str:
    """The dataset card of `configs` (what `write_parquet_folder` writes: {config: {split: Dataset}}), from the
    data: loading lines for the configs and splits present, video durations, the builder report's `statistics`,
    the sources present and their terms. license: override the terms chosen from the sources (VideoMarathon's
    sources: its research-only terms; the synthetic source: apache-2.0; anything else: `unknown`)."""
    present = non_empty_splits(configs)
    if not present:
        raise ValueError("videomarathon_card: every config and split is empty; there is nothing to describe")
    durations = video_durations({name: configs[name] for name in present})
    sources = {source for source, _ in durations}
    terms, terms_text = terms_of(sources)
    if license is not None:
        terms = {"license": license}
    front = {
        **terms,
        "pretty_name": pretty_name,
        "language": ["en"],
        "task_categories": ["visual-question-answering", "video-text-to-text"],
        "tags": ["video", "long-video", "hour-llava"],
    }
    source_lines = "\n".join(f"- `{source}`: {SOURCE_LINKS.get(source, 'your own copy')}" for source in sorted(sources))
    excluded_text = ""
    if excluded:
        excluded_text = "\n\nRows excluded while building (by reason): " + ", ".join(
            f"{reason}: {count:,}" for reason, count in excluded.items()
        )
    config_lines = "\n".join(
        f"- `{name}`: splits {', '.join(f'`{s}`' for s in splits)}" for name, splits in present.items()
    )
    splits = {split for names in present.values() for split in names}
    split_note = ""
    if len(splits) > 1:
        split_note = "\nThe splits are by video (a hash of the video path): no video is in more than one.\n"
    body = f"""# {pretty_name}

Long-video instruction data for Hour-LLaVA in VideoMarathon's schema (22 tasks over 6 topics, open-ended and
multiple-choice questions), built with `dataset_builder.videomarathon` and stored as plain Parquet:
{duration_summary(durations)}.

```python
{loading_snippet(present)}
```

Configs and splits in this repository:

{config_lines}
{split_note}
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

{terms_text}

{source_lines}

Place them as `<video_root>/<source>/<video>`.
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body
