"""The recall suite's model and the compression variants it compares (the paper's Table 5 in miniature).

Every variant shares one frozen random vision tower (so one feature cache serves them all) and the suite's token
budget: 64 kept frames of 1 kept token plus a newline each, 128 decoder tokens per video whatever its length.

| variant | temporal compression | MemAug |
|---|---|---|
| memaug | uniform (the paper's) | yes: decayed tokens + question attend to the full memory |
| uniform, random, keyframe, question | that hand-made frame selection | no: decayed tokens go to the decoder |
| full | none (every token of every frame; the upper bound, short videos only) | no |
"""

from __future__ import annotations

import os

from safetensors.torch import load_file

from dataset_builder.recall_suite import recall_corpus
from dataset_builder.tiny_tokenizer import build_tokenizer

from .tiny import write_tiny_checkpoint

FRAME_SIZE = 32  # 4 x 4 patches of 8 px, pooled to the 2 x 2 memory grid
RECALL_MODEL_CONFIG = {
    "vision": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
    },
    "text": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
    },
    "memory_pool_size": 2,
    "memaug_num_layers": 2,
    "spatial_keep_ratio": 0.25,
    "temporal_keep_ratio": 0.25,
    "temporal_min_frames": 32,
    "temporal_max_frames": 64,
}
VARIANTS: dict[str, dict] = {
    "memaug": {"use_memaug": True, "temporal_forgetting_mode": "uniform"},
    "uniform": {"use_memaug": False, "temporal_forgetting_mode": "uniform"},
    "random": {"use_memaug": False, "temporal_forgetting_mode": "random"},
    "keyframe": {"use_memaug": False, "temporal_forgetting_mode": "keyframe"},
    "question": {"use_memaug": False, "temporal_forgetting_mode": "question"},
    "full": {
        "use_memaug": False,
        "spatial_keep_ratio": 1.0,
        "temporal_keep_ratio": 1.0,
        "temporal_max_frames": 1_000_000,
    },
}
TOKENIZER_VOCAB = 600


def recall_tokenizer():
    """The tiny byte-level BPE trained on the suite's prompts, questions and answers (each word one token)."""
    return build_tokenizer(TOKENIZER_VOCAB, corpus=recall_corpus())


def write_recall_init(path: str | os.PathLike, variant: str, seed: int, tower_from: str | None = None) -> str:
    """A random recall-suite model of `variant` (seeded) whose vision tower is copied from `tower_from` (a
    checkpoint folder), so every variant and seed reads one feature cache; without it the tower is the seed's own."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown recall variant {variant!r}; expected one of {sorted(VARIANTS)}")
    config = {**RECALL_MODEL_CONFIG, **VARIANTS[variant]}
    config["vision"] = dict(RECALL_MODEL_CONFIG["vision"])
    config["text"] = dict(RECALL_MODEL_CONFIG["text"])

    def same_tower(model, _tokenizer) -> None:
        if tower_from is None:
            return
        state = load_file(os.path.join(tower_from, "model.safetensors"))
        prefix = "model.vision_tower."
        tower = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        model.model.vision_tower.load_state_dict(tower)

    return write_tiny_checkpoint(
        path, seed=seed, frame_size=FRAME_SIZE, tokenizer=recall_tokenizer(), customize=same_tower, **config
    )


__all__ = ["RECALL_MODEL_CONFIG", "VARIANTS", "recall_tokenizer", "write_recall_init"]
