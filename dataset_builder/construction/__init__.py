"""The VideoMarathon construction pipeline: hierarchical captions and QA generation for anyone's long videos
(clip captions from a VLM reading frames or from a text LLM reading descriptions -> events -> event captions ->
global caption -> QA for the 22 tasks), on transformers or OpenAI-compatible backends, resumable per video,
written as VideoMarathon Hub rows. See `pipeline.py`."""

from .backends import (
    Backend,
    BackendError,
    Completion,
    ContextOverflowError,
    Cost,
    OpenAIBackend,
    TransformersBackend,
    TransformersVLMBackend,
)
from .pipeline import PipelineConfig, run_pipeline, state_rows
from .prompts import Prompts
from .stages import JobError, StageSettings, TextCaptioner, VideoJob
from .vision import VisionCaptioner

__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "ContextOverflowError",
    "Cost",
    "JobError",
    "OpenAIBackend",
    "PipelineConfig",
    "Prompts",
    "StageSettings",
    "TextCaptioner",
    "TransformersBackend",
    "TransformersVLMBackend",
    "VideoJob",
    "VisionCaptioner",
    "run_pipeline",
    "state_rows",
]
