"""Generation, determinism, video-memory reuse, query-mask paths and gradients of the tiny Hour-LLaVA.

Every check compares two real computations of the model (batched vs alone, memory vs pixels, one path vs another);
nothing is compared against stored numbers.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from modeling_hour_llava import HourLlavaInputError, HourLlavaVideoMemory, num_video_tokens

from conftest import tiny_model, video_prompt

MAX_NEW_TOKENS = 5
PAD = 0


def frames_of(num_frames: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_frames, 3, 140, 140, generator=generator)


def sample(model, num_frames: int, before: list[int], after: list[int], seed: int, query: str = "all") -> dict:
    """One-sample inputs; `query` is "all" (every text token joins MemAug's query) or "after" (text after the video)."""
    ids = video_prompt(num_video_tokens(num_frames, model.config), before, after)
    if query == "all":
        query_mask = (ids != model.config.video_token_id).long()
    else:
        query_mask = torch.zeros_like(ids)
        query_mask[0, ids.shape[1] - len(after) :] = 1
    return dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        memaug_query_mask=query_mask,
        pixel_values_videos=frames_of(num_frames, seed),
        video_num_frames=[num_frames],
    )


def greedy(model, inputs: dict, **extra) -> torch.Tensor:
    """The new tokens of a greedy generation: (B, MAX_NEW_TOKENS)."""
    output = model.generate(**inputs, **extra, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=PAD)
    return output[:, inputs["input_ids"].shape[1] :]


def greedy_with_logits(model, inputs: dict, **extra) -> tuple[torch.Tensor, torch.Tensor]:
    """New tokens (B, N) and the logits of every generation step (B, N, V) of a greedy generation."""
    output = model.generate(
        **inputs,
        **extra,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_logits=True,
    )
    return output.sequences[:, inputs["input_ids"].shape[1] :], torch.stack(output.logits, dim=1)


