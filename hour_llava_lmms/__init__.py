"""Hour-LLaVA for lmms-eval: the model (`hour_llava`, chat and simple classes) and task configs.

    HOUR_LLAVA_VIDEOMME_DATA=/data/videomme lmms-eval --model hour_llava --model_args pretrained=<checkpoint> \\
        --batch_size 4 --include_path hour_llava_lmms/tasks --tasks hour_llava_videomme

(`HOUR_LLAVA_<BENCHMARK>_DATA`: a local copy, read offline; unset: the Hub dataset. See docs/evaluation.md.)

The model is registered through the `lmms_eval.models` entry point (pyproject.toml), which lmms-eval 0.7 reads at
startup; `--force_simple` picks the simple class. Nothing here is imported by `modeling_hour_llava`.
"""

from __future__ import annotations

import os

MODEL_ID = "hour_llava"
TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")


def manifests() -> list:
    """The entry point's payload: one manifest with both classes (chat is lmms-eval's default)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(
            model_id=MODEL_ID,
            simple_class_path="hour_llava_lmms.model.HourLlava",
            chat_class_path="hour_llava_lmms.model.HourLlavaChat",
            aliases=("hour-llava",),
        )
    ]


__all__ = ["MODEL_ID", "TASKS_DIR", "manifests"]
