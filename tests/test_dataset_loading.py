"""A dataset folder is read as it is now. datasets 5.2 caches a local folder whose README.md lists `configs:` under
its base name and config YAML only, so a second folder of the same name, or the same folder rebuilt, came back with
the first one's rows; `dataset_builder.loading.load_dataset_folder` (used by `train.py --dataset` and
`hour-llava-build-dataset mixture`) keys the cache by each file's path and mtime. Every test gets its own cache."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from train_data import text_row

from dataset_builder.chat import CHAT_FEATURES
from dataset_builder.cli import main as build
from dataset_builder.hub import write_parquet_folder
from dataset_builder.loading import load_dataset_folder
from hour_llava_training.cli import load_mixture

TWO_CONFIGS_WITHOUT_DEFAULT = """---
configs:
- config_name: first
  data_files:
  - split: train
    path: first/train-*.parquet
- config_name: second
  data_files:
  - split: train
    path: second/train-*.parquet
---
"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))


def write_values(folder: Path, *values: str, config: str = "default") -> Path:
    """A folder as `write_parquet_folder` (and so `hour-llava-build-dataset`) writes it: one config, one split."""
    rows = datasets.DatasetDict(train=datasets.Dataset.from_dict({"x": list(values)}))
    write_parquet_folder({config: rows}, folder)
    return folder


def write_chat_rows(folder: Path, answer: str, count: int = 2) -> Path:
    rows = [
        {**text_row(f"Question {index}?", f"{answer} {index}."), "id": str(index), "dataset": "chat"}
        for index in range(count)
    ]
    train = datasets.Dataset.from_list([{**row, "modality": "text"} for row in rows], features=CHAT_FEATURES)
    write_parquet_folder({"default": datasets.DatasetDict(train=train)}, folder)
    return folder


def answers(rows) -> list[str]:
    return [row["messages"][-1]["content"][0]["text"] for row in rows]


def test_plain_load_dataset_still_returns_the_rows_of_an_earlier_folder_of_the_same_name(tmp_path):
    """The datasets behaviour the loader exists for; when this fails, datasets keys the cache by the files."""
    assert datasets.load_dataset(str(write_values(tmp_path / "a" / "mix", "first")), split="train")["x"] == ["first"]
    assert datasets.load_dataset(str(write_values(tmp_path / "b" / "mix", "second")), split="train")["x"] == ["first"]


def test_two_folders_of_the_same_name_and_a_rebuild_in_place_give_their_own_rows(tmp_path):
    first = write_values(tmp_path / "a" / "mix", "first")
    assert load_dataset_folder(first, split="train")["x"] == ["first"]
    assert load_dataset_folder(write_values(tmp_path / "b" / "mix", "second", "more"), split="train")["x"] == [
        "second",
        "more",
    ]
    write_values(first, "third")
    assert load_dataset_folder(str(first), split="train")["x"] == ["third"]
    assert load_dataset_folder(first)["train"]["x"] == ["third"]  # no split: the DatasetDict of the config


def test_a_config_is_chosen_by_name_else_the_default_else_an_error_naming_the_configs(tmp_path):
    folder = tmp_path / "two"
    qa = datasets.DatasetDict(train=datasets.Dataset.from_dict({"x": ["qa row"]}))
    grouped = datasets.DatasetDict(train=datasets.Dataset.from_dict({"x": ["grouped row"]}))
    write_parquet_folder({"grouped": grouped, "qa": qa}, folder)
    assert load_dataset_folder(folder, "qa", split="train")["x"] == ["qa row"]
    assert load_dataset_folder(folder, split="train")["x"] == ["grouped row"]  # `default: true`
    with pytest.raises(ValueError, match=r"no config 'answers'.*\['grouped', 'qa'\]"):
        load_dataset_folder(folder, "answers", split="train")

    undecided = tmp_path / "undecided"
    for config in ("first", "second"):
        write_values(undecided, f"{config} row", config=config)
    (undecided / "README.md").write_text(TWO_CONFIGS_WITHOUT_DEFAULT)
    with pytest.raises(ValueError, match=r"several configs \['first', 'second'\].*name one"):
        load_dataset_folder(undecided, split="train")
    assert load_dataset_folder(undecided, "second", split="train")["x"] == ["second row"]


def test_streaming_reads_the_folder_as_it_is_now(tmp_path):
    first = write_values(tmp_path / "a" / "mix", "first")
    assert [row["x"] for row in load_dataset_folder(first, split="train")] == ["first"]
    write_values(first, "rebuilt", "twice")
    streamed = load_dataset_folder(first, split="train", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert [row["x"] for row in streamed] == ["rebuilt", "twice"]


def test_a_hub_id_and_a_folder_without_configs_go_to_datasets_unchanged(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    datasets.Dataset.from_dict({"x": ["plain"]}).to_parquet(str(plain / "train.parquet"))
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)))
    load_dataset_folder("me/videomarathon", "qa", split="train", streaming=True, revision="main")
    load_dataset_folder(plain, split="train")
    assert calls == [
        (("me/videomarathon", "qa"), {"split": "train", "streaming": True, "revision": "main"}),
        ((str(plain), None), {"split": "train", "streaming": False}),
    ]


def test_train_py_datasets_read_a_rebuilt_folder(tmp_path):
    folder = write_chat_rows(tmp_path / "a" / "chat", "Old")
    assert answers(load_mixture([str(folder)], "train", streaming=False, seed=0, max_samples=None)) == [
        "Old 0.",
        "Old 1.",
    ]
    write_chat_rows(folder, "New", count=3)
    assert answers(load_mixture([f"{folder}:2"], "train", streaming=False, seed=0, max_samples=None)) == [
        "New 0.",
        "New 1.",
        "New 2.",
    ]
    assert answers(load_mixture([str(folder)], "train", streaming=True, seed=0, max_samples=2)) == ["New 0.", "New 1."]


def test_a_mixture_is_built_from_the_folder_named_not_an_earlier_one_of_the_same_name(tmp_path):
    assert build(["mixture", "--dataset", str(write_chat_rows(tmp_path / "a" / "chat", "Old")), "--out",
                  str(tmp_path / "old")]) == 0  # fmt: skip
    other = write_chat_rows(tmp_path / "b" / "chat", "Other", count=1)
    assert build(["mixture", "--dataset", f"{other}:1", "--out", str(tmp_path / "mix")]) == 0
    assert answers(load_dataset_folder(tmp_path / "mix", split="train")) == ["Other 0."]
