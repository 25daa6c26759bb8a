"""HourLlavaVideoProcessor: videos (files, frames or cached features) -> model inputs, at hour scale.

Files are decoded at 1 frame per second (at least `min_frames`, spread evenly when the video is shorter, no upper
bound), resized while decoding. Frames come out as uint8 (`pixel_dtype="uint8"`, the default: an hour at 384 px is
1.6 GB instead of 6.4 GB in float32); the model rescales and normalises them chunk by chunk. Pre-extracted SigLIP
features (a `.safetensors` memory-repository file) come out as `video_features` and skip the vision tower.

One call may mix both kinds (a training batch of cached VideoMarathon features and decoded short videos). Outputs:
- `pixel_values_videos` (sum T, 3, H, W): the frames of the decoded videos, in video order (absent if none);
- `video_features` (sum T, P, C): the features of the feature-file videos, in video order (absent if none);
- `video_is_features` (V,) bool: for every video, in the order of the call, whether it is a feature file (its
  frames are in `video_features`) or decoded (its frames are in `pixel_values_videos`); the model routes each video
  by it;
- `video_num_frames` (V,): every video's frame count, in the order of the call;
- `video_durations` (V,) seconds, which the processor uses for the time instruction.
"""

import os
from collections.abc import Sequence

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor

from .features_hour_llava import FEATURE_SUFFIXES, load_feature_file, sample_feature_frames
from .video_loading_hour_llava import FrameStream, open_frame_stream


class HourLlavaVideoProcessorKwargs(VideosKwargs, total=False):
    min_frames: int
    max_frames: int | None
    video_backend: str
    pixel_dtype: str


def flatten_video_inputs(videos) -> list:
    """One entry per video: chat templates give [[path, ...], ...]; a single video may come bare."""
    if isinstance(videos, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return [videos]
    flat = []
    for item in videos:
        if isinstance(item, (list, tuple)) and not item:
            continue  # a sample without videos in a batch that mixes modalities
        is_batch = isinstance(item, (list, tuple)) and not hasattr(item[0], "size")
        flat.extend(item if is_batch else [item])
    return flat


class HourLlavaVideoProcessor(BaseVideoProcessor):
    r"""Video processor of Hour-LLaVA.

    fps (`float`, 1.0): frames sampled per second (the reference's step is `round(video_fps / fps)` frames).
    min_frames (`int`, 128): shorter videos give `min(total, min_frames)` evenly spread frames instead.
    max_frames (`int`, None): optional cap (an even subsample); the memory side has none by default.
    video_backend (`"auto"` | `"pyav"` | `"torchcodec"`): decoder; auto picks torchcodec where FFmpeg is installed.
    pixel_dtype (`"uint8"` | `"float32"`): uint8 frames (normalised in the model) or normalised float32 frames.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 384, "width": 384}
    rescale_factor = 1 / 255
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    fps = 1.0
    min_frames = 128
    max_frames = None
    video_backend = "auto"
    pixel_dtype = "uint8"
    valid_kwargs = HourLlavaVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "video_features", "video_is_features", "video_num_frames"]

    def _option(self, kwargs: dict, name: str):
        value = kwargs.get(name)
        return getattr(self, name) if value is None else value

    def _size(self, kwargs: dict) -> tuple[int, int]:
        size = self._option(kwargs, "size")
        return (size.height, size.width) if isinstance(size, SizeDict) else (size["height"], size["width"])

    def open_stream(self, path: str | os.PathLike, chunk_frames: int = 512, **kwargs) -> FrameStream:
        """A video file as a [`FrameStream`]: frame count and duration known at once (for the prompt, through
        `HourLlavaProcessor.text_for_encoded_videos`), frames decoded `chunk_frames` at a time while
        `model.encode_video(video_streams=[...])` consumes them. Same sampling and sizes as `__call__`."""
        return open_frame_stream(
            path,
            size=self._size(kwargs),
            sample_fps=self._option(kwargs, "fps"),
            min_frames=self._option(kwargs, "min_frames"),
            max_frames=self._option(kwargs, "max_frames"),
            backend=self._option(kwargs, "video_backend"),
            chunk_frames=chunk_frames,
        )

    def load_video(self, video, **kwargs) -> tuple[torch.Tensor, float, bool]:
        """One video -> (frames (T, 3, H, W) uint8 or features (T, P, C), duration in seconds, is_features)."""
        if isinstance(video, (str, os.PathLike)):
            path = os.fspath(video)
            if path.endswith(FEATURE_SUFFIXES):
                features, duration = load_feature_file(path)
                return features[sample_feature_frames(features.shape[0], duration)], duration, True
            stream = self.open_stream(path, **kwargs)
            return stream.decode_all(), stream.duration, False
        height, width = self._size(kwargs)
        return self._frames_from_array(video, height, width, kwargs)

    def _frames_from_array(self, video, height: int, width: int, kwargs: dict) -> tuple[torch.Tensor, float, bool]:
        """Already decoded frames (T, H, W, 3) / (T, 3, H, W) uint8, or a list of PIL images: taken as sampled."""
        if isinstance(video, Sequence) and not isinstance(video, (np.ndarray, torch.Tensor)):
            video = np.stack([np.asarray(image.convert("RGB")) for image in video])
        frames = torch.as_tensor(video)
        if frames.dim() != 4:
            raise ValueError(f"video frames of shape {tuple(frames.shape)}; expected (T, H, W, 3) or (T, 3, H, W)")
        if frames.shape[-1] == 3 and frames.shape[1] != 3:
            frames = frames.permute(0, 3, 1, 2)
        frames = frames.to(torch.uint8).contiguous()
        if frames.shape[-2:] != (height, width):
            frames = self.resize(frames, size=SizeDict(height=height, width=width), resample=self.resample)
        metadata = kwargs.get("video_metadata")
        fps = getattr(metadata, "fps", None) or (metadata or {}).get("fps") if metadata else None
        return frames, frames.shape[0] / (fps or self._option(kwargs, "fps")), False

    def preprocess(self, videos, **kwargs) -> BatchFeature:
        loaded = [self.load_video(video, **kwargs) for video in flatten_video_inputs(videos)]
        is_features = [flag for _, _, flag in loaded]
        data = {
            "video_num_frames": torch.tensor([tensor.shape[0] for tensor, _, _ in loaded]),
            "video_durations": torch.tensor([duration for _, duration, _ in loaded], dtype=torch.float64),
            "video_is_features": torch.tensor(is_features, dtype=torch.bool),
        }
        features = [tensor for tensor, _, flag in loaded if flag]
        frames = [tensor for tensor, _, flag in loaded if not flag]
        if features:
            data["video_features"] = torch.cat(features)
        if frames:
            frames = torch.cat(frames)
            if self._option(kwargs, "pixel_dtype") == "float32":
                frames = self.normalize_frames(frames)
            data["pixel_values_videos"] = frames
        return BatchFeature(data, tensor_type=kwargs.get("return_tensors"))

    def normalize_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> float32 `(x * rescale_factor - mean) / std`, what SigLIP reads."""
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return (frames.float() * self.rescale_factor - mean) / std


__all__ = ["HourLlavaVideoProcessor"]
