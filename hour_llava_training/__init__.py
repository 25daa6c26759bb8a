"""Training Hour-LLaVA with TRL's SFTTrainer: stage presets, the chat collator, per-module learning rates, and
training that survives broken samples, non-finite steps and kills.

`train.py` at the repository root reads top to bottom on these pieces. With plain TRL, pass
`data_collator=HourLlavaDataCollator(processor, media_root=...)` to `SFTTrainer` (docs/training.md).
"""

from .accounting import TooManyBrokenSamples, TooManyNonFiniteSteps
from .collator import SKIP_REASONS, HourLlavaCollator, HourLlavaDataCollator
from .stages import MODULE_GROUPS, STAGES, StagePreset, apply_stage, module_group, parameter_groups
from .trainer import HourLlavaSFTTrainer

__all__ = [
    "MODULE_GROUPS",
    "SKIP_REASONS",
    "STAGES",
    "HourLlavaCollator",
    "HourLlavaDataCollator",
    "HourLlavaSFTTrainer",
    "StagePreset",
    "TooManyBrokenSamples",
    "TooManyNonFiniteSteps",
    "apply_stage",
    "module_group",
    "parameter_groups",
]
