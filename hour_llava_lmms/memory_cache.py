"""Encode each video once per run: an in-process LRU of `HourLlavaVideoMemory`, optionally fed by feature files.

The key is the video's absolute path, modification time and size (a replaced file is encoded again) plus a
fingerprint of everything that shapes the memory (model config, sampling options), so one cache never mixes models.
With `features_dir`, a video whose memory-repository file exists (`dataset_builder.extract_features` layout:
`<features_dir>/<path relative to video_root, suffix .safetensors>`) is encoded from its stored features and the
vision tower does not run at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from modeling_hour_llava.features_hour_llava import load_feature_file, sample_feature_frames

FEATURE_SUFFIX = ".safetensors"


@dataclass
class EncodedVideo:
    """One video's memory and what the prompt needs to know about it."""

    memory: object  # HourLlavaVideoMemory (from the checkpoint's own remote code, so not typed by our class)
    num_frames: int
    duration: float
    source: str  # "frames" (decoded, tower ran) or "features" (feature file, no tower)
    seconds: float


@dataclass
class CacheStats:
    """Counts of one run: how often the tower ran, how often a memory was reused."""

    encoded_from_frames: int = 0
    encoded_from_features: int = 0
    hits: int = 0
    encode_seconds: float = 0.0
    videos: set = field(default_factory=set)

    def as_dict(self) -> dict:
        return {
            "encoded_from_frames": self.encoded_from_frames,
            "encoded_from_features": self.encoded_from_features,
            "memory_hits": self.hits,
            "distinct_videos": len(self.videos),
            "encode_seconds": round(self.encode_seconds, 3),
        }


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (model config, sampling options)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_key(path: str) -> tuple[str, int, int]:
    """(absolute path, mtime in ns, size); a missing file keys on the path alone (decoding will name it)."""
    path = os.path.abspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        return path, -1, -1
    return path, stat.st_mtime_ns, stat.st_size


def feature_file_for(video: str, features_dir: str | None, video_root: str | None) -> str | None:
    """The memory-repository file of a video, if `features_dir` is set and the file exists."""
    if not features_dir:
        return None
    video = os.path.abspath(video)
    if video_root and os.path.commonpath([video, os.path.abspath(video_root)]) == os.path.abspath(video_root):
        relative = os.path.relpath(video, video_root)
    else:
        relative = os.path.basename(video)
    candidate = os.path.join(features_dir, os.path.splitext(relative)[0] + FEATURE_SUFFIX)
    return candidate if os.path.isfile(candidate) else None


class VideoMemoryCache:
    """LRU of `capacity` encoded videos (0: no reuse, every call encodes; for measurements).

    `encode_frames(path) -> (memory, num_frames, duration)` runs the decoder and tower; `encode_features(features)
    -> memory` runs the projector on stored features. Both raise `VideoDecodeError` for bad inputs; nothing is
    cached for them."""

    def __init__(
        self,
        encode_frames: Callable[[str], tuple[object, int, float]],
        encode_features: Callable[[torch.Tensor], object],
        model_fingerprint: str,
        capacity: int = 2,
        features_dir: str | None = None,
        video_root: str | None = None,
    ):
        if capacity < 0:
            raise ValueError(f"memory_cache_size={capacity}; use 0 (encode for every question) or more")
        self.encode_frames, self.encode_features = encode_frames, encode_features
        self.model_fingerprint, self.capacity = model_fingerprint, capacity
        self.features_dir, self.video_root = features_dir, video_root
        self.entries: OrderedDict[tuple, EncodedVideo] = OrderedDict()
        self.stats = CacheStats()

    def get(self, path: str) -> EncodedVideo:
        """The encoded video, from the cache or encoded now (and cached, evicting the least recently used)."""
        key = (*file_key(path), self.model_fingerprint)
        self.stats.videos.add(key)
        if key in self.entries:
            self.entries.move_to_end(key)
            self.stats.hits += 1
            return self.entries[key]
        encoded = self._encode(path)
        if self.capacity == 0:
            return encoded
        self.entries[key] = encoded
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return encoded

    def _encode(self, path: str) -> EncodedVideo:
        start = time.perf_counter()
        feature_file = feature_file_for(path, self.features_dir, self.video_root)
        if feature_file is not None:
            features, duration = load_feature_file(feature_file)
            features = features[sample_feature_frames(features.shape[0], duration)]
            memory, num_frames, source = self.encode_features(features), features.shape[0], "features"
            self.stats.encoded_from_features += 1
        else:
            memory, num_frames, duration = self.encode_frames(path)
            source = "frames"
            self.stats.encoded_from_frames += 1
        seconds = time.perf_counter() - start
        self.stats.encode_seconds += seconds
        return EncodedVideo(memory, int(num_frames), float(duration), source, seconds)
