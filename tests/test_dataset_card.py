"""The dataset card describes the folder it is written into, from the data: the configs and splits on disk (its
loading lines run), the videos' shortest, longest and total durations, and terms that match the sources (the
synthetic set is ours; VideoMarathon's annotations are research-only; unknown sources get no licence claim).
Built through `hour-llava-build-dataset`, whose outputs appear whole and never overwrite by accident."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest

from dataset_builder.cli import main as build
from dataset_builder.hub import format_duration, split_front_matter, videomarathon_card, write_parquet_folder
from dataset_builder.loading import load_dataset_folder

SYNTHETIC = ["--videos", "3", "--min-seconds", "3", "--max-seconds", "7", "--fps", "2", "--width", "48"]
SYNTHETIC += ["--height", "32", "--validation-fraction", "0.5", "--seed", "3"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "synthetic"
    assert build(["synthetic", str(out), *SYNTHETIC]) == 0
    return out


def card_of(folder: Path) -> tuple[dict, str]:
    return split_front_matter((folder / "README.md").read_text())


def splits_on_disk(folder: Path) -> dict[str, set[str]]:
    return {
        config.name: {path.name.split("-")[0] for path in config.glob("*.parquet")}
        for config in folder.iterdir()
        if config.is_dir()
    }


def test_card_names_exactly_the_configs_and_splits_on_disk_and_its_loading_lines_run(synthetic):
    folder = synthetic / "parquet"
    header, body = card_of(folder)
    listed = {entry["config_name"]: {f["split"] for f in entry["data_files"]} for entry in header["configs"]}
    assert listed == splits_on_disk(folder) and set(listed) == {"grouped", "qa"}
    for config, splits in listed.items():
        ordered = sorted(splits, key=["train", "validation"].index)
        assert f"- `{config}`: splits {', '.join(f'`{split}`' for split in ordered)}" in body
    snippet = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    loads = snippet.count("load_dataset(")
    assert loads == 3
    namespace: dict = {}
    exec(snippet.replace("<this repo>", str(folder)), namespace)  # every line loads what it names
    assert len(namespace["grouped"]) > 0 and len(namespace["qa"]) > 0
    assert next(iter(namespace["streamed"]))["id"]


def test_card_durations_come_from_the_videos(synthetic):
    timelines = json.loads((synthetic / "annotations" / "timelines.json").read_text())["timelines"]
    seconds = [timeline["duration"] for timeline in timelines]
    _, body = card_of(synthetic / "parquet")
    expected = f"{len(seconds)} videos of {format_duration(min(seconds))} to {format_duration(max(seconds))}"
    assert expected in body and f"{format_duration(sum(seconds))} in all" in body
    assert "3 to 60 minutes" not in body


def test_terms_follow_the_sources(synthetic):
    header, body = card_of(synthetic / "parquet")
    assert header["license"] == "apache-2.0" and "Every row and video is synthetic" in body
    configs = {name: datasets.load_dataset(str(synthetic / "parquet"), name) for name in ("grouped", "qa")}
    statistics = {"all": {"qa_pairs": 1, "videos": 1, "hours": None}}

    def with_source(source: str) -> dict:
        return {name: splits.map(lambda row: {"source": source}) for name, splits in configs.items()}

    panda_header, panda_body = split_front_matter(videomarathon_card(statistics, with_source("panda")))
    assert panda_header["license"] == "other" and panda_header["license_name"] == "videomarathon-research-only"
    assert "for academic research only" in panda_body and "apache-2.0" not in str(panda_header)
    assert "- `panda`:" in panda_body and "- `ego4d`:" not in panda_body  # only the sources present
    assert "must be fetched from their sources" in panda_body
    own_header, _ = split_front_matter(videomarathon_card(statistics, with_source("my_videos")))
    assert own_header["license"] == "unknown"
    given, _ = split_front_matter(videomarathon_card(statistics, with_source("my_videos"), license="cc-by-4.0"))
    assert given["license"] == "cc-by-4.0"


def test_empty_splits_are_left_out_of_the_card_and_nothing_to_describe_is_an_error(synthetic):
    grouped = datasets.load_dataset(str(synthetic / "parquet"), "grouped")
    empty = grouped["train"].select([])
    header, body = split_front_matter(
        videomarathon_card({}, {"grouped": datasets.DatasetDict(train=grouped["train"], validation=empty)})
    )
    assert "- `grouped`: splits `train`\n" in body and "validation" not in body.split("## Schema")[0]
    with pytest.raises(ValueError, match="empty"):
        videomarathon_card({}, {"grouped": datasets.DatasetDict(train=empty)})


def test_an_existing_output_is_refused_and_kept(synthetic, capsys):
    before = sorted(path.name for path in synthetic.iterdir())
    assert build(["synthetic", str(synthetic), *SYNTHETIC]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(path.name for path in synthetic.iterdir()) == before
    assert not list(synthetic.parent.glob(".synthetic.*")), "no temporary folder is left behind"


def test_a_mixture_is_built_from_videomarathon_and_chat_rows(synthetic, tmp_path):
    grouped = synthetic / "parquet" / "grouped"
    assert build(["mixture", "--dataset", f"{grouped}:2", "--video-root", str(synthetic / "videos"),
                  "--out", str(tmp_path / "mix")]) == 0  # fmt: skip
    mixed = load_dataset_folder(tmp_path / "mix", split="train")  # not the cache of an earlier run's "mix"
    assert set(mixed.column_names) == {"id", "dataset", "modality", "messages"}
    assert len(mixed) == len(datasets.load_dataset(str(grouped), split="train"))
    video = next(block["path"] for block in mixed[0]["messages"][0]["content"] if block["type"] == "video")
    assert Path(video).is_file()


def test_a_mixture_skips_and_reports_rows_whose_video_leaves_its_root(synthetic, tmp_path, capsys):
    grouped = datasets.load_dataset(str(synthetic / "parquet" / "grouped"), split="train")
    rows = grouped.to_list()
    rows[0] = {**rows[0], "video": "../../outside.mp4"}
    edited = write_parquet_folder(
        {"grouped": datasets.DatasetDict(train=datasets.Dataset.from_list(rows, features=grouped.features))},
        tmp_path / "edited",
    )
    assert build(["mixture", "--dataset", str(edited), "--video-root", str(synthetic / "videos"),
                  "--out", str(tmp_path / "mix")]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == len(rows) - 1
    assert summary["skipped_rows"] == {str(edited): {"path_escapes_root": 1}}


def test_videomarathon_rows_without_a_video_root_are_refused(synthetic, tmp_path):
    with pytest.raises(ValueError, match="--video-root"):
        build(["mixture", "--dataset", str(synthetic / "parquet" / "grouped"), "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.*"))
