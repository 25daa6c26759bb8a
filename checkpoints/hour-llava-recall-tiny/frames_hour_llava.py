"""Frames and features as Hour-LLaVA takes them: layout, dtype and value checks, and the one normalisation.

What is converted (unambiguous) and what is refused, for decoded frames given to the video processor:
- layout: (T, H, W, C) or (T, C, H, W), told apart by where the channels are; a video whose layout cannot be told
  (both candidate axes look like channels) is refused.
- channels: 3 (RGB) as given; 1 (grey) repeated to RGB; 4 (RGBA) loses its alpha (what `PIL.Image.convert("RGB")`
  does); any other count is refused.
- dtypes (`intensities_to_uint8`): uint8 as given; other integers whose values lie in 0-255 as given; uint16 as
  16-bit intensities (value / 257, rounded); floats in [0, 1] as [0, 1] intensities (x 255, rounded), floats with
  values above 1 and up to 255 as 0-255 intensities (rounded); bool, negative, NaN or infinite values, integers above
  255 and floats above 255 are refused (a float video with negative values is most likely normalised already: give
  it to the model as `pixel_values_videos` instead).

What the model takes (`model_pixels`): uint8 frames (or integers in 0-255), normalised here; float frames, taken as
normalised already (`(x / 255 - mean) / std`, what `pixel_dtype="float32"` gives), refused when non-finite or more
than `NORMALISED_RANGE_SLACK` range widths outside the normalised range (0-255 floats); channels-last frames are
turned channels-first; frames of another size than the tower's are refused (the processor resizes).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors_hour_llava import HourLlavaInputError

CHANNEL_COUNTS = (1, 3, 4)
# How far (in widths of the normalised range, 2 for SigLIP's [-1, 1]) float pixels may stray beyond that range before
# they are refused as unnormalised: 0-255 floats reach 255, while normalised frames stay inside (and random test
# frames, torch.randn, within about 5).
NORMALISED_RANGE_SLACK = 4.0


def as_frame_tensor(video, name: str = "video") -> torch.Tensor:
    """A numpy array, a tensor or a list of PIL images / arrays -> a tensor (T, ...) without copying arrays."""
    if isinstance(video, torch.Tensor):
        return video
    if isinstance(video, np.ndarray):
        if video.dtype == object or not (np.issubdtype(video.dtype, np.number) or video.dtype == np.bool_):
            raise HourLlavaInputError(f"{name}: an array of {video.dtype}; expected numeric frames")
        return torch.from_numpy(np.ascontiguousarray(video))
    if isinstance(video, (list, tuple)) and video:
        frames = [
            np.asarray(frame.convert("RGB")) if hasattr(frame, "convert") else np.asarray(frame) for frame in video
        ]
        shapes = {frame.shape for frame in frames}
        if len(shapes) != 1:
            raise HourLlavaInputError(f"{name}: its frames have different shapes {sorted(shapes)}; give equal frames")
        return as_frame_tensor(np.stack(frames), name)
    raise HourLlavaInputError(f"{name}: {type(video).__name__} is not a video; give a path, an array or frames")


def channels_first(frames: torch.Tensor, name: str = "video") -> torch.Tensor:
    """(T, H, W, C) or (T, C, H, W) with C in 1, 3, 4 -> (T, C, H, W); an undecidable layout is refused."""
    if frames.dim() != 4:
        raise HourLlavaInputError(
            f"{name} has shape {tuple(frames.shape)}; expected frames (T, H, W, C) or (T, C, H, W) with C = 3"
        )
    first, last = frames.shape[1] in CHANNEL_COUNTS, frames.shape[-1] in CHANNEL_COUNTS
    if first and last and frames.shape[1] != frames.shape[-1]:  # e.g. (T, 3, H, 4): prefer the 3
        first, last = frames.shape[1] == 3, frames.shape[-1] == 3
    if first and not last:
        return frames
    if last and not first:
        return frames.permute(0, 3, 1, 2)
    raise HourLlavaInputError(
        f"{name} has shape {tuple(frames.shape)}: cannot tell where the channels are; give (T, H, W, 3) or "
        "(T, 3, H, W) frames"
    )


def three_channels(frames: torch.Tensor, name: str = "video") -> torch.Tensor:
    """(T, C, H, W) with C = 1 (grey, repeated), 3, or 4 (RGBA, alpha dropped) -> (T, 3, H, W)."""
    channels = frames.shape[1]
    if channels == 3:
        return frames
    if channels == 1:
        return frames.expand(-1, 3, -1, -1)
    if channels == 4:
        return frames[:, :3]
    raise HourLlavaInputError(f"{name} has {channels} channels; expected 3 (RGB), 1 (grey) or 4 (RGBA)")


def _value_range(frames: torch.Tensor) -> tuple[float, float]:
    if frames.numel() == 0:
        return 0.0, 0.0
    return float(frames.min()), float(frames.max())


def intensities_to_uint8(frames: torch.Tensor, name: str = "video") -> torch.Tensor:
    """Frames of any numeric dtype holding intensities -> uint8, by the rules in the module docstring."""
    if frames.dtype == torch.uint8:
        return frames
    if frames.dtype == torch.bool:
        raise HourLlavaInputError(f"{name} is boolean; expected uint8 (0-255) or float (0-1) frames")
    if frames.dtype == torch.uint16:
        return (frames.to(torch.int32) / 257).round().to(torch.uint8)
    if frames.is_floating_point():
        if not bool(torch.isfinite(frames).all()):
            raise HourLlavaInputError(f"{name} holds NaN or infinite values")
        low, high = _value_range(frames)
        if low < 0:
            raise HourLlavaInputError(
                f"{name} has negative values (min {low:.3g}): it looks normalised already; give uint8 (0-255) or "
                "float [0, 1] frames to the processor, or normalised frames to the model as pixel_values_videos"
            )
        if high > 255:
            raise HourLlavaInputError(f"{name} has values up to {high:.3g}; expected float [0, 1] or 0-255 frames")
        scale = 255.0 if high <= 1.0 else 1.0
        return (frames.float() * scale).round().to(torch.uint8)
    low, high = _value_range(frames)
    if low < 0 or high > 255:
        raise HourLlavaInputError(
            f"{name} is {str(frames.dtype).removeprefix('torch.')} with values {low:.0f}..{high:.0f}; expected "
            "0-255 (8-bit intensities) or uint16 frames"
        )
    return frames.to(torch.uint8)


def frames_to_uint8(video, name: str = "video") -> torch.Tensor:
    """Decoded frames in any accepted form -> (T, 3, H, W) uint8, contiguous."""
    frames = channels_first(as_frame_tensor(video, name), name)
    return intensities_to_uint8(three_channels(frames, name), name).contiguous()


def normalize_frames(
    frames: torch.Tensor, rescale_factor: float, mean: list[float], std: list[float], dtype=torch.float32
) -> torch.Tensor:
    """uint8 frames (N, 3, H, W) -> `(x * rescale_factor - mean) / std` in `dtype`: what SigLIP reads. The one place
    Hour-LLaVA normalises pixels (the video processor's `pixel_dtype="float32"` and the model's uint8 inputs)."""
    mean_t = torch.tensor(mean, device=frames.device, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=frames.device, dtype=torch.float32).view(1, -1, 1, 1)
    return ((frames.float() * rescale_factor - mean_t) / std_t).to(dtype)


def model_pixels(pixels: torch.Tensor, config, name: str = "pixel_values") -> torch.Tensor:
    """Frames or image tiles given to the model (N, 3, S, S) -> normalised float, checked (see the module docstring).

    config: an `HourLlavaConfig` (`vision_config.image_size`, `vision_rescale_factor`, `vision_image_mean/std`).
    """
    if not isinstance(pixels, torch.Tensor):
        raise HourLlavaInputError(f"{name} is a {type(pixels).__name__}; expected a tensor (N, 3, H, W)")
    pixels = three_channels(channels_first(pixels, name), name)
    side = config.vision_config.image_size
    if tuple(pixels.shape[-2:]) != (side, side):
        raise HourLlavaInputError(
            f"{name} frames are {pixels.shape[-2]}x{pixels.shape[-1]}, but this model's vision tower takes "
            f"{side}x{side} (vision_config.image_size); resize them with the processor"
        )
    mean, std = config.vision_image_mean, config.vision_image_std
    if not pixels.is_floating_point():
        frames = intensities_to_uint8(pixels, name)
        return normalize_frames(frames, config.vision_rescale_factor, mean, std)
    if not bool(torch.isfinite(pixels).all()):
        raise HourLlavaInputError(f"{name} holds NaN or infinite values")
    low_bound = min((0 - m) / s for m, s in zip(mean, std, strict=True))
    high_bound = max((1 - m) / s for m, s in zip(mean, std, strict=True))
    slack = NORMALISED_RANGE_SLACK * (high_bound - low_bound)
    low, high = _value_range(pixels)
    if low < low_bound - slack or high > high_bound + slack:
        raise HourLlavaInputError(
            f"{name} is float with values {low:.3g}..{high:.3g}, outside the normalised range "
            f"{low_bound:.3g}..{high_bound:.3g}; give uint8 frames (normalised in the model) or frames normalised "
            "as (x / 255 - mean) / std (the processor does both)"
        )
    return pixels


def check_features(features: torch.Tensor, width: int, name: str = "video_features") -> None:
    """Pre-extracted SigLIP features (T, P, C): a float tensor, C = the tower's `width`, P a square patch grid,
    finite values."""
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        kind = features.dtype if isinstance(features, torch.Tensor) else type(features).__name__
        raise HourLlavaInputError(f"{name} is {kind}; expected float SigLIP features (T, P, C)")
    if features.dim() != 3:
        raise HourLlavaInputError(f"{name} has shape {tuple(features.shape)}; expected (T, P, C)")
    if features.shape[-1] != width:
        raise HourLlavaInputError(
            f"{name} have width {features.shape[-1]}, but this model's vision tower gives {width} "
            "(vision_config.hidden_size): they come from another model; extract them with this one"
        )
    side = math.isqrt(features.shape[1])
    if side * side != features.shape[1]:
        raise HourLlavaInputError(f"{name} have {features.shape[1]} tokens per frame, which is not a square patch grid")
    if not bool(torch.isfinite(features).all()):
        raise HourLlavaInputError(f"{name} hold NaN or infinite values")


def check_duration(value, name: str = "duration") -> float:
    """A video duration in seconds: a finite positive number (not a bool or a string)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise HourLlavaInputError(f"{name} is {value!r}; expected a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise HourLlavaInputError(f"{name} is {value!r}; expected a finite number of seconds above 0")
    return float(value)


def check_frame_count(value, name: str = "num_frames") -> int:
    """A frame count: an integer >= 1 (not a bool, a float or a string)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise HourLlavaInputError(f"{name} is {value!r}; expected an integer frame count >= 1")
    return int(value)


__all__ = [
    "as_frame_tensor",
    "channels_first",
    "check_duration",
    "check_features",
    "check_frame_count",
    "frames_to_uint8",
    "intensities_to_uint8",
    "model_pixels",
    "normalize_frames",
    "three_channels",
]
