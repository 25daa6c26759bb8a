"""The model card (`README.md`) of a training output: what it was trained from and on, what was trained and how,
the base model's license, and a usage snippet that runs as written (given a video named `video.mp4`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import yaml

UNKNOWN_LICENSE = "other"


@dataclass
class ModelCardInfo:
    """What the card says. base_model: the checkpoint training started from (Hub id or folder); datasets: the
    `--dataset` entries as (path or Hub id, weight); trainable: parameters trained per module group;
    hyperparameters: name -> value; model_id: what the usage snippet loads (Hub id or output folder)."""

    base_model: str
    stage: str
    stage_description: str
    datasets: list[tuple[str, float]]
    trainable: dict[str, int]
    hyperparameters: dict[str, object]
    model_id: str
    license: str = UNKNOWN_LICENSE
    results: dict[str, object] = field(default_factory=dict)


def base_model_license(base_model: str) -> str:
    """The `license` of the base model's card (its folder's README.md, or the Hub card where the Hub is reachable);
    `other` when there is none."""
    from huggingface_hub import ModelCard

    try:
        if os.path.isdir(base_model):
            path = os.path.join(base_model, "README.md")
            card = ModelCard.load(path) if os.path.isfile(path) else None
        else:
            card = ModelCard.load(base_model)
    except Exception:  # offline, no card, unreadable card: the license is unknown, and the card says so
        card = None
    license_name = getattr(getattr(card, "data", None), "license", None)
    return license_name or UNKNOWN_LICENSE


def _hub_id(path: str) -> bool:
    return not os.path.exists(path) and path.count("/") == 1 and not path.startswith((".", "/"))


USAGE = """```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained({model_id!r}, trust_remote_code=True)
processor = AutoProcessor.from_pretrained({model_id!r}, trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "video", "path": "video.mp4"}},
                                         {{"type": "text", "text": "What happens in the video?"}}]}}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt")
answer = model.generate(**inputs, max_new_tokens=32, do_sample=False)
print(processor.decode(answer[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""


def render_model_card(info: ModelCardInfo) -> str:
    metadata = {
        "license": info.license,
        "base_model": info.base_model if _hub_id(info.base_model) else None,
        "datasets": [name for name, _ in info.datasets if _hub_id(name)] or None,
        "library_name": "transformers",
        "pipeline_tag": "video-text-to-text",
        "tags": ["hour-llava", "long-video", "video-text-to-text", "trl", "sft", info.stage],
    }
    if info.license == UNKNOWN_LICENSE:
        metadata["license_name"] = "unknown"
    metadata = {key: value for key, value in metadata.items() if value is not None}
    datasets = "\n".join(f"- `{name}` (weight {weight:g})" for name, weight in info.datasets)
    trained = ", ".join(f"{group} {count:,}" for group, count in info.trainable.items() if count) or "nothing"
    frozen = ", ".join(group for group, count in info.trainable.items() if not count) or "nothing"
    hyperparameters = "\n".join(f"| {name} | {value} |" for name, value in info.hyperparameters.items())
    results = "\n".join(f"- {name}: {value}" for name, value in info.results.items())
    license_text = (
        f"`{info.license}`, carried from the base model `{info.base_model}`."
        if info.license != UNKNOWN_LICENSE
        else f"The base model `{info.base_model}` names no license in its card: check its terms before sharing this."
    )
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# Hour-LLaVA, {info.stage}

Fine-tuned from `{info.base_model}` with Hour-LLaVA's `train.py` (TRL `SFTTrainer`), {info.stage}:
{info.stage_description}.

## Training

Datasets (chat rows from `dataset_builder`, mixed by weight):
{datasets}

Trained parameters by module group: {trained}. Frozen: {frozen}.

| hyperparameter | value |
|---|---|
{hyperparameters}

{results}

## Usage

The model ships its own code (`trust_remote_code=True`); the processor decodes the video at 1 frame per second.

{USAGE.format(model_id=info.model_id)}

## License

{license_text}
"""


__all__ = ["ModelCardInfo", "base_model_license", "render_model_card"]
