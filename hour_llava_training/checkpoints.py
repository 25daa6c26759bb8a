"""Checkpoints that say when they are complete, and a final output that appears complete or not at all.

A checkpoint folder `checkpoint-N` counts as complete only when its marker `MARKER`, written last (after every
process finished writing and every file was flushed to disk), is there and every file it lists still has the size it
recorded. A kill or a power loss at any moment leaves either no marker or a file that disagrees with it (0-byte or
half-written weights, an empty optimizer state beside a complete `trainer_state.json`): such a checkpoint is passed
over on resume.

The final model is written into a temporary folder and then moved into the output folder file by file, the files a
loader opens first (`config.json`, `adapter_config.json`) last: a folder whose final save was cut short has no
`config.json` and loads as nothing, never as half a model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

from dataset_builder.media import write_json_atomically

logger = logging.getLogger(__name__)
MARKER = "hour_llava_checkpoint.json"
MARKER_FORMAT = "hour_llava_checkpoint/1"
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
# Written last when a final model is published: the files `from_pretrained` / `PeftModel.from_pretrained` open first.
LOADER_ENTRY_FILES = ("adapter_config.json", "config.json")


def _files(folder: str) -> list[str]:
    """Every file under `folder`, relative, sorted (the marker and temporary files aside)."""
    found = []
    for parent, _, names in os.walk(folder):
        for name in names:
            relative = os.path.relpath(os.path.join(parent, name), folder)
            if name != MARKER and not name.startswith("."):
                found.append(relative)
    return sorted(found)


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_marker(folder: str) -> None:
    """Before a checkpoint folder is (re)written: from now until `write_marker` it is not complete."""
    path = os.path.join(folder, MARKER)
    if os.path.exists(path):
        os.remove(path)


def write_marker(folder: str, step: int, extra: dict | None = None) -> None:
    """Flush every file of the checkpoint to disk, then record their sizes in the marker (atomically)."""
    sizes = {}
    for relative in _files(folder):
        path = os.path.join(folder, relative)
        _fsync(path)
        sizes[relative] = os.path.getsize(path)
    _fsync(folder)
    marker = {"format": MARKER_FORMAT, "step": step, "files": sizes, **(extra or {})}
    write_json_atomically(os.path.join(folder, MARKER), marker)
    _fsync(folder)


def read_marker(folder: str) -> dict:
    with open(os.path.join(folder, MARKER)) as handle:
        return json.load(handle)


def checkpoint_problem(folder: str) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    try:
        marker = read_marker(folder)
    except FileNotFoundError:
        return f"no {MARKER} (written last): its save was cut short, or an older version wrote it"
    except (OSError, ValueError) as error:
        return f"unreadable {MARKER} ({error})"
    if marker.get("format") != MARKER_FORMAT or not isinstance(marker.get("files"), dict):
        return f"{MARKER} of an unknown format {marker.get('format')!r}"
    for relative, size in marker["files"].items():
        path = os.path.join(folder, relative)
        actual = os.path.getsize(path) if os.path.isfile(path) else None
        if actual != size:
            return f"{relative} has {'no file' if actual is None else f'{actual} bytes'}, {size} bytes were recorded"
    try:
        with open(os.path.join(folder, TRAINER_STATE)) as handle:
            step = json.load(handle).get("global_step")
    except (OSError, ValueError) as error:
        return f"unreadable {TRAINER_STATE} ({error})"
    if step != marker.get("step"):
        return f"{TRAINER_STATE} says step {step}, the marker step {marker.get('step')}"
    return None


def checkpoint_steps(output_dir: str) -> list[int]:
    """Steps of the `checkpoint-N` folders in `output_dir`, newest first."""
    if not os.path.isdir(output_dir):
        return []
    suffixes = [name.removeprefix(CHECKPOINT_PREFIX) for name in os.listdir(output_dir)]
    return sorted((int(suffix) for suffix in suffixes if suffix.isdigit()), reverse=True)


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest complete `checkpoint-N` of `output_dir`; torn ones are passed over (and named in the log)."""
    for step in checkpoint_steps(output_dir):
        folder = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("passing over incomplete checkpoint %s: %s", folder, problem)
    return None


def publish(staging: str, destination: str) -> None:
    """Move everything in `staging` into `destination` (same file system), the loader entry files last, then remove
    `staging`. An older `config.json` / `adapter_config.json` there is removed first, so until the end the folder
    holds no loadable model."""
    os.makedirs(destination, exist_ok=True)
    for name in LOADER_ENTRY_FILES:
        old = os.path.join(destination, name)
        if os.path.exists(old):
            os.remove(old)
    names = sorted(os.listdir(staging), key=lambda name: name in LOADER_ENTRY_FILES)
    for name in names:
        source, target = os.path.join(staging, name), os.path.join(destination, name)
        for relative in _files(source) if os.path.isdir(source) else [""]:
            _fsync(os.path.join(source, relative) if relative else source)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(source, target)
    _fsync(destination)
    shutil.rmtree(staging)


__all__ = [
    "LOADER_ENTRY_FILES",
    "MARKER",
    "checkpoint_problem",
    "latest_complete_checkpoint",
    "publish",
    "read_marker",
    "remove_marker",
    "write_marker",
]
