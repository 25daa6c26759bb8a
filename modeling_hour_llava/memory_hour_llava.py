"""Memory repository and forgetting mechanism of Hour-LLaVA (paper Sec. 4.1).

Pure tensor functions with no parameters, so the processor (which must predict how many tokens the model
writes) and the model share one implementation. Shapes use:

    T  frames after resampling to `memory_min_frames`     G  pooled grid side (8)      D  decoder width
    k  tokens kept per frame by spatial forgetting (16)    K  frames kept by temporal forgetting (32..512)

A video's memory repository holds `T * (G*G + 1)` tokens (each frame's G*G tokens, then a newline) with
position ids `f * (G*G + 1) + j`. Its decayed tokens are `K * (k + 1)` tokens (k kept tokens, then the newline
of the frame) that keep their memory-space positions.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .configuration_hour_llava import HourLlavaConfig


@dataclass
class TokensWithPositions:
    """A token sequence and its RoPE position ids: `embeds` (N, D), `positions` (N,) int64."""

    embeds: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return self.embeds.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# Counting (shared with the processor)
# ----------------------------------------------------------------------------------------------------------------
def uniform_stride(keep_ratio: float) -> int:
    """Row and column stride of uniform spatial forgetting: keeping 1/4 of a grid keeps every 2nd row and column."""
    return max(1, round(1.0 / math.sqrt(keep_ratio)))


def spatial_keep_count(grid_size: int, keep_ratio: float, mode: str) -> int:
    """Tokens a frame (or image) of `grid_size x grid_size` keeps: ceil(G*G*ratio) random, or a strided sub-grid."""
    if mode == "uniform":
        return math.ceil(grid_size / uniform_stride(keep_ratio)) ** 2
    return math.ceil(grid_size * grid_size * keep_ratio)


def memory_frame_count(num_frames: int, config: HourLlavaConfig) -> int:
    """Frames in the memory repository: short videos are resampled up to `memory_min_frames`."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    return max(num_frames, config.memory_min_frames)


def temporal_keep_count(num_frames: int, config: HourLlavaConfig) -> int:
    """Frames kept by temporal forgetting: `T * ratio` clamped to [temporal_min_frames, temporal_max_frames] and T."""
    kept = math.floor(num_frames * config.temporal_keep_ratio)
    kept = min(config.temporal_max_frames, max(config.temporal_min_frames, kept))
    return min(kept, num_frames)


def video_token_budget(num_frames: int, config: HourLlavaConfig) -> tuple[int, int]:
    """(memory tokens, decoder tokens) of a video of `num_frames` sampled frames.

    For the paper's defaults: 60 frames -> (8320, 544); 3600 frames -> (234000, 8704).
    """
    frames = memory_frame_count(num_frames, config)
    per_frame = config.memory_pool_size**2
    kept_tokens = spatial_keep_count(config.memory_pool_size, config.spatial_keep_ratio, config.spatial_forgetting_mode)
    return frames * (per_frame + 1), temporal_keep_count(frames, config) * (kept_tokens + 1)


def num_video_tokens(num_frames: int, config: HourLlavaConfig) -> int:
    """How many `<video>` placeholders the processor writes for a video of `num_frames` frames."""
    return video_token_budget(num_frames, config)[1]


def num_image_tokens(config: HourLlavaConfig) -> int:
    """Decoder tokens of one padded (single-tile) image: kept patches plus one newline (184 for SigLIP-384)."""
    return spatial_keep_count(config.vision_grid_size, config.spatial_keep_ratio, config.spatial_forgetting_mode) + 1


