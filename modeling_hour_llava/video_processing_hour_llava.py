"""HourLlavaVideoProcessor: videos (files, decoded frames or cached features) -> model inputs, at hour scale.

It runs `BaseVideoProcessor.preprocess` and fills its hooks:
- `sample_frames(metadata)`: the Hour-LLaVA sampling rule, from a `VideoMetadata` (frame count and rate): every
  `round(video_fps / fps)`-th frame (1 per second by default), at least `min_frames` frames spread evenly when the
  video is shorter, no upper bound unless `max_frames` is given (then an even subsample).
- `_decode_and_sample_videos`: probes each file (metadata only, nothing decoded yet) and plans its frames with
  `sample_frames`; reads feature files; samples decoded frames when their metadata gives a frame rate.
- `_prepare_input_videos`: decoded frames to (T, 3, H, W) uint8 (`frames_hour_llava.frames_to_uint8` says what is
  converted and what refused).
- `_preprocess`: decodes the planned files, resized while decoding (range-parallel PyAV or torchcodec,
  `video_loading_hour_llava`), resizes given frames, and writes the outputs.

Options (call keywords, or attributes saved in the processor config):
- `fps` (1.0): applied: the rate the rule samples at. `fps=2` gives 2 frames per second.
- `num_frames`: refused. Hour-LLaVA reads the whole video at 1 frame per second (at least `min_frames`, no upper
  bound): its memory repository holds every sampled frame and its forgetting mechanism, not the sampler, chooses what
  the decoder sees, so a fixed frame count would silently drop most of an hour. Cap the frames with `max_frames` (an
  even subsample) or change the rate with `fps`. (`transformers serve` sends `num_frames=32` with every video:
  see docs/processor.md.)
- `do_sample_frames` (True): False takes decoded frames as given and decodes every frame of a file.
- `min_frames` (128), `max_frames` (None), `video_backend` ("auto" | "pyav" | "torchcodec"), `pixel_dtype`
  ("uint8": frames normalised in the model, an hour at 384 px is 1.6 GB instead of 6.4 GB; "float32": normalised
  here). Any other option is refused with the list of valid ones.

Decoded frames without `video_metadata` are taken as already sampled at `fps` (the rule keeps every one of them);
with `video_metadata` giving their frame rate, the rule samples them like a file.

One call may mix both kinds (a training batch of cached VideoMarathon features and decoded short videos). Outputs:
- `pixel_values_videos` (sum T, 3, H, W): the frames of the decoded videos, in video order (absent if none);
- `video_features` (sum T, P, C): the features of the feature-file videos, in video order (absent if none);
- `video_is_features` (V,) bool: for every video, in the order of the call, whether it is a feature file (its
  frames are in `video_features`) or decoded (its frames are in `pixel_values_videos`); the model routes each video
  by it;
- `video_num_frames` (V,): every video's frame count, in the order of the call;
- `video_durations` (V,) seconds, which the processor uses for the time instruction.
"""

import math
import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .errors_hour_llava import HourLlavaErrors, HourLlavaInputError, VideoDecodeError
from .features_hour_llava import FEATURE_SUFFIXES, load_feature_file, sample_feature_frames
from .frames_hour_llava import check_duration, check_frame_count, frames_to_uint8, normalize_frames
from .video_loading_hour_llava import (
    BACKENDS,
    FrameStream,
    VideoInfo,
    probe_video,
    resolve_backend,
    sample_frame_indices,
)

PIXEL_DTYPES = ("uint8", "float32")
NUM_FRAMES_REFUSED = (
    "num_frames={num_frames}: Hour-LLaVA does not take a fixed frame count. It reads the whole video at {fps:g} "
    "frame(s) per second (at least {min_frames} frames, spread evenly over shorter videos, no upper bound): its "
    "memory repository keeps every sampled frame and its forgetting mechanism chooses what the decoder sees, so "
    "{num_frames} frames would drop most of a long video. Pass max_frames={num_frames} to cap the frames (an even "
    "subsample), fps= to change the rate, or num_frames=None"
)
# Frames decoded per chunk by `open_stream` (512 frames at 384 px: 226 MB).
STREAM_CHUNK_FRAMES = 512


class HourLlavaVideoProcessorKwargs(VideosKwargs, total=False):
    min_frames: int
    max_frames: int | None
    video_backend: str
    pixel_dtype: str


@dataclass
class PlannedVideo:
    """One video of a call after `_decode_and_sample_videos`: a probed file with the frames to decode (`info`,
    `indices`), a feature file's sampled features, or decoded frames (`frames`); `duration` in seconds."""

    metadata: VideoMetadata
    duration: float
    info: VideoInfo | None = None
    indices: np.ndarray | None = None
    features: torch.Tensor | None = None
    frames: object = None

    @property
    def is_features(self) -> bool:
        return self.features is not None