def logits_of(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def without_pixels(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k not in ("pixel_values_videos", "video_num_frames")}


class CallCounter:
    """Counts forward calls of a real module through a forward hook."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1

    def remove(self):
        self.handle.remove()


# ------------------------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------------------------
def left_pad_batch(samples: list[dict]) -> dict:
    length = max(s["input_ids"].shape[1] for s in samples)
    batch = {}
    for key, fill in (("input_ids", PAD), ("attention_mask", 0), ("memaug_query_mask", 0)):
        rows = []
        for s in samples:
            row = s[key][0]
            rows.append(torch.cat([torch.full((length - row.numel(),), fill, dtype=row.dtype), row]))
        batch[key] = torch.stack(rows)
    batch["pixel_values_videos"] = torch.cat([s["pixel_values_videos"] for s in samples])
    batch["video_num_frames"] = [n for s in samples for n in s["video_num_frames"]]
    return batch


def test_left_padded_batch_generates_like_each_sample_alone(model):
    first = sample(model, 4, [5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15], seed=1)
    second = sample(model, 7, [16, 17], [18, 19], seed=2)
    assert first["input_ids"].shape[1] != second["input_ids"].shape[1]
    batch = left_pad_batch([first, second])
    assert (batch["attention_mask"] == 0).any()

    alone = [greedy_with_logits(model, first), greedy_with_logits(model, second)]
    together, together_logits = greedy_with_logits(model, batch)
    for row, (tokens, step_logits) in enumerate(alone):
        assert torch.equal(together[row], tokens[0])
        torch.testing.assert_close(together_logits[row], step_logits[0], atol=1e-4, rtol=0)

    # The prefill logits at each sample's last prompt token agree too (same forgetting, same positions).
    batched_logits = logits_of(model, batch)[:, -1]
    torch.testing.assert_close(batched_logits[0], logits_of(model, first)[0, -1], atol=1e-4, rtol=0)
    torch.testing.assert_close(batched_logits[1], logits_of(model, second)[0, -1], atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Random spatial forgetting: deterministic at inference, random in training
# ------------------------------------------------------------------------------------------------------------------
def test_eval_mode_is_deterministic(model):
    assert model.config.spatial_forgetting_mode == "random"
    inputs = sample(model, 5, [5, 6], [7, 8, 9], seed=3)
    torch.manual_seed(100)
    first_logits, first_tokens = logits_of(model, inputs), greedy(model, inputs)
    torch.manual_seed(200)  # the global RNG must not matter at inference
    second_logits, second_tokens = logits_of(model, inputs), greedy(model, inputs)
    assert torch.equal(first_logits, second_logits)
    assert torch.equal(first_tokens, second_tokens)


def test_forgetting_seed_is_used(model):
    inputs = sample(model, 5, [5, 6], [7, 8, 9], seed=3)
    model.config.forgetting_seed = 0
    seed_zero = logits_of(model, inputs)
    model.config.forgetting_seed = 1
    seed_one = logits_of(model, inputs)
    assert not torch.allclose(seed_zero[0, -1], seed_one[0, -1], atol=1e-4)
    model.config.forgetting_seed = 0
    assert torch.equal(logits_of(model, inputs), seed_zero)


def test_forgetting_seed_does_not_matter_for_uniform_forgetting():
    model = tiny_model(spatial_forgetting_mode="uniform")
    inputs = sample(model, 5, [5, 6], [7, 8, 9], seed=3)
    seed_zero = logits_of(model, inputs)
    model.config.forgetting_seed = 1
    assert torch.equal(logits_of(model, inputs), seed_zero)


def test_training_forgetting_follows_the_global_rng(model):
    inputs = sample(model, 5, [5, 6], [7, 8, 9], seed=3)
    model.train()
    torch.manual_seed(0)
    first = logits_of(model, inputs)
    second = logits_of(model, inputs)  # the global stream moved on: another forgetting pattern
    assert not torch.allclose(first[0, -1], second[0, -1], atol=1e-4)
    torch.manual_seed(0)
    assert torch.equal(logits_of(model, inputs), first)
    torch.manual_seed(1)
    assert not torch.allclose(logits_of(model, inputs)[0, -1], first[0, -1], atol=1e-4)


# ------------------------------------------------------------------------------------------------------------------
# Video memory: encode once, ask many questions
# ------------------------------------------------------------------------------------------------------------------
def test_video_memory_matches_recomputation(model):
    inputs = sample(model, 6, [5, 6, 7], [8, 9, 10], seed=4)
    memory = model.encode_video(pixel_values_videos=inputs["pixel_values_videos"], video_num_frames=[6])
    assert isinstance(memory, HourLlavaVideoMemory)
    assert memory.num_frames == [6]
    from_memory = without_pixels(inputs) | {"video_memory": memory}
    torch.testing.assert_close(logits_of(model, from_memory), logits_of(model, inputs), atol=1e-6, rtol=0)
    memory_tokens, memory_logits = greedy_with_logits(model, from_memory)
    pixel_tokens, pixel_logits = greedy_with_logits(model, inputs)
    assert torch.equal(memory_tokens, pixel_tokens)
    torch.testing.assert_close(memory_logits, pixel_logits, atol=1e-6, rtol=0)


def test_one_memory_many_questions_runs_the_vision_tower_once(model):
    frames = frames_of(6, seed=5)
    questions = ([5, 6], [7, 8, 9, 10]), ([11], [12, 13]), ([14, 15, 16], [17])
    prompts = []
    for before, after in questions:
        inputs = sample(model, 6, before, after, seed=0)
        inputs["pixel_values_videos"] = frames
        prompts.append(inputs)

    counter = CallCounter(model.model.vision_tower.embeddings)
    try:
        memory = model.encode_video(pixel_values_videos=frames, video_num_frames=[6])
        with_memory = [greedy_with_logits(model, without_pixels(p), video_memory=memory) for p in prompts]
        calls_with_memory = counter.calls
        counter.calls = 0
        recomputed = [greedy_with_logits(model, p) for p in prompts]
        calls_recomputed = counter.calls
    finally:
        counter.remove()
    assert calls_with_memory == 1
    assert calls_recomputed == len(prompts)
    for (memory_tokens, memory_logits), (pixel_tokens, pixel_logits) in zip(with_memory, recomputed, strict=True):
        assert torch.equal(memory_tokens, pixel_tokens)
        torch.testing.assert_close(memory_logits, pixel_logits, atol=1e-6, rtol=0)
    # Three different questions: the answers are not all the same computation.
    assert not all(torch.equal(with_memory[0][1], other[1]) for other in with_memory[1:])


def test_video_memory_save_load_round_trip(model, tmp_path):
    inputs = sample(model, 4, [5, 6], [7, 8], seed=6)
    memory = model.encode_video(pixel_values_videos=inputs["pixel_values_videos"], video_num_frames=[4])
    path = tmp_path / "video.memory.safetensors"
    memory.save(path)
    loaded = model.load_video_memory(path)
    assert loaded.num_frames == memory.num_frames
    assert torch.equal(loaded.frame_tokens[0], memory.frame_tokens[0])
    base = without_pixels(inputs)
    from_file = logits_of(model, base | {"video_memory": loaded})
    assert torch.equal(from_file, logits_of(model, base | {"video_memory": memory}))
    torch.testing.assert_close(from_file, logits_of(model, inputs), atol=1e-6, rtol=0)
    also_loaded = HourLlavaVideoMemory.load(path)
    assert torch.equal(also_loaded.frame_tokens[0], memory.frame_tokens[0])


def test_truncated_video_memory_is_refused_by_name(model, tmp_path):
    memory = model.encode_video(pixel_values_videos=frames_of(3, seed=7), video_num_frames=[3])
    path = tmp_path / "whole.safetensors"
    memory.save(path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(HourLlavaInputError) as error:
        model.load_video_memory(truncated)
    assert str(truncated) in str(error.value)
    with pytest.raises(HourLlavaInputError) as error:
        HourLlavaVideoMemory.load(truncated)
    assert str(truncated) in str(error.value)


def test_safetensors_without_memory_metadata_is_refused_by_name(model, tmp_path):
    memory = model.encode_video(pixel_values_videos=frames_of(3, seed=7), video_num_frames=[3])
    path = tmp_path / "plain.safetensors"
    save_file({"video.0": memory.frame_tokens[0].detach().contiguous()}, str(path))
    with pytest.raises(HourLlavaInputError) as error:
        model.load_video_memory(path)
    assert str(path) in str(error.value)


# ------------------------------------------------------------------------------------------------------------------
# Pre-extracted SigLIP features
# ------------------------------------------------------------------------------------------------------------------
def test_pre_extracted_features_match_pixels(model):
    inputs = sample(model, 5, [5, 6], [7, 8, 9], seed=8)
    with torch.no_grad():
        features = model.model.vision_features(inputs["pixel_values_videos"])
    assert features.shape[:2] == (5, (140 // 14) ** 2)
    from_features = without_pixels(inputs) | {"video_features": features, "video_num_frames": [5]}
    torch.testing.assert_close(logits_of(model, from_features), logits_of(model, inputs), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# The MemAug query mask through forward, the TRL path and generate
# ------------------------------------------------------------------------------------------------------------------
def answer_labels(inputs: dict, answer_length: int) -> torch.Tensor:
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -answer_length:] = inputs["input_ids"][:, -answer_length:]
    return labels


@pytest.mark.parametrize("query", ["all", "after"])
def test_query_mask_is_honoured_by_forward_trl_and_generate(model, query):
    inputs = sample(model, 5, [5, 6, 7], [8, 9, 10, 11], seed=9, query=query)
    with_labels = inputs | {"labels": answer_labels(inputs, 3)}
    with torch.no_grad():
        forward = model(**with_labels)
        trl_logits = model.get_output_embeddings()(model.model(**with_labels).last_hidden_state)
    assert torch.isfinite(forward.loss)
    torch.testing.assert_close(trl_logits, forward.logits, atol=1e-6, rtol=0)
    first_token = greedy(model, inputs)[0, 0]
    assert first_token == forward.logits[0, -1].argmax()


def test_query_policies_differ(model):
    every = sample(model, 5, [5, 6, 7], [8, 9, 10, 11], seed=9, query="all")
    subset = sample(model, 5, [5, 6, 7], [8, 9, 10, 11], seed=9, query="after")
    assert not torch.equal(every["memaug_query_mask"], subset["memaug_query_mask"])
    last_every, last_subset = logits_of(model, every)[0, -1], logits_of(model, subset)[0, -1]
    assert not torch.allclose(last_every, last_subset, atol=1e-4)


def test_missing_query_mask_means_every_prompt_token(model):
    inputs = sample(model, 5, [5, 6, 7], [8, 9, 10, 11], seed=9, query="all")
    no_mask = {k: v for k, v in inputs.items() if k != "memaug_query_mask"}
    torch.testing.assert_close(logits_of(model, no_mask), logits_of(model, inputs), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Training: loss and gradients
# ------------------------------------------------------------------------------------------------------------------
def test_loss_backward_reaches_memaug_projector_and_vision_tower(model):
    inputs = sample(model, 4, [5, 6, 7], [8, 9, 10, 11], seed=10, query="after")
    model.train()
    torch.manual_seed(0)
    output = model(**inputs, labels=answer_labels(inputs, 3))
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    output.loss.backward()

    def nonzero_grads(module: torch.nn.Module) -> list[str]:
        return [n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]

    inner = model.model
    for name, module in (
        ("memaug", inner.memaug),
        ("multi_modal_projector", inner.multi_modal_projector),
        ("vision_tower.embeddings", inner.vision_tower.embeddings),
        ("vision_tower.encoder", inner.vision_tower.encoder),
        ("language_model", inner.language_model),
    ):
        assert nonzero_grads(module), f"no non-zero gradient reaches {name}"
    for layer in inner.memaug.layers:
        assert nonzero_grads(layer.cross_attn), "a MemAug block's cross-attention gets no gradient"
    assert inner.image_newline.grad is not None and inner.image_newline.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------------------
# Generation options that reshape the batch or skip the cache
# ------------------------------------------------------------------------------------------------------------------
def test_generate_without_cache_matches_cached_generation(model):
    inputs = sample(model, 4, [5, 6, 7], [8, 9, 10], seed=11)
    cached_tokens, cached_logits = greedy_with_logits(model, inputs)
    uncached_tokens, uncached_logits = greedy_with_logits(model, inputs, use_cache=False)
    assert torch.equal(uncached_tokens, cached_tokens)
    torch.testing.assert_close(uncached_logits, cached_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("source", ["pixels", "memory"])
def test_beam_search_returns_the_top_tokens_of_forward(model, source):
    """With one new token, beam search over 2 beams returns the 2 most likely next tokens of the prompt."""
    inputs = sample(model, 4, [5, 6, 7], [8, 9, 10], seed=12)
    top_two = logits_of(model, inputs)[0, -1].topk(2).indices
    if source == "memory":
        memory = model.encode_video(pixel_values_videos=inputs["pixel_values_videos"], video_num_frames=[4])
        inputs = without_pixels(inputs) | {"video_memory": memory}
    output = model.generate(
        **inputs, max_new_tokens=1, do_sample=False, num_beams=2, num_return_sequences=2, pad_token_id=PAD
    )
    assert torch.equal(output[:, -1], top_two)