# ----------------------------------------------------------------------------------------------------------------
# Memory repository
# ----------------------------------------------------------------------------------------------------------------
def pool_frame_features(features: torch.Tensor, pool_size: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize each frame's square patch grid: (F, N, C) -> (F, pool_size**2, C), row-major.

    `N` must be a square. The resize is `F.interpolate` with `align_corners=False` and no antialiasing, like the
    reference; features that already have `pool_size**2` tokens pass through unchanged (the resize is exact).
    """
    frames, num_tokens, channels = features.shape
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"frame features have {num_tokens} tokens per frame, which is not a square patch grid")
    if side == pool_size:
        return features
    grid = features.transpose(1, 2).reshape(frames, channels, side, side)
    extra = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    pooled = F.interpolate(grid, size=(pool_size, pool_size), mode=mode, **extra)
    return pooled.flatten(2).transpose(1, 2)


def linspace_indices(last: int, count: int) -> torch.Tensor:
    """`numpy.linspace(0, last, count, dtype=int)`: the reference's exact rounding (truncation of numpy's floats)."""
    return torch.from_numpy(np.linspace(0, last, count, dtype=np.int64))


def resample_frame_indices(num_frames: int, min_frames: int) -> torch.Tensor:
    """Indices that stretch a short video to `min_frames` frames: `linspace(0, T-1, min_frames)` truncated.

    Videos with at least `min_frames` frames keep every frame. 60 frames -> floor(i * 59 / 127), i = 0..127.
    """
    if num_frames >= min_frames:
        return torch.arange(num_frames)
    return linspace_indices(num_frames - 1, min_frames)


def memory_repository(frame_tokens: torch.Tensor, newline: torch.Tensor) -> TokensWithPositions:
    """The full memory: every frame's tokens, each frame closed by the newline token.

    frame_tokens: (T, G*G, D) projected frame tokens, already resampled to at least `memory_min_frames`.
    newline: (D,) the `image_newline` parameter.
    Returns embeds (T * (G*G + 1), D) and positions `arange(T * (G*G + 1))`, i.e. token j of frame f at f*(G*G+1)+j.
    """
    frames, per_frame, width = frame_tokens.shape
    newlines = newline.to(frame_tokens.dtype).view(1, 1, width).expand(frames, 1, width)
    embeds = torch.cat([frame_tokens, newlines], dim=1).reshape(frames * (per_frame + 1), width)
    positions = torch.arange(embeds.shape[0], device=frame_tokens.device)
    return TokensWithPositions(embeds, positions)


# ----------------------------------------------------------------------------------------------------------------
# Forgetting
# ----------------------------------------------------------------------------------------------------------------
def input_generator(seed: int, *parts: torch.Tensor | int) -> torch.Generator:
    """A CPU generator seeded from exact, device-independent inputs (integers and integer tensors).

    Inference uses it for random spatial forgetting, so the same video and question always give the same answer,
    alone or in a batch.
    """
    crc = zlib.crc32(str(seed).encode())
    for part in parts:
        data = part.detach().to("cpu", torch.int64).numpy().tobytes() if torch.is_tensor(part) else str(part).encode()
        crc = zlib.crc32(data, crc)
    return torch.Generator().manual_seed(crc)


def spatial_forgetting(
    num_frames: int,
    grid_size: int,
    keep_ratio: float,
    mode: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Raster indices of the tokens each frame keeps: (T, k), ascending within a frame.

    `random` draws `rand(T, G*G)` on the CPU (from `generator`, or torch's global generator as the reference does)
    and keeps the k smallest scores per frame, k = ceil(G*G*ratio). `uniform` keeps every s-th row and column.
    """
    if mode == "uniform":
        stride = uniform_stride(keep_ratio)
        rows = torch.arange(0, grid_size, stride)
        grid = (rows[:, None] * grid_size + rows[None, :]).flatten()
        return grid.unsqueeze(0).expand(num_frames, -1)
    if mode != "random":
        raise ValueError(f"unknown spatial forgetting mode {mode!r}")
    keep = spatial_keep_count(grid_size, keep_ratio, mode)
    scores = torch.rand(num_frames, grid_size * grid_size, generator=generator)
    kept = scores.topk(keep, dim=1, largest=False).indices
    return kept.sort(dim=1).values


