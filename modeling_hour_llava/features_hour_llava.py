"""Memory-repository files: pre-extracted SigLIP features of one video, read instead of decoding it.

One `.safetensors` file per video holds the tensor `features` (T, P, C): T frames at 1 fps, P pooled tokens per
frame (the memory grid, 8 x 8 = 64 in the paper), C the tower's width; metadata `format` and `duration` (seconds).
`dataset_builder.extract_features` writes them, the video processor, training and the lmms-eval model read them.
"""

import os

import numpy as np
import torch
from safetensors import safe_open

from .errors_hour_llava import VideoDecodeError

FEATURE_FILE_FORMAT = "hour_llava_features/1"
FEATURE_SUFFIXES = (".safetensors",)


def load_feature_file(path: str | os.PathLike) -> tuple[torch.Tensor, float]:
    """A memory-repository file: tensor `features` (T, P, C) and metadata `duration` (seconds) and `format`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoDecodeError(path, "feature file not found")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FEATURE_FILE_FORMAT or "features" not in handle.keys():
                raise VideoDecodeError(
                    path,
                    f"not an Hour-LLaVA feature file (format {metadata.get('format')!r}, want a 'features' tensor)",
                )
            features = handle.get_tensor("features")
    except VideoDecodeError:
        raise
    except Exception as error:  # safetensors raises several types for damaged files
        raise VideoDecodeError(path, f"unreadable feature file ({error})") from error
    if features.dim() != 3 or features.shape[0] == 0:
        raise VideoDecodeError(path, f"feature tensor has shape {tuple(features.shape)}; expected (T > 0, P, C)")
    return features, float(metadata.get("duration", features.shape[0]))


def save_feature_file(path: str | os.PathLike, features: torch.Tensor, duration: float, **metadata: str) -> None:
    """Write a memory-repository file atomically (temporary file in the same folder, then rename)."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    info = {"format": FEATURE_FILE_FORMAT, "duration": f"{duration:.6f}", **{k: str(v) for k, v in metadata.items()}}
    try:
        save_file({"features": features.contiguous()}, tmp, metadata=info)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sample_feature_frames(num_stored: int, duration: float) -> np.ndarray:
    """The reference keeps `min(T_stored, int(duration))` stored frames, spread evenly (all of them if the duration
    rounds to zero, where the reference crashed)."""
    keep = min(num_stored, int(duration)) or num_stored
    return np.linspace(0, num_stored - 1, keep, dtype=np.int64)


__all__ = ["FEATURE_FILE_FORMAT", "FEATURE_SUFFIXES", "load_feature_file", "sample_feature_frames", "save_feature_file"]
