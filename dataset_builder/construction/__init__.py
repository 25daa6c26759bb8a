"""The VideoMarathon construction pipeline: hierarchical captions and QA generation for anyone's long videos
(clip captions -> events -> event captions -> global caption -> QA for the 22 tasks), on transformers or
OpenAI-compatible backends, resumable per video, written as VideoMarathon Hub rows. See `pipeline.py`."""

from .backends import Backend, BackendError, Completion, Cost, OpenAIBackend, TransformersBackend
from .pipeline import PipelineConfig, run_pipeline, state_rows
from .prompts import Prompts
from .stages import StageSettings, TextCaptioner, VideoJob

__all__ = [
    "Backend",
    "BackendError",
    "Completion",
    "Cost",
    "OpenAIBackend",
    "PipelineConfig",
    "Prompts",
    "StageSettings",
    "TextCaptioner",
    "TransformersBackend",
    "VideoJob",
    "run_pipeline",
    "state_rows",
]
