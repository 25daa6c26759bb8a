"""Memory repository and forgetting, checked against the reference's worked examples (its Sec. 1.6.1, 1.7, 1.10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_hour_llava import HourLlavaConfig
from modeling_hour_llava.memory_hour_llava import (
    assemble_memaug_queries,
    decayed_video_tokens,
    image_memory_and_queries,
    input_generator,
    memaug_query_mask,
    memory_frame_count,
    memory_repository,
    pool_frame_features,
    resample_frame_indices,
    spatial_forgetting,
    temporal_forgetting,
    temporal_keep_count,
    video_token_budget,
)

from conftest import tiny_config

PAPER = HourLlavaConfig()  # the paper's defaults, with a Qwen2 decoder


def frames_of(num_frames: int, width: int = 4, grid: int = 8) -> torch.Tensor:
    """Frame tokens whose first channel encodes (frame, token), so gathers can be read back."""
    tokens = torch.zeros(num_frames, grid * grid, width)
    tokens[..., 0] = torch.arange(num_frames * grid * grid, dtype=torch.float32).view(num_frames, grid * grid)
    return tokens


@pytest.mark.parametrize(
    "seconds, memory_tokens, llm_tokens",
    [
        (60, 8_320, 544),  # resampled to 128 frames; 32 frames x (16 + 1)
        (600, 39_000, 2_550),  # 150 frames x 17
        (3_600, 234_000, 8_704),  # one hour: 512 frames x 17
        (7_200, 468_000, 8_704),  # two hours: the LLM budget is capped
    ],
)
def test_token_budgets_of_reference_table(seconds, memory_tokens, llm_tokens):
    assert video_token_budget(seconds, PAPER) == (memory_tokens, llm_tokens)
    # The functions that build the tensors agree with the arithmetic.
    frames = frames_of(seconds)[resample_frame_indices(seconds, PAPER.memory_min_frames)]
    newline = torch.full((4,), -1.0)
    assert len(memory_repository(frames, newline)) == memory_tokens
    assert len(decayed_video_tokens(frames, newline, PAPER, torch.Generator().manual_seed(0))) == llm_tokens


def test_short_videos_are_resampled_to_128_frames_by_flooring():
    indices = resample_frame_indices(60, 128)
    assert indices.tolist() == [i * 59 // 127 for i in range(128)]
    assert resample_frame_indices(300, 128).tolist() == list(range(300))
    assert memory_frame_count(60, PAPER) == 128 and memory_frame_count(3600, PAPER) == 3600


def test_temporal_forgetting_keeps_a_quarter_between_32_and_512_frames():
    assert [temporal_keep_count(t, PAPER) for t in (128, 131, 132, 600, 2047, 2048, 3600, 7200)] == [
        32,
        32,
        33,
        150,
        511,
        512,
        512,
        512,
    ]
    kept = temporal_forgetting(128, PAPER)
    assert kept[:4].tolist() == [0, 4, 8, 12] and kept[-2:].tolist() == [122, 127]
    assert kept.tolist() == np.linspace(0, 127, 32, dtype=int).tolist()
    hour = temporal_forgetting(3600, PAPER)
    assert len(hour) == 512 and hour[0] == 0 and hour[-1] == 3599
    assert torch.all(hour[1:] > hour[:-1])


def test_memory_repository_positions_are_frame_times_65_plus_token():
    frames = frames_of(130)
    newline = torch.full((4,), -1.0)
    memory = memory_repository(frames, newline)
    assert memory.positions.tolist() == list(range(130 * 65))
    grid = memory.embeds.view(130, 65, 4)
    assert torch.equal(grid[:, :64, 0], frames[..., 0])  # frame f, token j sits at f*65 + j
    assert torch.all(grid[:, 64] == -1.0)  # then the newline


def test_uniform_spatial_forgetting_keeps_even_rows_and_columns_with_memory_positions():
    config = HourLlavaConfig(spatial_forgetting_mode="uniform")
    frames = frames_of(128)
    decayed = decayed_video_tokens(frames, torch.full((4,), -1.0), config)
    assert len(decayed) == 32 * 17
    per_frame = decayed.positions.view(32, 17)
    even = [r * 8 + c for r in range(0, 8, 2) for c in range(0, 8, 2)]
    for slot, f in enumerate(temporal_forgetting(128, config).tolist()):
        assert per_frame[slot].tolist() == [f * 65 + j for j in even] + [f * 65 + 64]
        # The kept embeddings are the tokens those positions name.
        assert decayed.embeds.view(32, 17, 4)[slot, :16, 0].tolist() == [f * 64 + j for j in even]


def test_random_spatial_forgetting_keeps_16_sorted_tokens_per_frame_and_follows_the_generator():
    kept = spatial_forgetting(50, 8, 0.25, "random", torch.Generator().manual_seed(3))
    assert kept.shape == (50, 16)
    assert torch.all(kept[:, 1:] > kept[:, :-1]) and kept.min() >= 0 and kept.max() < 64
    assert len({tuple(row) for row in kept.tolist()}) > 40  # frames choose independently
    again = spatial_forgetting(50, 8, 0.25, "random", torch.Generator().manual_seed(3))
    assert torch.equal(kept, again)
    # Without a generator it draws from torch's global CPU generator, like the reference (rand(T, 64), 16 smallest).
    torch.manual_seed(7)
    scores = torch.rand(50, 64)
    torch.manual_seed(7)
    assert torch.equal(spatial_forgetting(50, 8, 0.25, "random"), scores.argsort(dim=1)[:, :16].sort(dim=1).values)


def test_input_generator_depends_on_seed_and_inputs_only():
    ids = torch.tensor([5, 6, 7])
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    assert torch.equal(draw(input_generator(0, 128, ids)), draw(input_generator(0, 128, ids.clone())))
    assert not torch.equal(draw(input_generator(0, 128, ids)), draw(input_generator(1, 128, ids)))
    assert not torch.equal(draw(input_generator(0, 128, ids)), draw(input_generator(0, 129, ids)))


def test_query_positions_follow_the_running_maximum_for_one_video():
    """Reference Sec. 1.7: seg0 at 0..n0-1, decayed token (f, j) at n0 + f*65 + j, seg1 from n0 + T*65."""
    config = HourLlavaConfig(spatial_forgetting_mode="uniform")
    frames = frames_of(128)
    decayed = decayed_video_tokens(frames, torch.full((4,), -1.0), config)
    before, after, n_video = 11, 6, len(decayed)
    length = before + n_video + after
    text = torch.randn(length, 4)
    mask = torch.zeros(length, dtype=torch.bool)
    mask[[0, 2, 3, 5, 6, 7, 9, 10]] = True  # n0 = 8 of the 11 tokens before the video join the query
    mask[before + n_video + 1 :] = True  # n1 = 5 after it
    queries, visual_index = assemble_memaug_queries(text, mask, [(before, before + n_video)], [decayed])
    n0 = 8
    assert queries.positions[:n0].tolist() == list(range(n0))
    assert torch.equal(queries.positions[visual_index], decayed.positions + n0)
    assert queries.positions[n0 + n_video :].tolist() == [n0 + 128 * 65 + k for k in range(5)]
    assert torch.equal(queries.embeds[:n0], text[mask][:n0])
    assert torch.equal(queries.embeds[visual_index], decayed.embeds)
    assert visual_index.tolist() == list(range(n0, n0 + n_video))


def test_multi_image_positions_share_one_newline_id_and_compound_offsets():
    """Reference Sec. 1.6.4: image n patch j at n*P + j, every newline at N*P; offsets through the running max."""
    config = tiny_config(spatial_forgetting_mode="uniform")  # 10 x 10 patches per image
    images = torch.randn(2, 100, 4)
    memory, queries = image_memory_and_queries(images, torch.zeros(4), config)
    assert len(memory) == 2 * 101
    assert memory.positions.view(2, 101)[:, :100].flatten().tolist() == list(range(200))
    assert memory.positions.view(2, 101)[:, 100].tolist() == [200, 200]
    kept = [r * 10 + c for r in range(0, 10, 2) for c in range(0, 10, 2)]
    assert queries[0].positions.tolist() == kept + [200]
    assert queries[1].positions.tolist() == [100 + j for j in kept] + [200]

    n_img = len(queries[0])
    text = torch.randn(3 + n_img + 2 + n_img + 1, 4)
    spans = [(3, 3 + n_img), (5 + n_img, 5 + 2 * n_img)]
    mask = torch.ones(text.shape[0], dtype=torch.bool)
    sequence, visual_index = assemble_memaug_queries(text, mask, spans, queries)
    assert sequence.positions[:3].tolist() == [0, 1, 2]
    first = queries[0].positions + 3
    assert torch.equal(sequence.positions[3 : 3 + n_img], first)
    # Two text tokens after the first image's newline (200 + 3), then image 2 offset by the running max + 1.
    assert sequence.positions[3 + n_img : 5 + n_img].tolist() == [204, 205]
    assert torch.equal(sequence.positions[5 + n_img : 5 + 2 * n_img], queries[1].positions + 206)
    assert sequence.positions[-1].item() == 200 + 206 + 1
    assert len(visual_index) == 2 * n_img


def test_pooling_is_bilinear_without_corner_alignment_and_exact_at_the_target_grid():
    features = torch.randn(3, 729, 5)
    pooled = pool_frame_features(features, 8)
    grid = features.view(3, 27, 27, 5).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(pooled, expected.reshape(3, 64, 5))
    assert torch.equal(pool_frame_features(pooled, 8), pooled)
    with pytest.raises(ValueError, match="not a square"):
        pool_frame_features(torch.randn(1, 65, 5), 8)


def test_hand_made_temporal_compressions_pick_what_they_promise():
    config = HourLlavaConfig()
    summaries = torch.zeros(128, 3)
    cuts = [10, 40, 77, 100]
    for cut in cuts:  # scene changes: everything after a cut shifts
        summaries[cut:] += torch.tensor([5.0, 0.0, 0.0])
    keyframes = temporal_forgetting(128, config, mode="keyframe", frame_summaries=summaries)
    assert len(keyframes) == 32 and set([0] + cuts) <= set(keyframes.tolist())

    target = torch.tensor([[0.0, 1.0, 0.0]])
    summaries = torch.randn(128, 3)
    summaries[[3, 50, 90], 1] = 100.0
    chosen = temporal_forgetting(128, config, mode="question", frame_summaries=summaries, question=target)
    assert {3, 50, 90} <= set(chosen.tolist())

    random = temporal_forgetting(128, config, mode="random", generator=torch.Generator().manual_seed(0))
    assert len(random) == 32 and torch.all(random[1:] > random[:-1])


def test_training_query_policy_is_the_references_ignored_labels():
    """Reference Sec. 1.7 / 4.3: query text = tokens whose label is IGNORE, where assistant turns (with header and
    trailer) are targets and "\\n", <|im_start|>, <|im_end|> are targets everywhere."""
    S, E, NL, V = 1, 2, 10, 99  # <|im_start|>, <|im_end|>, "\n", <video>
    system = [S, 20, NL, 21, 22, 23, E, NL]
    user_1 = [S, 30, NL, V, V, V, NL, 31, 32, E, NL]
    answer_1 = [S, 40, NL, 41, 42, E, NL]
    user_2 = [S, 30, NL, 33, 34, E, NL]
    answer_2 = [S, 40, NL, 43, E, NL]
    turns = [(system, False), (user_1, False), (answer_1, True), (user_2, False), (answer_2, True)]
    ids = torch.tensor([[t for turn, _ in turns for t in turn]])
    assistant = torch.tensor([[a for turn, a in turns for _ in turn]])
    labels = torch.where(assistant, ids, torch.full_like(ids, -100))
    labels = torch.where(torch.isin(ids, torch.tensor([S, E, NL])), ids, labels)

    training = memaug_query_mask(ids, "training", [V], assistant_mask=assistant, excluded_token_ids=[NL, S, E])
    assert torch.equal(training, (labels == -100) & (ids != V))
    assert ids[training].tolist() == [20, 21, 22, 23, 30, 31, 32, 30, 33, 34]
    everything = memaug_query_mask(ids, "all", [V])
    assert torch.equal(everything, ids != V)
    padded = memaug_query_mask(ids, "all", [V], attention_mask=torch.arange(ids.shape[1])[None] >= 3)
    assert not padded[0, :3].any()
    with pytest.raises(ValueError, match="policy"):
        memaug_query_mask(ids, "some", [V])