def temporal_forgetting(
    num_frames: int,
    config: HourLlavaConfig,
    mode: str | None = None,
    frame_summaries: torch.Tensor | None = None,
    question: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of the frames whose decayed tokens are kept: (K,), ascending.

    uniform   `linspace(0, T-1, K)` floored, last frame always kept (the reference; T=128 -> 0, 4, 8, ..., 122, 127).
    random    a sorted random subset of K frames.
    keyframe  frame 0 and the frames that differ most from their predecessor (L2 distance of `frame_summaries`).
    question  the frames whose summary is most similar (cosine) to the mean `question` embedding.

    frame_summaries: (T, C) one vector per frame (the mean of its tokens: projected memory tokens, or the frozen
        vision features, `temporal_selection_features`); needed by `keyframe` and `question`.
    question: (Q, D) embeddings of the question tokens; needed by `question` (falls back to `uniform` when empty).
    """
    mode = mode or config.temporal_forgetting_mode
    keep = temporal_keep_count(num_frames, config)
    if mode == "question" and (question is None or question.shape[0] == 0):
        mode = "uniform"
    if mode == "uniform":
        if keep == 1:
            return torch.tensor([num_frames - 1])
        frames = linspace_indices(num_frames - 1, keep)
        if frames[-1] != num_frames - 1:
            frames = torch.cat([frames, torch.tensor([num_frames - 1])])
        return frames
    if mode == "random":
        return torch.randperm(num_frames, generator=generator)[:keep].sort().values
    if frame_summaries is None:
        raise ValueError(f"temporal forgetting mode {mode!r} needs per-frame summaries")
    summaries = frame_summaries.float()
    if mode == "keyframe":
        change = torch.full((num_frames,), float("inf"))
        change[1:] = (summaries[1:] - summaries[:-1]).norm(dim=-1).cpu()
        scores = change
    elif mode == "question":
        target = question.float().mean(dim=0, keepdim=True)
        scores = F.cosine_similarity(summaries, target.to(summaries.device), dim=-1).cpu()
    else:
        raise ValueError(f"unknown temporal forgetting mode {mode!r}")
    # Stable tie-break by frame index, so equal scores keep the earliest frames.
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:keep].sort().values


def decayed_video_tokens(
    frame_tokens: torch.Tensor,
    newline: torch.Tensor,
    config: HourLlavaConfig,
    generator: torch.Generator | None = None,
    question: torch.Tensor | None = None,
    vision_summaries: torch.Tensor | None = None,
) -> TokensWithPositions:
    """Spatial then temporal forgetting of a video's memory repository.

    frame_tokens: (T, G*G, D), already resampled to at least `memory_min_frames`.
    vision_summaries: (T, C_v) per-frame means of the pooled vision features, resampled alike: what `keyframe`
        compares when `temporal_selection_features` is "vision" (then required).
    Returns embeds (K * (k + 1), D) and their memory-space positions: kept token j of frame f at f*(G*G+1)+j,
    the frame's newline at f*(G*G+1)+G*G.
    """
    frames, per_frame, width = frame_tokens.shape
    grid = math.isqrt(per_frame)
    # The reference draws the spatial pattern for every frame before dropping frames; so do we, to share its stream.
    kept_tokens = spatial_forgetting(
        frames, grid, config.spatial_keep_ratio, config.spatial_forgetting_mode, generator
    ).to(frame_tokens.device)
    summaries = None
    if config.temporal_forgetting_mode in ("keyframe", "question"):
        summaries = frame_tokens.mean(dim=1)
        if config.temporal_selection_features == "vision":
            if vision_summaries is None or vision_summaries.shape[0] != frames:
                raise ValueError(
                    "temporal_selection_features='vision' needs the frozen vision features' per-frame summaries, "
                    f"one per memory frame ({frames}); encode the video with this model's encode_video"
                )
            summaries = vision_summaries
    kept_frames = temporal_forgetting(
        frames, config, frame_summaries=summaries, question=question, generator=generator
    ).to(frame_tokens.device)

    kept_tokens = kept_tokens[kept_frames]  # (K, k)
    tokens = frame_tokens[kept_frames].gather(1, kept_tokens.unsqueeze(-1).expand(-1, -1, width))
    newlines = newline.to(frame_tokens.dtype).view(1, 1, width).expand(len(kept_frames), 1, width)
    embeds = torch.cat([tokens, newlines], dim=1).reshape(-1, width)

    frame_offset = kept_frames.unsqueeze(1) * (per_frame + 1)
    newline_position = torch.full_like(kept_frames.unsqueeze(1), per_frame)
    positions = torch.cat([kept_tokens, newline_position], dim=1) + frame_offset
    return TokensWithPositions(embeds, positions.reshape(-1))


def image_memory_and_queries(
    image_tokens: torch.Tensor,
    newline: torch.Tensor,
    config: HourLlavaConfig,
    generator: torch.Generator | None = None,
) -> tuple[TokensWithPositions, list[TokensWithPositions]]:
    """Memory and decayed tokens of the N padded images of one sample (reference Sec. 1.6.3 and 1.6.4).

    image_tokens: (N, P, D), P = grid*grid projected patches per image (729 for SigLIP-384), no pooling.
    Memory: image n's patches at positions n*P + j, each image closed by a newline; every newline has position N*P.
    Queries: per image, spatially kept patches (183 random / 196 uniform) with their memory positions, then a newline
    at N*P. One entry per image, since each replaces its own `<image>` placeholder block.
    """
    num_images, per_image, width = image_tokens.shape
    grid = math.isqrt(per_image)
    newline_id = num_images * per_image
    newline_row = newline.to(image_tokens.dtype).view(1, 1, width).expand(num_images, 1, width)
    memory = torch.cat([image_tokens, newline_row], dim=1).reshape(-1, width)
    patch_positions = torch.arange(num_images * per_image, device=image_tokens.device).view(num_images, per_image)
    newline_positions = torch.full((num_images, 1), newline_id, device=image_tokens.device)
    memory_positions = torch.cat([patch_positions, newline_positions], dim=1).reshape(-1)

    kept = spatial_forgetting(
        num_images, grid, config.spatial_keep_ratio, config.spatial_forgetting_mode, generator
    ).to(image_tokens.device)
    queries = []
    for n in range(num_images):
        embeds = torch.cat([image_tokens[n, kept[n]], newline_row[n]], dim=0)
        positions = torch.cat([patch_positions[n, kept[n]], newline_positions[n]])
        queries.append(TokensWithPositions(embeds, positions))
    return TokensWithPositions(memory, memory_positions), queries


# ----------------------------------------------------------------------------------------------------------------
# MemAug query sequence
# ----------------------------------------------------------------------------------------------------------------
QUERY_POLICIES = ("training", "all")


def memaug_query_mask(
    input_ids: torch.Tensor,
    policy: str,
    media_token_ids: list[int],
    attention_mask: torch.Tensor | None = None,
    assistant_mask: torch.Tensor | None = None,
    excluded_token_ids: list[int] | None = None,
) -> torch.Tensor:
    """Which text tokens join MemAug's query: (B, L) bool, never padding or media placeholders.

    `all`       every prompt token (the reference's literal inference, where labels are absent).
    `training`  what the released checkpoints were trained with: the reference keeps the tokens whose label is
                ignored, which drops every assistant turn (header, answer and trailer; `assistant_mask` marks them,
                including the generation prompt) and every occurrence of the ids it always trains on
                (`excluded_token_ids`: "\n", <|im_start|>, <|im_end|> for Qwen).
    """
    if policy not in QUERY_POLICIES:
        raise ValueError(f"memaug query policy {policy!r}; expected one of {QUERY_POLICIES}")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    mask = mask & ~torch.isin(input_ids, torch.tensor(media_token_ids, device=input_ids.device))
    if policy == "all":
        return mask
    if assistant_mask is not None:
        mask = mask & ~assistant_mask.bool()
    if excluded_token_ids:
        mask = mask & ~torch.isin(input_ids, torch.tensor(excluded_token_ids, device=input_ids.device))
    return mask


def assemble_memaug_queries(
    text_embeds: torch.Tensor,
    query_mask: torch.Tensor,
    spans: list[tuple[int, int]],
    visual: list[TokensWithPositions],
) -> tuple[TokensWithPositions, torch.Tensor]:
    """Interleave the question's text tokens with the decayed visual tokens, as MemAug reads them.

    text_embeds: (L, D) embeddings of one sample's tokens; query_mask: (L,) bool, the text tokens that join the query.
    spans: [start, end) of each media placeholder block in the sample, in order; visual[i] fills span i.
    Order: [text before span 0, visual 0, text between, visual 1, ..., text after the last span].
    Positions follow the reference's running maximum m (starting at -1): a text segment of n tokens gets
    m+1..m+n; a visual block gets its memory-space positions + m + 1. For one video with n0 text tokens before it,
    the decayed token j of frame f sits at n0 + f*65 + j.
    Returns the query sequence and the indices (into it) of the visual tokens, in placeholder order.
    """
    device = text_embeds.device
    pieces, positions, visual_index = [], [], []
    running_max, cursor, length = -1, 0, 0
    bounds = list(spans) + [(text_embeds.shape[0], text_embeds.shape[0])]
    for i, (start, end) in enumerate(bounds):
        keep = query_mask[cursor:start].nonzero().squeeze(1) + cursor
        if keep.numel():
            pieces.append(text_embeds[keep])
            segment = torch.arange(keep.numel(), device=device) + running_max + 1
            positions.append(segment)
            running_max = int(segment[-1])
            length += keep.numel()
        if i < len(spans):
            block = visual[i]
            block_positions = block.positions.to(device) + running_max + 1
            pieces.append(block.embeds.to(text_embeds.dtype))
            positions.append(block_positions)
            visual_index.append(torch.arange(length, length + len(block), device=device))
            running_max = max(running_max, int(block_positions.max()))
            length += len(block)
        cursor = end
    return (
        TokensWithPositions(torch.cat(pieces), torch.cat(positions)),
        torch.cat(visual_index) if visual_index else torch.zeros(0, dtype=torch.long, device=device),
    )


__all__ = [
    "TokensWithPositions",
    "assemble_memaug_queries",
    "decayed_video_tokens",
    "image_memory_and_queries",
    "input_generator",
    "memaug_query_mask",
    "memory_frame_count",
    "memory_repository",
    "num_image_tokens",
    "num_video_tokens",
    "pool_frame_features",
    "resample_frame_indices",
    "spatial_forgetting",
    "spatial_keep_count",
    "temporal_forgetting",
    "temporal_keep_count",
    "video_token_budget",
]
