"""Loading a dataset by a user-given path or Hub id, without the stale rows of datasets' cache.

    rows = load_dataset_folder("out/videomarathon", "qa", split="train")   # a folder `write_parquet_folder` wrote
    rows = load_dataset_folder("me/videomarathon", "qa", split="train")    # a Hub id: `datasets.load_dataset` as is

datasets 5.2 caches a local folder whose README.md lists `configs:` under a key made of the folder's base name,
the config name and the configs' YAML (their unresolved `data_files` patterns): neither the files' paths nor their
mtimes enter it, so `load_dataset("b/mix")` returns the rows cached for an earlier `a/mix`, and a folder rebuilt in
place returns its old rows. Naming the chosen config's own `data_files` (or `data_dir`) in the call makes datasets
resolve them into the config's cache id, which then hashes every file's absolute path and mtime; everything else
(the config's YAML parameters, the card's features, the cache folder's name) stays as datasets makes it.
"""

from __future__ import annotations

import os

import datasets
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

CARD_NAME = "README.md"


def folder_configs(path: str | os.PathLike) -> MetadataConfigs:
    """The `configs:` of a local folder's README.md ({name: {"data_files": ..., ...}}); empty for anything else
    (a Hub id, a folder without a card or without configs)."""
    card = os.path.join(os.fspath(path), CARD_NAME)
    if not os.path.isfile(card):
        return MetadataConfigs()
    try:
        return MetadataConfigs.from_dataset_card_data(DatasetCard.load(card).data)
    except ValueError as error:
        raise ValueError(f"{card}: the `configs:` YAML is not valid: {error}") from error


def chosen_config(path: str | os.PathLike, configs: MetadataConfigs, name: str | None) -> str:
    """The config `name`, or datasets' default (the one marked `default: true` or named `default`, else the only
    one); a clear error naming the configs otherwise."""
    if name is None:
        name = configs.get_default_config_name()
        if name is None:
            raise ValueError(f"{path} has several configs {sorted(configs)} and none is the default: name one")
    if name not in configs:
        raise ValueError(f"{path} has no config {name!r}; its README.md lists {sorted(configs)}")
    return name


def config_files(config: dict) -> dict:
    """The `load_dataset` keywords that name a config's files: its `data_files` (relative to its `data_dir`, if
    any), else its `data_dir`, else the folder itself."""
    if "data_files" in config:
        return {"data_files": config["data_files"], "data_dir": config.get("data_dir")}
    return {"data_dir": config.get("data_dir") or "."}


def load_dataset_folder(
    path: str | os.PathLike,
    name: str | None = None,
    split: str | None = None,
    streaming: bool = False,
    **kwargs,
):
    """`datasets.load_dataset(path, name, split=split, streaming=streaming, **kwargs)`, except that a local folder
    whose README.md lists `configs:` is loaded with the chosen config's files named, so the cache is keyed by
    each file's path and mtime (see the module docstring). Returns what `load_dataset` returns: a `Dataset` or
    `IterableDataset` for a split, a `DatasetDict` / `IterableDatasetDict` without one."""
    path = os.fspath(path)
    configs = folder_configs(path) if os.path.isdir(path) else MetadataConfigs()
    if configs and not {"data_files", "data_dir"} & set(kwargs):
        name = chosen_config(path, configs, name)
        kwargs.update(config_files(configs[name]))
    return datasets.load_dataset(path, name, split=split, streaming=streaming, **kwargs)
