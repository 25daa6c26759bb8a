"""Launch configs shipped with the package: accelerate (`accelerate/*.yaml`) and DeepSpeed (`deepspeed/*.json`).

From a clone, pass them by their path in the repository (`hour_llava_training/configs/accelerate/fsdp.yaml`); the
DeepSpeed YAMLs name their JSON by that path too, relative to the repository root. After `pip install`, ask for
the installed path:

    python -m hour_llava_training.configs                       # every config, one path a line
    accelerate launch --config_file "$(python -m hour_llava_training.configs fsdp.yaml)" ...
    accelerate launch --config_file "$(python -m hour_llava_training.configs deepspeed_zero2.yaml)" \
        --deepspeed_config_file "$(python -m hour_llava_training.configs zero2.json)" ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def config_files() -> list[Path]:
    """Every shipped config file (accelerate YAMLs and DeepSpeed JSONs), sorted."""
    return sorted([*CONFIG_DIR.glob("accelerate/*.yaml"), *CONFIG_DIR.glob("deepspeed/*.json")])


def config_path(name: str) -> Path:
    """The installed path of a config given by file name (`fsdp.yaml`) or by its path under the folder
    (`accelerate/fsdp.yaml`). Raises FileNotFoundError naming the configs that exist."""
    for path in config_files():
        if name in (path.name, path.relative_to(CONFIG_DIR).as_posix()):
            return path
    known = ", ".join(path.relative_to(CONFIG_DIR).as_posix() for path in config_files())
    raise FileNotFoundError(f"no launch config named {name!r}; the package ships: {known}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hour_llava_training.configs",
        description="Print the installed path of a launch config (all of them without a name).",
    )
    parser.add_argument("name", nargs="?", help="a config's file name, e.g. fsdp.yaml or zero2.json")
    name = parser.parse_args(argv).name
    try:
        paths = [config_path(name)] if name else config_files()
    except FileNotFoundError as error:
        parser.exit(2, f"error: {error}\n")
    print("\n".join(str(path) for path in paths))
    return 0
