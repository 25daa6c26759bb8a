"""The three training stages of Hour-LLaVA (the paper's Table 6 and the reference's scripts).

Every parameter belongs to one module group, named after the paper's components:

    vision_tower    SigLIP (its unused `post_layernorm` is never trained: the feature layer comes before it)
    projector       the two-layer MLP into the decoder's width
    memaug          the memory-augmentation blocks
    newline         the learned image/frame newline token
    language_model  the Qwen2 decoder, embeddings and LM head

| stage | trains | nominal learning rates | rate the released checkpoints got |
|---|---|---|---|
| 1 image pretraining | memaug | memaug 1e-4 | 1e-4 |
| 2 video adaptation | everything | tower 5e-6, projector/memaug 1e-4, LLM 2e-5 (3B) or 1e-5 (7B) | the LLM's, for all |
| 3 instruction tuning | all but the tower | projector/memaug 1e-4, LLM 2e-5 | 2e-5 |

The reference trains `image_newline` with the language model (its "everything else" rule), so `newline` follows the
language model's rate and trainability. The reference's per-module rates never took effect (DeepSpeed's optimizer
block replaced its optimizer: one rate per stage); `lr_mode="released"` reproduces that, `"nominal"` (default) gives
the paper's per-module rates, which survive DeepSpeed here because our configs leave the optimizer to the Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

MODULE_GROUPS = ("vision_tower", "projector", "memaug", "newline", "language_model")
LR_MODES = ("nominal", "released")
# Parameter-name prefixes (inside HourLlavaForConditionalGeneration) of each group; the rest is the language model.
GROUP_PREFIXES = {
    "vision_tower": "model.vision_tower.",
    "projector": "model.multi_modal_projector.",
    "memaug": "model.memaug.",
    "newline": "model.image_newline",
}
NEVER_TRAINED = ("model.vision_tower.post_layernorm.",)


@dataclass(frozen=True)
class StagePreset:
    """What one stage trains and how.

    learning_rates: the nominal rate of each trained group. released_learning_rate: the one rate the released
    checkpoints were trained with. per_device_batch x gradient_accumulation x 64 GPUs: the reference's global batch.
    """

    name: str
    description: str
    trainable: tuple[str, ...]
    learning_rates: dict[str, float]
    released_learning_rate: float
    global_batch_size: int
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_train_epochs: float = 1.0
    lr_scheduler_type: str = "cosine"


STAGES = {
    "stage1": StagePreset(
        name="stage1",
        description="image-language pretraining: MemAug alone, on LLaVA-OneVision single-image data",
        trainable=("memaug",),
        learning_rates={"memaug": 1e-4},
        released_learning_rate=1e-4,
        global_batch_size=128,
    ),
    "stage2": StagePreset(
        name="stage2",
        description="video-language adaptation: everything, on LLaVA-Video-178K and image/text data",
        trainable=MODULE_GROUPS,
        learning_rates={
            "vision_tower": 5e-6,
            "projector": 1e-4,
            "memaug": 1e-4,
            "newline": 2e-5,
            "language_model": 2e-5,
        },
        released_learning_rate=2e-5,
        global_batch_size=128,
    ),
    "stage3": StagePreset(
        name="stage3",
        description="video instruction tuning: all but the vision tower, on VideoMarathon + short videos (3:1)",
        trainable=("projector", "memaug", "newline", "language_model"),
        learning_rates={"projector": 1e-4, "memaug": 1e-4, "newline": 2e-5, "language_model": 2e-5},
        released_learning_rate=2e-5,
        global_batch_size=128,
    ),
}


def module_group(name: str) -> str:
    """The module group of a parameter name (PEFT wrappers' `base_model.model.` prefix is ignored)."""
    name = name.removeprefix("base_model.model.")
    for group, prefix in GROUP_PREFIXES.items():
        if name.startswith(prefix):
            return group
    return "language_model"


def apply_stage(model: nn.Module, stage: StagePreset) -> dict[str, int]:
    """Freeze everything but the stage's groups; returns trainable parameter counts per group. A model with
    `use_memaug=False` (a hand-made compression feeds the decoder) keeps MemAug frozen: its forward never uses it, so
    it would only be counted as trained and, under DDP, reported as an unused parameter."""
    counts = dict.fromkeys(MODULE_GROUPS, 0)
    config = getattr(model, "config", None)
    unused = () if getattr(config, "use_memaug", True) else ("memaug",)
    for name, parameter in model.named_parameters():
        group = module_group(name)
        trainable = group in stage.trainable and group not in unused and not name.startswith(NEVER_TRAINED)
        parameter.requires_grad_(trainable)
        if trainable:
            counts[group] += parameter.numel()
    return counts


def parameter_groups(
    model: nn.Module, stage: StagePreset, lr_mode: str = "nominal", single_rate: float | None = None
) -> list[dict]:
    """Optimizer parameter groups, one per trained module group, each with its learning rate (no weight decay,
    as the reference). Parameters that do not require grad (frozen, or PEFT's frozen base) are left out.

    lr_mode "nominal": the stage's per-module rates; "released": `single_rate` (default: the stage's released
    rate) for every group. Groups the stage does not list (LoRA adapters, say) get the single rate."""
    single_rate = stage.released_learning_rate if single_rate is None else single_rate
    groups: dict[str, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(module_group(name), []).append(parameter)
    return [
        {
            "params": params,
            "lr": stage.learning_rates[group]
            if lr_mode == "nominal" and group in stage.learning_rates
            else single_rate,
            "weight_decay": stage.weight_decay,
            "group_name": group,
        }
        for group, params in groups.items()
    ]
