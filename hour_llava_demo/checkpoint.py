"""A loadable checkpoint folder from weights kept without code: the package's remote code written next to them.

The repository keeps the demo's model (`checkpoints/hour-llava-recall-tiny`) as weights, config, tokenizer and
processor files only; its Python is the package's own `modeling_hour_llava`, one copy of every line. Before loading,
`materialise_checkpoint` copies those files and the remote-code modules their `auto_map` entries name (with every
module they import, as `save_pretrained` would write them) into a folder of its own under a cache folder, which then
loads as a Hub user loads it:

    folder = materialise_checkpoint("checkpoints/hour-llava-recall-tiny", "~/.cache/hour-llava")
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)

The folder's name carries a hash of everything copied, so a changed weight or model file gives a new folder, and it
is written whole or not at all (a temporary folder, then a rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import modeling_hour_llava

PACKAGE_DIR = Path(modeling_hour_llava.__file__).resolve().parent
REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPOSITORY / "checkpoints" / "hour-llava-recall-tiny"


def default_cache_dir() -> Path:
    """Where materialised checkpoints go: $HOUR_LLAVA_CACHE, else ~/.cache/hour-llava (or $XDG_CACHE_HOME's)."""
    if os.environ.get("HOUR_LLAVA_CACHE"):
        return Path(os.environ["HOUR_LLAVA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hour-llava"


def auto_map_modules(folder: Path) -> set[str]:
    """The module names (e.g. `modeling_hour_llava`) that the `auto_map` entries of the folder's JSON files name,
    at any depth (the processor's config nests one per sub-processor)."""
    modules: set[str] = set()

    def visit(value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "auto_map" and isinstance(item, dict):
                    for reference in item.values():
                        for name in reference if isinstance(reference, list) else [reference]:
                            if name:
                                modules.add(name.split("--")[-1].rsplit(".", 1)[0])
                else:
                    visit(item)

    for path in sorted(folder.glob("*.json")):
        with open(path) as handle:
            visit(json.load(handle))
    return modules


def remote_code_files(folder: Path) -> list[Path]:
    """The package's files that a checkpoint folder's `auto_map` needs: the modules it names and every module they
    import relatively, found with transformers' own rule (`get_relative_import_files`)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    files: set[Path] = set()
    for module in sorted(auto_map_modules(folder)):
        path = PACKAGE_DIR / f"{module}.py"
        if not path.exists():
            raise FileNotFoundError(
                f"{folder}: auto_map names {module!r}, which the package modeling_hour_llava ({PACKAGE_DIR}) lacks"
            )
        files |= {path, *(Path(p) for p in get_relative_import_files(str(path)))}
    return sorted(files)


def materialise_checkpoint(folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A loadable copy of the code-free checkpoint `folder` under `cache_dir` (default: `default_cache_dir()`):
    its files plus the package's remote code. Returns the copy's path; an existing complete copy is reused."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a checkpoint folder (no config.json); pass a checkpoint folder")
    stray = sorted(p.name for p in folder.glob("*.py"))
    if stray:
        raise ValueError(f"{folder} holds Python files ({', '.join(stray)}); its code comes from the package")
    sources = sorted(p for p in folder.iterdir() if p.is_file()) + remote_code_files(folder)
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "checkpoints" / f"{folder.name}-{digest.hexdigest()[:16]}"
    if target.is_dir():
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in sources:
        shutil.copy2(path, partial / path.name)
    try:
        os.replace(partial, target)
    except OSError:  # another process finished the same copy first
        shutil.rmtree(partial, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


__all__ = ["DEFAULT_CHECKPOINT", "default_cache_dir", "materialise_checkpoint", "remote_code_files"]
