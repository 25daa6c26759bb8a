"""Hour-LLaVA for transformers: SigLIP -> memory repository -> forgetting -> MemAug -> Qwen2 (any decoder).

Module names follow LLaVA-OneVision (`model.vision_tower`, `model.multi_modal_projector.linear_{1,2}`,
`model.image_newline`, `model.language_model`, `lm_head`) so a LLaVA-OneVision checkpoint loads by renaming alone;
MemAug lives in `model.memaug.layers.N`.

Inputs follow the processor: every `<video>` (or `<image>`) placeholder in `input_ids` stands for one token that
the model writes, so the sequence length never changes inside the model (TRL's fused LM head relies on it). The
placeholders of a video are replaced by MemAug's outputs at the decayed visual tokens; the question tokens reach
the decoder unchanged.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput
from transformers.utils import logging

from .anyres_hour_llava import anyres_memory_and_queries, tile_grid_shape
from .configuration_hour_llava import HourLlavaConfig
from .errors_hour_llava import HourLlavaErrors, HourLlavaInputError
from .frames_hour_llava import check_features, check_frame_count, model_pixels
from .memaug_hour_llava import HourLlavaMemAug
from .memory_hour_llava import (
    assemble_memaug_queries,
    decayed_video_tokens,
    image_memory_and_queries,
    input_generator,
    memory_repository,
    num_image_tokens,
    pool_frame_features,
    resample_frame_indices,
)

logger = logging.get_logger(__name__)

VIDEO_MEMORY_FORMAT = "hour_llava_video_memory/1"
PIXEL_FRAME_DIMS = len(("channels", "height", "width"))
FEATURE_FRAME_DIMS = len(("patches", "channels"))
# Every Auto class a checkpoint answers to; `save_pretrained` writes them all into config.json.
AUTO_MAP = {
    "AutoConfig": "configuration_hour_llava.HourLlavaConfig",
    "AutoModel": "modeling_hour_llava.HourLlavaModel",
    "AutoModelForCausalLM": "modeling_hour_llava.HourLlavaForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_hour_llava.HourLlavaForConditionalGeneration",
}
# Inputs that only the prefill step may see; generation drops them afterwards.
PREFILL_ONLY_INPUTS = (
    "pixel_values",
    "pixel_values_videos",
    "video_features",
    "video_is_features",
    "video_num_frames",
    "video_memory",
    "memaug_query_mask",
    "image_sizes",
    "image_num_tiles",
)


@dataclass
class HourLlavaVideoMemory:
    """Encoded videos, ready for any number of questions without re-running the vision tower or the projector.

    frame_tokens: one (T_i, G*G, D) tensor per video: pooled, projected frame tokens at the video's own frame
    count (the resampling to `memory_min_frames`, the newlines and the forgetting happen per question).
    vision_summaries: one (T_i, C_v) tensor per video, the per-frame mean of the pooled vision features before the
    projector, when the model's keyframe selection compares those (`temporal_selection_features="vision"`); else None.
    """

    frame_tokens: list[torch.Tensor]
    vision_summaries: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.vision_summaries is not None and len(self.vision_summaries) != len(self.frame_tokens):
            raise HourLlavaInputError(
                f"{len(self.vision_summaries)} vision summaries for {len(self.frame_tokens)} videos; give one per video"
            )

    def __len__(self) -> int:
        return len(self.frame_tokens)

    def __getitem__(self, index: int | slice | list[int]) -> HourLlavaVideoMemory:
        if isinstance(index, int):
            index = [index]
        elif isinstance(index, slice):
            index = list(range(len(self)))[index]
        summaries = self.vision_summaries
        return HourLlavaVideoMemory(
            [self.frame_tokens[i] for i in index], None if summaries is None else [summaries[i] for i in index]
        )

    def __add__(self, other: HourLlavaVideoMemory) -> HourLlavaVideoMemory:
        if (self.vision_summaries is None) != (other.vision_summaries is None):
            raise HourLlavaInputError("cannot join video memories with and without vision summaries")
        summaries = None if self.vision_summaries is None else self.vision_summaries + other.vision_summaries
        return HourLlavaVideoMemory(self.frame_tokens + other.frame_tokens, summaries)

    @property
    def num_frames(self) -> list[int]:
        return [tokens.shape[0] for tokens in self.frame_tokens]

    def to(self, *args, **kwargs) -> HourLlavaVideoMemory:
        summaries = self.vision_summaries
        return HourLlavaVideoMemory(
            [tokens.to(*args, **kwargs) for tokens in self.frame_tokens],
            None if summaries is None else [summary.to(*args, **kwargs) for summary in summaries],
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write one safetensors file atomically (temporary file, then rename)."""
        path = os.fspath(path)
        tensors = {f"video.{i}": tokens.detach().contiguous().cpu() for i, tokens in enumerate(self.frame_tokens)}
        for i, summary in enumerate(self.vision_summaries or []):
            tensors[f"summary.{i}"] = summary.detach().contiguous().cpu()
        metadata = {"format": VIDEO_MEMORY_FORMAT, "num_videos": str(len(self))}
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".safetensors")
        os.close(handle)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> HourLlavaVideoMemory:
        """Read a file written by `save`; a file of another kind or a truncated file is refused by name."""
        from safetensors import safe_open

        path = os.fspath(path)
        try:
            with safe_open(path, framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as error:  # safetensors raises several types for damaged files
            raise HourLlavaInputError(f"{path}: not a readable safetensors file ({error})") from error
        if metadata.get("format") != VIDEO_MEMORY_FORMAT:
            raise HourLlavaInputError(
                f"{path}: not an Hour-LLaVA video memory (format {metadata.get('format')!r}, "
                f"expected {VIDEO_MEMORY_FORMAT!r}); write it with HourLlavaVideoMemory.save"
            )
        tensors = load_file(path, device=str(device))
        count = metadata.get("num_videos", "")
        if not count.isdigit() or int(count) < 1:
            raise HourLlavaInputError(f"{path}: video memory metadata num_videos={count!r}; expected a count >= 1")
        count = int(count)
        summaries = [f"summary.{i}" for i in range(count)] if "summary.0" in tensors else []
        missing = [name for name in [f"video.{i}" for i in range(count)] + summaries if name not in tensors]
        if missing:
            raise HourLlavaInputError(f"{path}: video memory of {count} videos lacks tensors {missing}")
        frames = [tensors[f"video.{i}"] for i in range(count)]
        for index, tokens in enumerate(frames):
            if (
                tokens.dim() != FEATURE_FRAME_DIMS + 1
                or not tokens.is_floating_point()
                or not bool(torch.isfinite(tokens).all())
            ):
                raise HourLlavaInputError(
                    f"{path}: video {index} is {tokens.dtype} {tuple(tokens.shape)}; expected finite (T, P, D) tokens"
                )
        return cls(frames, [tensors[name] for name in summaries] or None)


@dataclass
class HourLlavaModelOutputWithPast(BaseModelOutputWithPast):
    """`last_hidden_state` is aligned with `input_ids` (and labels). `video_hidden_states` / `image_hidden_states`
    are what replaced the placeholders: (num_placeholders, D)."""

    image_hidden_states: torch.Tensor | None = None
    video_hidden_states: torch.Tensor | None = None
    memory_attentions: tuple[tuple[torch.Tensor, ...] | None, ...] | None = None


@dataclass
class HourLlavaCausalLMOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    image_hidden_states: torch.Tensor | None = None
    video_hidden_states: torch.Tensor | None = None
    memory_attentions: tuple[tuple[torch.Tensor, ...] | None, ...] | None = None


def memory_attention_per_frame(mass: torch.Tensor, memory_frames: int, resample: torch.Tensor | None, num_frames: int):
    """A MemAug block's attention mass per memory token of one video, (H, T_m * (G*G + 1)), summed per frame of the
    video: (H, num_frames). Memory frame f holds tokens f*(G*G+1) .. (f+1)*(G*G+1)-1 (its newline included); a
    video shorter than `memory_min_frames` was resampled (`resample`: the video frame of each memory frame), and
    the mass of repeated frames is added back onto the video frame they repeat."""
    per_frame = mass.reshape(mass.shape[0], memory_frames, -1).sum(-1)
    if resample is None:
        return per_frame
    return per_frame.new_zeros(mass.shape[0], num_frames).index_add_(1, resample.to(per_frame.device), per_frame)


class HourLlavaPreTrainedModel(HourLlavaErrors, PreTrainedModel):
    config: HourLlavaConfig
    config_class = HourLlavaConfig
    base_model_prefix = "model"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _no_split_modules = ["HourLlavaMemAugLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def save_pretrained(self, *args, **kwargs):
        """As `PreTrainedModel.save_pretrained`, with every Auto class in `auto_map` and the remote-code files."""
        self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(*args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HourLlavaModel):
            init.normal_(module.image_newline, mean=0.0, std=1 / math.sqrt(self.config.text_config.hidden_size))


class HourLlavaMultiModalProjector(nn.Module):
    """Linear(vision width -> D), GELU, Linear(D -> D): the reference's `mlp2x_gelu`."""

    def __init__(self, config: HourLlavaConfig):
        super().__init__()
        width = config.text_config.hidden_size
        bias = config.multimodal_projector_bias
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, width, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(width, width, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


def split_by_counts(tensor: torch.Tensor, counts: list[int], what: str) -> list[torch.Tensor]:
    if sum(counts) != tensor.shape[0]:
        raise HourLlavaInputError(f"{what}: counts add up to {sum(counts)} but the tensor has {tensor.shape[0]} rows")
    return list(tensor.split(counts))


def flatten_videos(
    videos: torch.Tensor, num_frames: torch.Tensor | list[int] | None, frame_dims: int, name: str
) -> list[torch.Tensor]:
    """Split a batch of videos into one tensor per video.

    videos: (V, T, *frame) with every video T frames long, or (sum T, *frame) with `num_frames` (V,) giving each T.
    frame_dims: dims of one frame (3 for pixels C, H, W; 2 for features P, C).
    """
    batched = videos.dim() == frame_dims + 2
    if not batched and videos.dim() != frame_dims + 1:
        raise HourLlavaInputError(f"{name} has shape {tuple(videos.shape)}; expected (V, T, *frame) or (sum T, *frame)")
    if num_frames is None:
        if not batched:
            raise HourLlavaInputError(f"{name} of shape {tuple(videos.shape)} needs `video_num_frames`")
        return list(videos.unbind(0))
    values = num_frames.tolist() if torch.is_tensor(num_frames) else list(num_frames)
    if any(n == 0 for n in values):
        raise HourLlavaInputError(
            f"video_num_frames={values}: a video has zero frames; drop it or give it at least one frame"
        )
    counts = [check_frame_count(n, f"video_num_frames[{i}]") for i, n in enumerate(values)]
    if batched:
        return [video[:n] for video, n in zip(videos, counts, strict=True)]
    return split_by_counts(videos, counts, f"{name} with video_num_frames={counts}")


def videos_in_order(
    pixel_values_videos: torch.Tensor | None,
    video_features: torch.Tensor | None,
    video_num_frames: torch.Tensor | list[int] | None,
    video_is_features: torch.Tensor | list[bool] | None,
) -> list[tuple[torch.Tensor, bool]]:
    """Every video of a call as (frames or features, is_features), in video order.

    Decoded videos come in `pixel_values_videos`, feature-file videos in `video_features`; `video_is_features` (V,)
    says for each video, in order, which of the two holds it (the video processor writes it), and `video_num_frames`
    (V,) gives every video's length in the same order. Without the marker, one of the two tensors alone is given.
    """
    sources = {False: pixel_values_videos, True: video_features}
    names = {False: ("pixel_values_videos", PIXEL_FRAME_DIMS), True: ("video_features", FEATURE_FRAME_DIMS)}
    if video_is_features is None:
        if pixel_values_videos is not None and video_features is not None:
            raise HourLlavaInputError(
                "pass one of pixel_values_videos, video_features or video_memory, or pixel_values_videos and "
                "video_features together with video_is_features (V,), which says in video order which videos are "
                "feature files (HourLlavaVideoProcessor writes it)"
            )
        kind = video_features is not None
        name, dims = names[kind]
        return [(video, kind) for video in flatten_videos(sources[kind], video_num_frames, dims, name)]
    marker = [bool(flag) for flag in video_is_features]
    counts = None if video_num_frames is None else [int(n) for n in video_num_frames]
    if counts is None or len(counts) != len(marker):
        raise HourLlavaInputError(
            f"video_is_features marks {len(marker)} videos; video_num_frames must give each one's frame count"
        )
    videos = {}
    for kind, (name, dims) in names.items():
        kind_counts = [n for n, flag in zip(counts, marker, strict=True) if flag == kind]
        if (sources[kind] is None) != (not kind_counts):
            raise HourLlavaInputError(
                f"video_is_features marks {len(kind_counts)} video(s) as {name}, but {name} is "
                f"{'missing' if sources[kind] is None else 'given'}"
            )
        videos[kind] = iter(flatten_videos(sources[kind], kind_counts, dims, name) if kind_counts else [])
    return [(next(videos[flag]), flag) for flag in marker]


class HourLlavaModel(HourLlavaPreTrainedModel):
    """Vision tower, projector, newline, MemAug and decoder; returns the decoder's hidden states."""

    def __init__(self, config: HourLlavaConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = HourLlavaMultiModalProjector(config)
        std = 1 / math.sqrt(config.text_config.hidden_size)
        self.image_newline = nn.Parameter(torch.randn(config.text_config.hidden_size) * std)
        self.memaug = HourLlavaMemAug(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    # -------------------------------------------------------------------------------------------------------------
    # Vision side
    # -------------------------------------------------------------------------------------------------------------
    def vision_features(self, pixel_values: torch.Tensor, name: str = "pixel_values") -> torch.Tensor:
        """SigLIP patch features of frames or images: (N, 3, H, W) -> (N, P, C_v), `vision_chunk_size` at a time.

        uint8 frames are normalised here, one chunk at a time, so an hour of frames never exists in float; every
        chunk is checked first (`frames_hour_llava.model_pixels`: dtype, value range, layout, size; `name` is the
        input the errors name).

        Runs the embeddings and only the encoder layers up to `vision_feature_layer` (-1: all of them), and reads
        that layer's output before `post_layernorm`, as the reference's 26-layer tower does.
        """
        tower = self.vision_tower
        layers = tower.encoder.layers
        depth = self.config.vision_feature_layer % (len(layers) + 1)
        dtype = tower.embeddings.patch_embedding.weight.dtype
        chunks = []
        for chunk in pixel_values.split(self.config.vision_chunk_size):
            hidden = tower.embeddings(model_pixels(chunk, self.config, name).to(dtype))
            for layer in layers[:depth]:
                hidden = layer(hidden, None)
            chunks.append(hidden)
        return torch.cat(chunks)

    def pool_frames(self, features: torch.Tensor) -> torch.Tensor:
        """Pool each frame's patch grid to G x G: (F, P, C_v) -> (F, G*G, C_v), in the projector's dtype."""
        dtype = self.multi_modal_projector.linear_1.weight.dtype
        return pool_frame_features(features.to(dtype), self.config.memory_pool_size, self.config.memory_pool_mode)

    def project_frames(self, features: torch.Tensor) -> torch.Tensor:
        """Pool each frame's patch grid to G x G, then project: (F, P, C_v) -> (F, G*G, D)."""
        return self.multi_modal_projector(self.pool_frames(features))

    def encode_video(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_num_frames: torch.Tensor | list[int] | None = None,
        video_streams: Sequence | None = None,
        video_is_features: torch.Tensor | list[bool] | None = None,
    ) -> HourLlavaVideoMemory:
        """Encode videos once into a reusable [`HourLlavaVideoMemory`].

        pixel_values_videos: frames, (sum T, 3, H, W) with `video_num_frames`, or (B, T, 3, H, W).
        video_features: pre-extracted SigLIP features instead of frames, (sum T, P, C_v) or (B, T, P, C_v); P is the
            tower's patch grid (729) or the pooled grid (64). The tower is skipped.
        video_is_features: (V,) bool, needed when one call holds both kinds (a batch of cached features and decoded
            videos): for every video in order, whether it is in `video_features` (else in `pixel_values_videos`);
            `video_num_frames` then gives all V lengths in the same order (see `videos_in_order`).
        video_streams: instead of frames, one frame stream per video (`HourLlavaVideoProcessor.open_stream`): sized
            iterables of frame chunks (t, 3, H, W), decoded while the tower runs, so an hour of video never sits in
            memory as pixels.
        Frames go through tower, pooling and projector `vision_chunk_size` at a time, so peak memory stays at one
        chunk of full-resolution activations plus the pooled tokens.
        """
        given = pixel_values_videos is not None or video_features is not None
        if given == (video_streams is not None):
            raise HourLlavaInputError(
                "encode_video takes video_streams, or pixel_values_videos and/or video_features (with "
                "video_is_features when both)"
            )
        if video_streams is not None:
            videos = [(len(stream), stream, False) for stream in video_streams]
        else:
            ordered = videos_in_order(pixel_values_videos, video_features, video_num_frames, video_is_features)
            width = self.config.vision_config.hidden_size
            for index, (video, is_features) in enumerate(ordered):
                if is_features:
                    check_features(video, width, f"video_features of video {index}")
            videos = [(video.shape[0], [video], is_features) for video, is_features in ordered]
        encoded = [self._encode_frames(count, chunks, not is_features) for count, chunks, is_features in videos]
        summaries = [summary for _, summary in encoded] if self.config.temporal_selection_features == "vision" else None
        return HourLlavaVideoMemory([tokens for tokens, _ in encoded], summaries)

    def _encode_frames(self, num_frames: int, chunks, are_pixels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Memory tokens (T, P', D) of one video given as chunks of frames (t, 3, H, W) or of features (t, P, C_v),
        filled `vision_chunk_size` frames at a time: no list of chunks and no concatenated copy; and, when keyframe
        selection reads the frozen vision features, their per-frame means before the projector (T, C_v)."""
        if num_frames == 0:
            raise HourLlavaInputError("a video has zero frames; drop it or give it at least one frame")
        want_summaries = self.config.temporal_selection_features == "vision"
        tokens = summaries = None
        start = 0
        for chunk in chunks:
            for part in chunk.split(self.config.vision_chunk_size):
                part = part.to(self.device)  # stream chunks arrive on the CPU
                pixels = self.vision_features(part, "pixel_values_videos") if are_pixels else part
                pooled = self.pool_frames(pixels)
                projected = self.multi_modal_projector(pooled)
                if tokens is None:
                    tokens = projected.new_empty((num_frames, *projected.shape[1:]))
                    summaries = pooled.new_empty((num_frames, pooled.shape[-1])) if want_summaries else None
                if start + part.shape[0] > num_frames:
                    raise HourLlavaInputError(f"a video gave more than the {num_frames} frames it announced")
                tokens[start : start + part.shape[0]] = projected
                if want_summaries:
                    summaries[start : start + part.shape[0]] = pooled.detach().mean(dim=1)
                start += part.shape[0]
        if start != num_frames:
            raise HourLlavaInputError(f"a video gave {start} frames but announced {num_frames}")
        return tokens, summaries

    def encode_images(self, pixel_values: torch.Tensor, image_num_tiles=None) -> list[torch.Tensor]:
        """Image tiles (sum tiles, 3, H, W) -> projected patch tokens per image, [(tiles_i, P, D)], no pooling.

        image_num_tiles (N,): tiles of each image (1 for a padded image; 1 + P for anyres: base, then P tiles).
        """
        tokens = self.multi_modal_projector(self.vision_features(pixel_values))
        counts = [1] * tokens.shape[0] if image_num_tiles is None else [int(n) for n in image_num_tiles]
        return split_by_counts(tokens, counts, f"pixel_values with image_num_tiles={counts}")

    def assign_images(self, input_ids: torch.Tensor, image_num_tiles: list[int]) -> list[list[int]]:
        """The images of each sample, in order. A sample whose next image has several tiles holds that one anyres
        image; otherwise its `<image>` placeholders count padded images (`num_image_tokens` each)."""
        per_image = num_image_tokens(self.config)
        counts = (input_ids == self.config.image_token_id).sum(dim=1).tolist()
        groups, cursor = [], 0
        for sample, count in enumerate(counts):
            if not count:
                groups.append([])
                continue
            if cursor >= len(image_num_tiles):
                raise HourLlavaInputError(f"sample {sample} has <image> placeholders but no image is left")
            if image_num_tiles[cursor] > 1:
                groups.append([cursor])
                cursor += 1
                continue
            if count % per_image:
                raise HourLlavaInputError(
                    f"sample {sample}: {count} <image> placeholders is not a multiple of {per_image} per image"
                )
            group = list(range(cursor, cursor + count // per_image))
            if group[-1] >= len(image_num_tiles) or any(image_num_tiles[i] != 1 for i in group):
                raise HourLlavaInputError(f"sample {sample} has <image> placeholders without matching images")
            groups.append(group)
            cursor += len(group)
        if cursor != len(image_num_tiles):
            raise HourLlavaInputError(f"{len(image_num_tiles) - cursor} image(s) left over: more images than <image>")
        return groups

    # -------------------------------------------------------------------------------------------------------------
    # MemAug over one sample
    # -------------------------------------------------------------------------------------------------------------
    def _generator(self, question_ids: torch.Tensor, num_frames: int) -> torch.Generator | None:
        """Training draws from torch's global generator (as the reference); inference from the question itself."""
        if self.training:
            return None
        return input_generator(self.config.forgetting_seed, num_frames, question_ids)

    def _spans(self, positions: torch.Tensor, sizes: list[int], sample: int, kind: str) -> list[tuple[int, int]]:
        spans, offset = [], 0
        for size in sizes:
            block = positions[offset : offset + size]
            start, end = int(block[0]), int(block[-1]) + 1
            if end - start != size:
                raise HourLlavaInputError(
                    f"sample {sample}: the {kind} placeholders of one {kind} are not contiguous; the processor writes "
                    f"each {kind} as one block of placeholder tokens"
                )
            spans.append((start, end))
            offset += size
        return spans

    def augment_sample(
        self,
        sample: int,
        input_ids: torch.Tensor,
        text_embeds: torch.Tensor,
        query_mask: torch.Tensor,
        question_ids: torch.Tensor,
        video_tokens: torch.Tensor | None,
        image_tokens: list[torch.Tensor] | None,
        image_size: tuple[int, int] | None = None,
        vision_summary: torch.Tensor | None = None,
        memory_attentions: list | None = None,
    ) -> torch.Tensor:
        """The embeddings that replace one sample's placeholders, in order: (num_placeholders, D).

        input_ids (L,), text_embeds (L, D), query_mask (L,) bool; question_ids: the ids MemAug reads (seed source,
        independent of padding, batching and of tokens generated after the prompt).
        video_tokens: (T, G*G, D) frame tokens of the sample's video; image_tokens: its images, [(tiles, P, D)]: one
        anyres image (base + tiles, of original (height, width) `image_size`) or padded single-tile images.
        vision_summary: (T, C_v) the video's per-frame vision summaries (`HourLlavaVideoMemory.vision_summaries`).
        memory_attentions: a list to which MemAug's attention mass per memory frame (video: (H, T) per block) or per
            memory token (images: (H, M) per block) is appended, one tuple of blocks (None without MemAug).
        """
        newline = self.image_newline
        resample = None
        if video_tokens is not None:
            frames = video_tokens
            if video_tokens.shape[0] < self.config.memory_min_frames:
                resample = resample_frame_indices(video_tokens.shape[0], self.config.memory_min_frames)
                frames = video_tokens[resample]
                vision_summary = vision_summary[resample] if vision_summary is not None else None
            generator = self._generator(question_ids, frames.shape[0])
            question = text_embeds[query_mask]
            memory = memory_repository(frames, newline)
            visual = [decayed_video_tokens(frames, newline, self.config, generator, question, vision_summary)]
            positions = (input_ids == self.config.video_token_id).nonzero().squeeze(1)
            if len(visual[0]) != positions.numel():
                raise HourLlavaInputError(
                    f"sample {sample}: {positions.numel()} <video> placeholders, but its video of "
                    f"{video_tokens.shape[0]} frames gives {len(visual[0])} decayed tokens; build the prompt with "
                    "HourLlavaProcessor (or num_video_tokens) for this model's config"
                )
            spans = self._spans(positions, [len(visual[0])], sample, "video")
        else:
            generator = self._generator(question_ids, len(image_tokens))
            positions = (input_ids == self.config.image_token_id).nonzero().squeeze(1)
            if image_tokens[0].shape[0] > 1:
                memory, query = self._anyres(image_tokens[0], image_size, sample, generator)
                visual = [query]
            else:
                memory, visual = image_memory_and_queries(torch.cat(image_tokens), newline, self.config, generator)
            if sum(len(v) for v in visual) != positions.numel():
                raise HourLlavaInputError(
                    f"sample {sample}: {positions.numel()} <image> placeholders, but its images give "
                    f"{sum(len(v) for v in visual)} tokens; build the prompt with HourLlavaProcessor"
                )
            spans = self._spans(positions, [len(v) for v in visual], sample, "image")

        if not self.config.use_memaug:
            if memory_attentions is not None:
                memory_attentions.append(None)
            return torch.cat([v.embeds for v in visual])
        queries, visual_index = assemble_memaug_queries(text_embeds, query_mask, spans, visual)
        augmented = self.memaug(
            queries.embeds.unsqueeze(0),
            queries.positions,
            memory.embeds.unsqueeze(0),
            memory.positions,
            output_memory_attentions=memory_attentions is not None,
        )
        if memory_attentions is not None:
            augmented, masses = augmented
            masses = tuple(mass[0] for mass in masses)  # (H, M) per block
            if video_tokens is not None:
                count = video_tokens.shape[0]
                masses = tuple(memory_attention_per_frame(m, frames.shape[0], resample, count) for m in masses)
            memory_attentions.append(masses)
        return augmented[0, visual_index]

    def _anyres(self, tiles: torch.Tensor, image_size, sample: int, generator):
        """Memory and decayed tokens of one anyres image (reference Sec. 1.6.2)."""
        if image_size is None:
            raise HourLlavaInputError(f"sample {sample}: a tiled (anyres) image needs `image_sizes`")
        image_size = tuple(int(x) for x in image_size)
        tile = self.config.vision_config.image_size
        rows, cols = tile_grid_shape(image_size, self.config.image_grid_pinpoints, tile)
        if rows * cols != tiles.shape[0] - 1:
            raise HourLlavaInputError(
                f"sample {sample}: an image of {image_size} takes {rows}x{cols} tiles, but {tiles.shape[0] - 1} came"
            )
        max_patches = self.config.anyres_max_tiles * self.config.vision_grid_size**2
        return anyres_memory_and_queries(
            tiles,
            self.image_newline,
            image_size,
            rows,
            cols,
            self.config.spatial_keep_ratio,
            self.config.spatial_forgetting_mode,
            max_patches,
            generator,
        )

    def augment_media(
        self,
        input_ids: torch.Tensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        memaug_query_mask: torch.Tensor | None,
        video_memory: HourLlavaVideoMemory | None,
        image_tokens: list[torch.Tensor] | None,
        image_sizes: torch.Tensor | None = None,
        memory_attentions: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Replace every placeholder of the batch; returns (inputs_embeds, image outputs, video outputs).
        memory_attentions: a list of one None per sample, where each sample with media gets MemAug's attention mass
        (`augment_sample`)."""
        video_mask = input_ids == self.config.video_token_id
        image_mask = input_ids == self.config.image_token_id
        valid = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        if memaug_query_mask is None:
            logger.warning_once(
                "No memaug_query_mask given: every prompt token joins the MemAug query (the reference's literal "
                "inference). HourLlavaProcessor builds the mask the checkpoints were trained with."
            )
            query_mask = valid & ~video_mask & ~image_mask
        else:
            query_mask = memaug_query_mask.bool() & ~video_mask & ~image_mask
        videos = list(video_memory.frame_tokens) if video_memory is not None else []
        summaries = list(video_memory.vision_summaries or []) if video_memory is not None else []
        tiles = [t.shape[0] for t in image_tokens] if image_tokens is not None else []
        image_groups = self.assign_images(input_ids, tiles)
        video_outputs, image_outputs, replacements = [], [], []
        for sample in range(input_ids.shape[0]):
            has_video, has_image = bool(video_mask[sample].any()), bool(image_mask[sample].any())
            if has_video and has_image:
                raise HourLlavaInputError(f"sample {sample} has both <video> and <image> placeholders; use one")
            if not (has_video or has_image):
                continue
            ids = input_ids[sample]
            video_tokens = vision_summary = images = size = None
            if has_video:
                if not videos:
                    raise HourLlavaInputError(
                        f"sample {sample} has <video> placeholders but no video is left in the inputs"
                    )
                video_tokens = videos.pop(0).to(inputs_embeds.device, inputs_embeds.dtype)
                vision_summary = summaries.pop(0) if summaries else None
            else:
                group = image_groups[sample]
                images = [image_tokens[i].to(inputs_embeds.dtype) for i in group]
                size = image_sizes[group[0]].tolist() if image_sizes is not None else None
            outputs = self.augment_sample(
                sample,
                ids,
                inputs_embeds[sample],
                query_mask[sample],
                ids[query_mask[sample]],
                video_tokens,
                images,
                size,
                vision_summary,
                recorded := ([] if memory_attentions is not None else None),
            )
            if recorded:
                memory_attentions[sample] = recorded[0]
            (video_outputs if has_video else image_outputs).append(outputs)
            replacements.append(outputs)
        if videos:
            raise HourLlavaInputError(f"{len(videos)} video(s) left over: more videos than samples with <video>")
        media_mask = video_mask | image_mask
        replacement = torch.cat(replacements).to(inputs_embeds.dtype)
        inputs_embeds = inputs_embeds.masked_scatter(media_mask.unsqueeze(-1), replacement)
        return (
            inputs_embeds,
            torch.cat(image_outputs) if image_outputs else None,
            torch.cat(video_outputs) if video_outputs else None,
        )

    def _refuse_placeholders_without_media(self, input_ids: torch.Tensor) -> None:
        """A prompt with `<video>` / `<image>` placeholders but no media: a collator dropped the videos (TRL's default
        one keeps only text), and the placeholders would be read, and trained on, as ordinary text."""
        for kind, token_id in (("video", self.config.video_token_id), ("image", self.config.image_token_id)):
            count = int((input_ids == token_id).sum())
            if count:
                raise HourLlavaInputError(
                    f"input_ids hold {count} <{kind}> placeholder(s) but no {kind} came with them (pixel_values, "
                    "pixel_values_videos, video_features or video_memory): the collator dropped the media and the "
                    "placeholders would be trained on as text. Build batches with the processor, e.g. "
                    "data_collator=hour_llava_training.HourLlavaDataCollator(processor) for TRL's SFTTrainer"
                )

    def _weights_sharded(self) -> bool:
        """Whether FSDP2 (`fully_shard` modules) or DeepSpeed ZeRO-3 (`ds_id` parameters) shards the weights: each
        process then gathers a layer's weights together with the others, so every process must run the same layers
        in every forward, whatever kinds of samples its own batch holds."""
        try:
            from torch.distributed.fsdp import FSDPModule
        except ImportError:  # a torch without FSDP2
            FSDPModule = ()  # noqa: N806
        return any(isinstance(module, FSDPModule) for module in self.modules()) or hasattr(self.image_newline, "ds_id")

    def _run_tower_on_nothing(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """A batch without frames (cached features, text) under sharded weights: one blank frame through the vision
        tower, added times 0, so this process joins the tower's weight gathers (and, when the tower trains, its
        gradient reduction) with the processes whose batches decode videos."""
        vision = self.config.vision_config
        blank = torch.zeros(
            1, vision.num_channels, vision.image_size, vision.image_size, dtype=torch.uint8, device=inputs_embeds.device
        )
        return inputs_embeds + 0.0 * self.vision_features(blank).sum().to(inputs_embeds.dtype)

    def _keep_multimodal_parameters_in_graph(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """A text-only training batch adds 0 x (projector, newline, MemAug on one token), so DDP and ZeRO see those
        parameters used, at the cost of one token instead of a dummy image through the tower."""
        width = self.config.vision_config.hidden_size
        token = self.multi_modal_projector(inputs_embeds.new_zeros(1, 1, width)) + self.image_newline
        position = torch.zeros(1, dtype=torch.long, device=inputs_embeds.device)
        dummy = self.memaug(token, position, token, position) if self.config.use_memaug else token
        return inputs_embeds + 0.0 * dummy.sum()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_num_frames: torch.Tensor | None = None,
        video_memory: HourLlavaVideoMemory | None = None,
        video_is_features: torch.Tensor | None = None,
        memaug_query_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_num_tiles: torch.Tensor | None = None,
        output_memory_attentions: bool = False,
        **kwargs,
    ) -> HourLlavaModelOutputWithPast:
        r"""
        input_ids (B, L): text with one placeholder per visual token the model writes.
        pixel_values (sum tiles, 3, H, W): image tiles in placeholder order, with image_num_tiles (N,) (1 per padded
            image, 1 + P for an anyres image) and image_sizes (N, 2) original (height, width), needed by anyres.
        pixel_values_videos (sum T, 3, H, W) with video_num_frames (V,), or (V, T, 3, H, W): video frames.
        video_features: pre-extracted SigLIP features instead of frames, (sum T, P, C_v) or (V, T, P, C_v).
        video_is_features (V,) bool: with both of the above in one batch, which videos (in order) are features.
        video_memory: a [`HourLlavaVideoMemory`] from `encode_video`; skips tower and projector.
        memaug_query_mask (B, L): 1 for the text tokens that join MemAug's query (the processor builds it for the
            `training` or `all` policy); without it every unpadded token joins.
        labels: accepted and ignored (the loss lives in the LM head; TRL calls this module with the collator's keys).
        output_memory_attentions: also return `memory_attentions`, where MemAug's cross-attention looked: one entry
            per sample, None for a sample without video or image (or a model without MemAug), else one tensor per
            MemAug block: for a video (H, T), the attention mass on each of its T frames (the frame's tokens and
            newline), averaged over the MemAug queries (question and decayed tokens), each head's row summing to 1;
            for images (H, M), the mass per memory token. Computed without the (queries x memory) score matrix, in
            memory linear in the video's length (`memaug_hour_llava.memory_attention_mass`); fp32, detached.
        Returns `last_hidden_state` (B, L, D), aligned with `input_ids`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        raw_video = pixel_values_videos is not None or video_features is not None
        if raw_video and video_memory is not None:
            raise HourLlavaInputError("pass video_memory or pixel_values_videos / video_features, not both")
        image_hidden = video_hidden = None
        memory_attentions = [None] * inputs_embeds.shape[0] if output_memory_attentions else None
        if raw_video or video_memory is not None or pixel_values is not None:
            if input_ids is None:
                raise HourLlavaInputError("images and videos need input_ids, whose placeholders say where they go")
            if raw_video:
                video_memory = self.encode_video(
                    pixel_values_videos, video_features, video_num_frames, video_is_features=video_is_features
                )
            image_tokens = self.encode_images(pixel_values, image_num_tiles) if pixel_values is not None else None
            inputs_embeds, image_hidden, video_hidden = self.augment_media(
                input_ids,
                inputs_embeds,
                attention_mask,
                memaug_query_mask,
                video_memory,
                image_tokens,
                image_sizes,
                memory_attentions,
            )
        else:
            if input_ids is not None and (past_key_values is None or past_key_values.get_seq_length() == 0):
                self._refuse_placeholders_without_media(input_ids)
            if past_key_values is None and (self.training and torch.is_grad_enabled() or self._weights_sharded()):
                inputs_embeds = self._keep_multimodal_parameters_in_graph(inputs_embeds)
        if pixel_values is None and pixel_values_videos is None and past_key_values is None and self._weights_sharded():
            inputs_embeds = self._run_tower_on_nothing(inputs_embeds)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return HourLlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_hidden,
            video_hidden_states=video_hidden,
            memory_attentions=tuple(memory_attentions) if memory_attentions is not None else None,
        )


class HourLlavaForConditionalGeneration(HourLlavaPreTrainedModel, GenerationMixin):
    """Hour-LLaVA with its LM head: `forward` (with a loss when `labels` are given) and `generate`."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: HourLlavaConfig):
        super().__init__(config)
        self.model = HourLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def encode_video(self, *args, **kwargs) -> HourLlavaVideoMemory:
        """See [`HourLlavaModel.encode_video`]; the result goes to `forward` / `generate` as `video_memory`."""
        return self.model.encode_video(*args, **kwargs)

    def load_video_memory(self, path: str | os.PathLike) -> HourLlavaVideoMemory:
        """Read a memory written by `HourLlavaVideoMemory.save`, onto this model's device and dtype."""
        return HourLlavaVideoMemory.load(path).to(self.device, self.dtype)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_num_frames: torch.Tensor | None = None,
        video_memory: HourLlavaVideoMemory | None = None,
        video_is_features: torch.Tensor | None = None,
        memaug_query_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        image_num_tiles: torch.Tensor | None = None,
        output_memory_attentions: bool = False,
        **kwargs,
    ) -> HourLlavaCausalLMOutputWithPast:
        """Inputs as in [`HourLlavaModel.forward`]; `labels` (B, L) give the shifted cross-entropy (-100 skipped).
        `output_memory_attentions`: also `memory_attentions`, where MemAug looked (see [`HourLlavaModel.forward`])."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            video_features=video_features,
            video_num_frames=video_num_frames,
            video_memory=video_memory,
            video_is_features=video_is_features,
            memaug_query_mask=memaug_query_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            image_sizes=image_sizes,
            image_num_tiles=image_num_tiles,
            output_memory_attentions=output_memory_attentions,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return HourLlavaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            video_hidden_states=outputs.video_hidden_states,
            memory_attentions=outputs.memory_attentions,
        )

    def generate(self, *args, output_memory_attentions: bool = False, **kwargs):
        """`GenerationMixin.generate`; with `output_memory_attentions=True` (and `return_dict_in_generate=True`) its
        output also has `memory_attentions`, where MemAug looked while reading the prompt (the prefill: MemAug reads
        the video once, generated tokens never join its query), as in [`HourLlavaModel.forward`]: one entry per
        returned sequence's sample (beam search and `num_return_sequences` repeat them)."""
        if not output_memory_attentions:
            return super().generate(*args, **kwargs)
        if not kwargs.get("return_dict_in_generate"):
            raise ValueError("generate(output_memory_attentions=True) needs return_dict_in_generate=True")
        recorded = []

        def record(_module, _inputs, outputs) -> None:
            if outputs.memory_attentions is not None and any(a is not None for a in outputs.memory_attentions):
                recorded.append(outputs.memory_attentions)

        handle = self.register_forward_hook(record)
        try:
            output = super().generate(*args, output_memory_attentions=True, **kwargs)
        finally:
            handle.remove()
        output["memory_attentions"] = recorded[0] if recorded else None
        return output

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        """As GenerationMixin, but our visual inputs and the query mask are prefill-only with a KV cache. Without a
        cache every step re-reads the video, and the query mask (prompt-sized) is padded with zeros: generated
        tokens never join the query."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration:
            return model_inputs
        if kwargs.get("use_cache", True):
            for name in PREFILL_ONLY_INPUTS:
                model_inputs.pop(name, None)
        elif (mask := model_inputs.get("memaug_query_mask")) is not None:
            grown = model_inputs["input_ids"].shape[1] - mask.shape[1]
            model_inputs["memaug_query_mask"] = nn.functional.pad(mask, (0, grown))
        return model_inputs

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **model_kwargs,
    ):
        """Beam search and `num_return_sequences` repeat every sample; repeat its video (encoded once, shared, not
        copied) and its images with it."""
        if expand_size == 1 or input_ids is None:
            return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        raw = {name: model_kwargs.pop(name, None) for name in ("pixel_values_videos", "video_features")}
        num_frames = model_kwargs.pop("video_num_frames", None)
        is_features = model_kwargs.pop("video_is_features", None)
        memory = model_kwargs.pop("video_memory", None)
        if memory is None and any(v is not None for v in raw.values()):
            memory = self.encode_video(
                raw["pixel_values_videos"], raw["video_features"], num_frames, video_is_features=is_features
            )
        if memory is not None:
            model_kwargs["video_memory"] = memory[[i for i in range(len(memory)) for _ in range(expand_size)]]
        images = model_kwargs.pop("pixel_values", None)
        tiles = model_kwargs.pop("image_num_tiles", None)
        sizes = model_kwargs.pop("image_sizes", None)
        expanded_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        if images is not None:  # images belong to samples by placeholders, not one row per sample
            counts = [1] * images.shape[0] if tiles is None else [int(n) for n in tiles]
            first_tile = torch.cumsum(torch.tensor([0] + counts), 0).tolist()
            order = [
                i for group in self.model.assign_images(input_ids, counts) for _ in range(expand_size) for i in group
            ]
            rows = [t for i in order for t in range(first_tile[i], first_tile[i + 1])]
            model_kwargs["pixel_values"] = images[torch.tensor(rows, dtype=torch.long, device=images.device)]
            model_kwargs["image_num_tiles"] = torch.tensor([counts[i] for i in order])
            if sizes is not None:
                model_kwargs["image_sizes"] = sizes[torch.tensor(order, dtype=torch.long, device=sizes.device)]
        return expanded_ids, model_kwargs


__all__ = [
    "AUTO_MAP",
    "HourLlavaForConditionalGeneration",
    "HourLlavaInputError",
    "HourLlavaModel",
    "HourLlavaPreTrainedModel",
    "HourLlavaVideoMemory",
]
