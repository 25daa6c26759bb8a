"""The recall suite's model and the compression variants it compares (the paper's Table 5 in miniature).

Every variant shares one frozen vision tower (so one feature cache serves them all) and the suite's token budget:
64 kept frames of 1 kept token plus a newline each, 128 decoder tokens per video whatever its length.

The tower is either random or *pretrained* for the suite's world (`recall_tower`, `pretrain_recall_tower`): the
paper's model starts from a pretrained SigLIP whose features already say what is in a frame, and a random 2-layer
tower does not (a flash moves its frame's tokens less than a scene cut does), which leaves every variant at chance.

| variant | temporal compression | MemAug |
|---|---|---|
| memaug | uniform (the paper's) | yes: decayed tokens + question attend to the full memory |
| uniform, random | that fixed frame selection | no: decayed tokens go to the decoder |
| keyframe-vision | keyframes by the frozen tower's features (a fixed criterion) | no |
| keyframe, question | keyframes by the projected memory; frames most like the question (decoder space) | no |
| full | none (every token of every frame; the upper bound, short videos only) | no |

`keyframe` and `question` apply a hand-made rule to *trained* features (the projector, the embeddings), so training
shapes which frames they keep; `keyframe-vision` and the fixed selections cannot learn what to keep.
`kept_frames_budget(n)` overrides the budget (the needle form uses 16 frames: 32 decoder tokens).
"""

from __future__ import annotations

import os
import random
import shutil

import numpy as np
import torch
from safetensors.torch import load_file

from hour_llava_testing.tiny_model import write_tiny_checkpoint
from hour_llava_testing.tiny_tokenizer import build_tokenizer
from research.recall.recall_suite import BACKGROUNDS, SHAPE_COLOURS, SHAPE_SIDE, SHAPES, recall_corpus, shape_mask

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
    "keyframe-vision": {
        "use_memaug": False,
        "temporal_forgetting_mode": "keyframe",
        "temporal_selection_features": "vision",
    },
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
    """The tiny byte-level BPE trained on the suite's prompts, questions and answers (600 tokens: an answer word is
    one to three of them, e.g. "te" "al", so answers can share a first token, "b" for black and blue)."""
    return build_tokenizer(TOKENIZER_VOCAB, corpus=recall_corpus())


def kept_frames_budget(frames: int) -> dict[str, int]:
    """Config fields that make temporal forgetting keep exactly `frames` frames of every video (the memory
    repository has at least `memory_min_frames` = 128 frames, so any `frames` <= 32 is reached at the 1/4 ratio)."""
    return {"temporal_min_frames": frames, "temporal_max_frames": frames}


def write_recall_init(
    path: str | os.PathLike, variant: str, seed: int, tower_from: str | None = None, overrides: dict | None = None
) -> str:
    """A random recall-suite model of `variant` (seeded) whose vision tower is copied from `tower_from` (a
    checkpoint folder), so every variant and seed reads one feature cache; without it the tower is the seed's own.
    `overrides`: config fields set on top of the variant's (e.g. `kept_frames_budget(16)`), never the tower's."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown recall variant {variant!r}; expected one of {sorted(VARIANTS)}")
    overrides = dict(overrides or {})
    if {"vision", "text"} & set(overrides):
        raise ValueError("write_recall_init(overrides=...) sets budget and MemAug fields, not the tower or decoder")
    config = {**RECALL_MODEL_CONFIG, **VARIANTS[variant], **overrides}
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


def random_frames(count: int, size: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` frames of the suite's world, (count, 3, size, size) uint8, and their labels (count, 3): background,
    flash colour (0 = no flash, else 1 + index) and flash shape (same). Three in four frames show a flash, placed and
    sized as the suite places them; pixels get a little noise, as the video codec adds."""
    backgrounds, colours = list(BACKGROUNDS), list(SHAPE_COLOURS)
    frames = np.empty((count, size, size, 3), np.int16)
    labels = torch.zeros(count, 3, dtype=torch.long)
    for n in range(count):
        labels[n, 0] = rng.randrange(len(backgrounds))
        frames[n] = BACKGROUNDS[backgrounds[labels[n, 0]]]
        if rng.random() < 0.75:
            shape, colour = rng.randrange(len(SHAPES)), rng.randrange(len(colours))
            side = rng.randint(round(size * SHAPE_SIDE[0]), round(size * SHAPE_SIDE[1]))
            x, y = rng.randint(0, size - side), rng.randint(0, size - side)
            frames[n][shape_mask(SHAPES[shape], (x, y, x + side, y + side), size)] = SHAPE_COLOURS[colours[colour]]
            labels[n, 1], labels[n, 2] = colour + 1, shape + 1
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-6, 7, frames.shape)
    frames = np.clip(frames + noise, 0, 255).astype(np.uint8)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), labels