def video_path(video) -> str | None:
    """The local path a video input names (`~`, `$VARS` and `file://` URLs resolved), or None for decoded frames."""
    if isinstance(video, os.PathLike):
        video = os.fspath(video)
    if not isinstance(video, str):
        return None
    if "://" in video:
        url = urlparse(video)
        if url.scheme != "file":
            raise VideoDecodeError(video, f"{url.scheme}:// URLs are not fetched; download the video and pass its path")
        video = unquote(url.path)
    return os.path.expandvars(os.path.expanduser(video))


def flatten_video_inputs(videos) -> list:
    """One entry per video: chat templates give [[path, ...], ...]; a single video may come bare."""
    if isinstance(videos, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return [videos]
    if isinstance(videos, (list, tuple)) and videos and all(hasattr(item, "convert") for item in videos):
        return [videos]  # a list of PIL images: the frames of one video
    flat = []
    for item in videos:
        if isinstance(item, (list, tuple)) and not item:
            continue  # a sample without videos in a batch that mixes modalities
        is_batch = isinstance(item, (list, tuple)) and not hasattr(item[0], "size")
        flat.extend(item if is_batch else [item])
    return flat


class HourLlavaVideoProcessor(HourLlavaErrors, BaseVideoProcessor):
    r"""Video processor of Hour-LLaVA (see the module docstring for the sampling rule and every option).

    fps (`float`, 1.0): frames sampled per second (the reference's step is `round(video_fps / fps)` frames).
    min_frames (`int`, 128): shorter videos give `min(total, min_frames)` evenly spread frames instead.
    max_frames (`int`, None): optional cap (an even subsample); the memory side has none by default.
    num_frames: refused with the reason (Hour-LLaVA's 1-fps rule); use `max_frames` or `fps`.
    do_sample_frames (`bool`, True): False takes decoded frames as given and decodes every frame of a file.
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
    num_frames = None
    min_frames = 128
    max_frames = None
    video_backend = "auto"
    pixel_dtype = "uint8"
    valid_kwargs = HourLlavaVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "video_features", "video_is_features", "video_num_frames"]

    # -------------------------------------------------------------------------------------------------------------
    # Options: honoured or refused, checked before anything is read
    # -------------------------------------------------------------------------------------------------------------
    def valid_options(self) -> set[str]:
        return set(self.valid_kwargs.__annotations__) | {"return_tensors"}

    def check_options(self, kwargs: dict) -> dict:
        """The call's options over the processor's defaults, each checked: an unknown option, a bad value or
        `num_frames` raises `HourLlavaInputError` naming the option. Returns the resolved sampling options."""
        unknown = sorted(set(kwargs) - self.valid_options())
        if unknown:
            raise HourLlavaInputError(
                f"unknown video processor option(s) {unknown}; valid: {sorted(self.valid_options())}"
            )
        option = {name: kwargs[name] if kwargs.get(name) is not None else getattr(self, name, None) for name in (
            "fps", "num_frames", "min_frames", "max_frames", "video_backend", "pixel_dtype", "do_sample_frames"
        )}  # fmt: skip
        fps = option["fps"]
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
            raise HourLlavaInputError(f"fps={fps!r}; expected frames per second above 0 (Hour-LLaVA's rule uses 1)")
        if option["num_frames"] is not None:
            raise HourLlavaInputError(
                NUM_FRAMES_REFUSED.format(num_frames=option["num_frames"], fps=fps, min_frames=option["min_frames"])
            )
        check_frame_count(option["min_frames"], "min_frames")
        if option["max_frames"] is not None:
            check_frame_count(option["max_frames"], "max_frames")
        if option["video_backend"] not in BACKENDS:
            raise HourLlavaInputError(
                f"video_backend={option['video_backend']!r}; expected one of {BACKENDS} (decord and opencv are not "
                "supported)"
            )
        try:
            option["video_backend"] = resolve_backend(option["video_backend"])
        except ImportError as error:
            raise HourLlavaInputError(f"video_backend={option['video_backend']!r}: {error}") from error
        if option["pixel_dtype"] not in PIXEL_DTYPES:
            raise HourLlavaInputError(f"pixel_dtype={option['pixel_dtype']!r}; expected one of {PIXEL_DTYPES}")
        if not isinstance(option["do_sample_frames"], bool):
            raise HourLlavaInputError(f"do_sample_frames={option['do_sample_frames']!r}; expected True or False")
        return option

    def _size(self, kwargs: dict) -> tuple[int, int]:
        size = kwargs.get("size") or self.size
        return (size.height, size.width) if isinstance(size, SizeDict) else (size["height"], size["width"])

    # -------------------------------------------------------------------------------------------------------------
    # BaseVideoProcessor hooks
    # -------------------------------------------------------------------------------------------------------------
    def preprocess(self, videos, **kwargs) -> BatchFeature:
        """Check every option and input first (nothing is decoded before), then run `BaseVideoProcessor.preprocess`
        with the hooks below."""
        self.check_options(kwargs)
        videos = [video_path(video) or video for video in flatten_video_inputs(videos)]
        if not videos:
            raise HourLlavaInputError("no videos given")
        return super().preprocess(videos, **kwargs)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: float | None = None,
        min_frames: int | None = None,
        max_frames: int | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Hour-LLaVA's sampling rule on a video's `VideoMetadata` (`total_num_frames`, `fps`): ascending indices."""
        option = self.check_options(
            {"num_frames": num_frames, "fps": fps, "min_frames": min_frames, "max_frames": max_frames}
        )
        total = check_frame_count(metadata.total_num_frames, "video_metadata.total_num_frames")
        rate = metadata.fps if metadata.fps is not None else option["fps"]  # decoded frames: already sampled
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise HourLlavaInputError(f"video_metadata.fps={rate!r}; expected the video's frame rate, above 0")
        return sample_frame_indices(total, rate, option["fps"], option["min_frames"], option["max_frames"])

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        """Plan every video of the call without decoding: probe files and choose their frames, read feature files,
        sample decoded frames that come with a frame rate. Returns ([PlannedVideo], [VideoMetadata])."""
        given = self._metadata_per_video(video_metadata, len(videos))
        planned = []
        for index, (video, metadata) in enumerate(zip(videos, given, strict=True)):
            if isinstance(video, str):
                plan = self._plan_file(video, do_sample_frames, sample_indices_fn)
            else:
                plan = self._plan_frames(video, metadata, do_sample_frames, sample_indices_fn, f"video {index}")
            planned.append(plan)
        return planned, [plan.metadata for plan in planned]

    def _prepare_input_videos(self, videos, do_convert_rgb=None, input_data_format=None, device=None):
        """Decoded frames -> (T, 3, H, W) uint8 (see `frames_hour_llava`); files and features pass through."""
        for index, plan in enumerate(videos):
            if plan.frames is not None:
                plan.frames = frames_to_uint8(plan.frames, f"video {index}")
        return videos

    def _preprocess(self, videos: list[PlannedVideo], size: SizeDict, return_tensors=None, **kwargs) -> BatchFeature:
        """Decode the planned files (resized while decoding), resize given frames, normalise for `float32`."""
        option = self.check_options({k: kwargs.get(k) for k in ("fps", "min_frames", "max_frames", "video_backend")})
        height, width = size.height, size.width
        frames, features = [], []
        for plan in videos:
            if plan.is_features:
                features.append(plan.features)
                continue
            if plan.info is not None:
                stream = FrameStream(
                    plan.info, plan.indices, (height, width), option["fps"], option["video_backend"],
                    os.cpu_count() or 1, STREAM_CHUNK_FRAMES,
                )  # fmt: skip
                pixels = stream.decode_all()
            else:
                pixels = plan.frames
                if tuple(pixels.shape[-2:]) != (height, width):
                    pixels = self.resize(pixels, size=SizeDict(height=height, width=width), resample=self.resample)
            frames.append(pixels)
        data = {
            "video_num_frames": torch.tensor([plan.metadata.frames_indices.shape[0] for plan in videos]),
            "video_durations": torch.tensor([plan.duration for plan in videos], dtype=torch.float64),
        }
        if frames:
            pixels = torch.cat(frames)
            if (kwargs.get("pixel_dtype") or self.pixel_dtype) == "float32":
                pixels = normalize_frames(pixels, self.rescale_factor, self.image_mean, self.image_std)
            data["pixel_values_videos"] = pixels
        if features:
            data["video_features"] = torch.cat(features)
        data["video_is_features"] = torch.tensor([plan.is_features for plan in videos], dtype=torch.bool)
        return BatchFeature(data, tensor_type=return_tensors)

    # -------------------------------------------------------------------------------------------------------------
    # Planning one video
    # -------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _metadata_per_video(video_metadata, count: int) -> list[VideoMetadata | None]:
        """The caller's `video_metadata` (one dict / VideoMetadata, or one per video), checked, or Nones."""
        if video_metadata is None:
            return [None] * count
        entries = list(video_metadata) if isinstance(video_metadata, (list, tuple)) else [video_metadata]
        if entries and isinstance(entries[0], (list, tuple)):
            entries = [entry for group in entries for entry in group]
        if len(entries) != count:
            raise HourLlavaInputError(f"{len(entries)} video_metadata entries for {count} videos; give one per video")
        checked = []
        for index, entry in enumerate(entries):
            if entry is None:
                checked.append(None)
                continue
            if not isinstance(entry, (dict, VideoMetadata)):
                raise HourLlavaInputError(f"video_metadata[{index}] is {type(entry).__name__}; expected a dict")
            try:
                metadata = entry if isinstance(entry, VideoMetadata) else VideoMetadata(**entry)
            except TypeError as error:
                raise HourLlavaInputError(f"video_metadata[{index}]: {error}") from error
            check_frame_count(metadata.total_num_frames, f"video_metadata[{index}].total_num_frames")
            if metadata.fps is not None:
                check_duration(metadata.fps, f"video_metadata[{index}].fps")
            checked.append(metadata)
        return checked

    def _plan_file(self, path: str, do_sample_frames: bool, sample_indices_fn) -> PlannedVideo:
        """A feature file (read and sampled by the reference's rule) or a video file (probed, frames chosen)."""
        if path.endswith(FEATURE_SUFFIXES):
            features, duration = load_feature_file(path)
            keep = sample_feature_frames(features.shape[0], duration) if do_sample_frames else None
            keep = np.arange(features.shape[0]) if keep is None else keep
            metadata = VideoMetadata(
                total_num_frames=features.shape[0], duration=duration, video_backend="features", frames_indices=keep
            )
            return PlannedVideo(metadata, duration, features=features[torch.from_numpy(keep)])
        info = probe_video(path)
        metadata = VideoMetadata(
            total_num_frames=info.num_frames,
            fps=info.fps,
            width=info.width,
            height=info.height,
            duration=info.duration,
            video_backend="file",
        )
        indices = sample_indices_fn(metadata=metadata) if do_sample_frames else np.arange(info.num_frames)
        metadata.frames_indices = indices
        return PlannedVideo(metadata, info.num_frames / info.fps, info=info, indices=indices)

    def _plan_frames(self, video, metadata, do_sample_frames, sample_indices_fn, name: str) -> PlannedVideo:
        """Decoded frames: sampled by the rule when their metadata gives a frame rate, else taken as sampled."""
        count = len(video)
        if count == 0:
            raise HourLlavaInputError(f"{name} has no frames")
        metadata = metadata or VideoMetadata(total_num_frames=count)
        if metadata.total_num_frames != count:
            raise HourLlavaInputError(
                f"{name} has {count} frames, but its video_metadata says total_num_frames={metadata.total_num_frames}"
            )
        if do_sample_frames and metadata.fps is not None:
            indices = sample_indices_fn(metadata=metadata)
            video = video[torch.from_numpy(indices)] if isinstance(video, torch.Tensor) else video[indices]
            rate = metadata.fps
        else:
            indices = np.arange(count)
            rate = metadata.fps or self.fps
        metadata.frames_indices = indices
        duration = metadata.duration or count / rate
        return PlannedVideo(metadata, check_duration(duration, f"{name} duration"), frames=video)

    # -------------------------------------------------------------------------------------------------------------
    # One video outside a call
    # -------------------------------------------------------------------------------------------------------------
    def open_stream(self, path: str | os.PathLike, chunk_frames: int = STREAM_CHUNK_FRAMES, **kwargs) -> FrameStream:
        """A video file as a [`FrameStream`]: frame count and duration known at once (for the prompt, through
        `HourLlavaProcessor.text_for_encoded_videos`), frames decoded `chunk_frames` at a time while
        `model.encode_video(video_streams=[...])` consumes them. Same options, sampling and sizes as `__call__`."""
        option = self.check_options(kwargs)
        path = video_path(path)
        if path is None:
            raise HourLlavaInputError("open_stream takes the path of a video file")
        plan = self._plan_file(
            path, option["do_sample_frames"], lambda metadata: self.sample_frames(metadata, **kwargs)
        )
        if plan.is_features:
            raise HourLlavaInputError(f"{path}: a feature file has no frames to stream; pass it to the processor")
        return FrameStream(
            plan.info, plan.indices, self._size(kwargs), option["fps"], option["video_backend"],
            os.cpu_count() or 1, chunk_frames,
        )  # fmt: skip

    def load_video(self, video, **kwargs) -> tuple[torch.Tensor, float, bool]:
        """One video -> (frames (T, 3, H, W) uint8 or features (T, P, C), duration in seconds, is_features)."""
        outputs = self(video, **{**kwargs, "pixel_dtype": "uint8"})
        duration = float(outputs["video_durations"][0])
        if "video_features" in outputs:
            return outputs["video_features"], duration, True
        return outputs["pixel_values_videos"], duration, False

    def normalize_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames -> float32 `(x * rescale_factor - mean) / std`, what SigLIP reads."""
        return normalize_frames(frames, self.rescale_factor, self.image_mean, self.image_std)


__all__ = ["HourLlavaVideoProcessor", "flatten_video_inputs", "video_path"]
