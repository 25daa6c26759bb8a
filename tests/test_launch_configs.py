"""The launch configs in hour_llava_training/configs/: accelerate reads them, the DeepSpeed JSONs leave the
optimizer to the Trainer (so per-module learning rates survive, unlike the reference's) and use "auto" only where
transformers fills it in, and FSDP wraps layer classes that exist in our model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import transformers.integrations.deepspeed as hf_deepspeed
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from hour_llava_testing.tiny_model import write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "hour_llava_training" / "configs"
ACCELERATE = sorted((CONFIGS / "accelerate").glob("*.yaml"))
DEEPSPEED = sorted((CONFIGS / "deepspeed").glob("*.json"))
EXPECTED = {
    "single_gpu": "NO",
    "multi_gpu": "MULTI_GPU",
    "multi_node": "MULTI_GPU",
    "fsdp": "FSDP",
    "deepspeed_zero2": "DEEPSPEED",
    "deepspeed_zero3": "DEEPSPEED",
}


def auto_keys(config: dict, prefix: str = "") -> set[str]:
    """Dotted keys whose value is "auto"."""
    keys = set()
    for key, value in config.items():
        if isinstance(value, dict):
            keys |= auto_keys(value, f"{prefix}{key}.")
        elif value == "auto":
            keys.add(prefix + key)
    return keys


def keys_transformers_fills() -> set[str]:
    """The DeepSpeed keys transformers' Trainer integration replaces when they say "auto" (read from its source:
    `fill_match(...)` / `fill_only(...)` calls and the hidden-size keys)."""
    source = Path(hf_deepspeed.__file__).read_text()
    return set(re.findall(r"fill_(?:match|only)\(\s*\"([a-z0-9_.]+)\"", source)) | set(
        re.findall(r"\"(zero_optimization\.[a-z0-9_]+)\"", source)
    )


def test_every_config_is_there_and_accelerate_reads_it():
    assert {path.stem for path in ACCELERATE} == set(EXPECTED)
    assert {path.stem for path in DEEPSPEED} == {"zero2", "zero3"}
    for path in ACCELERATE:
        config = ClusterConfig.from_yaml_file(str(path))
        assert config.distributed_type.value == EXPECTED[path.stem], path.name
        if config.distributed_type.value == "DEEPSPEED":
            # With a DeepSpeed JSON, precision comes from its "auto" fields; accelerate refuses mixed_precision too.
            assert config.mixed_precision in (None, "no"), path.name
            json_file = REPO / config.deepspeed_config["deepspeed_config_file"]
            assert json_file.is_file(), path.name
            stage = json.loads(json_file.read_text())["zero_optimization"]["stage"]
            assert path.stem.endswith(str(stage))
        else:
            assert config.mixed_precision == "bf16", path.name


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.name)
def test_deepspeed_configs_leave_the_optimizer_and_schedule_to_the_trainer(path):
    config = json.loads(path.read_text())
    # An optimizer block makes transformers build DeepSpeed's own optimizer over all parameters at one rate and skip
    # the Trainer's per-module groups (the reference's trap); a scheduler block would replace the cosine schedule.
    assert "optimizer" not in config and "scheduler" not in config
    assert config["bf16"]["enabled"] == "auto"
    assert config["gradient_clipping"] in ("auto", 1.0)
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"):
        assert config[key] == "auto", key
    assert config["zero_optimization"]["stage"] == int(path.stem[-1])
    unfilled = auto_keys(config) - keys_transformers_fills()
    assert not unfilled, f"'auto' where transformers fills nothing: {unfilled}"


def test_fsdp_wraps_the_layers_of_our_model(tmp_path):
    config = yaml.safe_load((CONFIGS / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]
    assert config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    # FSDP2 shards per parameter: a wrapped unit may mix frozen and trained parameters (stages 1 and 3 freeze parts).
    assert config["fsdp_version"] == 2
    wrapped = set(config["fsdp_transformer_layer_cls_to_wrap"].split(","))

    from transformers import AutoModelForImageTextToText

    folder = write_tiny_checkpoint(tmp_path / "tiny", video_min_frames=8)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    classes = {type(module).__name__ for module in model.modules()}
    assert wrapped <= classes, wrapped - classes
    # Every decoder layer is wrapped (each forward runs each once, on every process); the vision tower and MemAug,
    # which run a batch-dependent number of times (or not at all), stay in the root unit: wrapping them breaks FSDP's
    # collectives on batches that mix kinds (tests/test_train_fsdp.py).
    stacks = {name: stack for name, stack in model.named_modules() if name.endswith(".layers")}
    for part in ("language_model", "vision_tower", "memaug"):
        assert any(f".{part}." in name for name in stacks), (part, sorted(stacks))
    for name, stack in stacks.items():
        kinds = {type(layer).__name__ for layer in stack}
        assert (kinds <= wrapped) == (".language_model." in name), name
