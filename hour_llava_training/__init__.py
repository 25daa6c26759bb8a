"""Training Hour-LLaVA with TRL's SFTTrainer: stage presets, the chat collator, per-module learning rates.

`train.py` at the repository root reads top to bottom on these pieces.
"""

from .collator import HourLlavaCollator
from .stages import MODULE_GROUPS, STAGES, StagePreset, apply_stage, module_group, parameter_groups
from .trainer import HourLlavaSFTTrainer

__all__ = [
    "MODULE_GROUPS",
    "STAGES",
    "HourLlavaCollator",
    "HourLlavaSFTTrainer",
    "StagePreset",
    "apply_stage",
    "module_group",
    "parameter_groups",
]