def pretrain_recall_tower(
    path: str | os.PathLike, steps: int = 800, batch_size: int = 128, learning_rate: float = 3e-3, seed: int = 0
) -> dict[str, float]:
    """Train the vision tower of the checkpoint at `path` (in place) to tell what a frame shows: background, flash
    colour and flash shape, read by linear heads from its pooled memory tokens (all G*G together, and each one alone,
    so every token says what it can). Returns the heads' held-out accuracy per label (1,024 fresh frames)."""
    from modeling_hour_llava import HourLlavaForConditionalGeneration
    from modeling_hour_llava.memory_hour_llava import pool_frame_features

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = HourLlavaForConditionalGeneration.from_pretrained(path)
    config, inner = model.config, model.model
    tokens, channels = config.memory_pool_size**2, config.vision_config.hidden_size
    classes = [len(BACKGROUNDS), len(SHAPE_COLOURS) + 1, len(SHAPES) + 1]
    frame_head, token_head = torch.nn.Linear(tokens * channels, sum(classes)), torch.nn.Linear(channels, sum(classes))
    parameters = [*inner.vision_tower.parameters(), *frame_head.parameters(), *token_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate)

    def logits(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = pool_frame_features(inner.vision_features(frames), config.memory_pool_size, config.memory_pool_mode)
        return frame_head(pooled.flatten(1)), token_head(pooled)  # (N, sum classes), (N, G*G, sum classes)

    def loss_of(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        parts = scores.split(classes, dim=-1)
        return sum(torch.nn.functional.cross_entropy(p.reshape(-1, p.shape[-1]), labels[..., k].reshape(-1))
                   for k, p in enumerate(parts))  # fmt: skip

    inner.vision_tower.train()
    for _ in range(steps):
        frames, labels = random_frames(batch_size, config.vision_config.image_size, rng)
        whole, each = logits(frames)
        loss = loss_of(whole, labels) + 0.5 * loss_of(each, labels.unsqueeze(1).expand(-1, tokens, -1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    inner.vision_tower.eval()
    with torch.no_grad():
        frames, labels = random_frames(1024, config.vision_config.image_size, rng)
        parts = logits(frames)[0].split(classes, dim=-1)
        names = ("background", "colour", "shape")
        accuracy = {names[k]: float((p.argmax(-1) == labels[:, k]).float().mean()) for k, p in enumerate(parts)}
    model.save_pretrained(path)
    return accuracy


def shared_tower_paths(workdir: str, random_tower: bool = False) -> tuple[str, str]:
    """Where a benchmark under `workdir` keeps its shared tower and that tower's feature cache, one pair per kind
    (pretrained or random), so switching kinds never reads features of the other tower."""
    kind = "random" if random_tower else "pretrained"
    return f"{workdir}/tower-{kind}", f"{workdir}/features-{kind}"


def recall_tower(path: str | os.PathLike, pretrained: bool = True, seed: int = 0) -> str:
    """The shared tower checkpoint at `path` (a seed-`seed` recall model; its tower pretrained when `pretrained`),
    written once and atomically, so every variant and seed of a run reads one feature cache."""
    path = os.fspath(path)
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        partial = path + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        write_recall_init(partial, "memaug", seed=seed)
        if pretrained:
            accuracy = pretrain_recall_tower(partial, seed=seed)
            print(f"recall tower pretrained: held-out accuracy {accuracy}", flush=True)
        os.replace(partial, path)
    return path


# What a trained recall model ships with (besides, unless exported to `checkpoints/`, its remote code).
EXPORTED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
                  "training_summary.json")  # fmt: skip


def ensure_end_of_turn(path: str) -> None:
    """Give the checkpoint at `path` a generation config that stops at the end of the turn (models trained from
    inits written before `write_tiny_checkpoint` set it have none)."""
    import json

    from transformers import AutoTokenizer

    from modeling_hour_llava import end_of_turn_token_ids

    config_path = os.path.join(path, "generation_config.json")
    with open(config_path) as handle:
        config = json.load(handle)
    if config.get("eos_token_id") is None:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config["eos_token_id"] = end_of_turn_token_ids(tokenizer)[0]
        config["pad_token_id"] = tokenizer.pad_token_id
        with open(config_path, "w") as handle:
            json.dump(config, handle, indent=2)


def export_recall_model(
    model: str | os.PathLike, export_to: str | os.PathLike, card: str, remote_code: bool = True
) -> None:
    """Copy a trained model folder (weights, processor and, with `remote_code`, its copies of the package's code)
    with the model card `card` (README.md) to `export_to`, atomically: written next to it, then swapped in.
    Training leftovers (optimizer states) stay. The embedded default (`checkpoints/`) is exported without code: the
    demo writes the package's own next to it (`hour_llava_demo.checkpoint.materialise_checkpoint`)."""
    export_to = os.fspath(export_to)
    partial = export_to + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for name in os.listdir(model):
        if name in EXPORTED_FILES or (remote_code and name.endswith("_hour_llava.py")):
            shutil.copy2(os.path.join(model, name), partial)
    with open(os.path.join(partial, "README.md"), "w") as handle:
        handle.write(card)
    ensure_end_of_turn(partial)
    if os.path.exists(export_to):
        shutil.rmtree(export_to)
    os.replace(partial, export_to)


__all__ = [
    "RECALL_MODEL_CONFIG",
    "VARIANTS",
    "export_recall_model",
    "kept_frames_budget",
    "pretrain_recall_tower",
    "random_frames",
    "recall_tokenizer",
    "recall_tower",
    "shared_tower_paths",
    "write_recall_init",
]
