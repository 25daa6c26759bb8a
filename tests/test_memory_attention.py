"""`output_memory_attentions`: where MemAug's cross-attention looks in the memory repository, per block and frame.

The API's numbers are checked against an explicit computation (the full query x memory softmax, built from the
cross-attention's own inputs and weights), and its memory against the length of the video: no tensor of the size of
a score matrix is made, and the largest one grows linearly with the frames.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from modeling_hour_llava import num_video_tokens
from modeling_hour_llava.memaug_hour_llava import apply_partial_rotary, memory_attention_mass, repeat_kv

from conftest import tiny_model, video_prompt


def features(num_frames: int, config, seed: int = 0) -> torch.Tensor:
    """Random SigLIP features of `num_frames` frames: (T, patches, C_v)."""
    patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    return torch.randn(
        num_frames, patches, config.vision_config.hidden_size, generator=torch.Generator().manual_seed(seed)
    )


def explicit_masses(model, run) -> list[torch.Tensor]:
    """Run `run()` while recording every cross-attention's inputs; return per block the mass each memory token
    receives, averaged over the queries, from the full (H, L, M) softmax: (H, M)."""
    seen = []
    hooks = [
        layer.cross_attn.register_forward_pre_hook(lambda module, args: seen.append((module, args)))
        for layer in model.model.memaug.layers
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    masses = []
    for module, (hidden, query_rotary, memory, memory_rotary, *_) in seen:
        query = apply_partial_rotary(module._heads(module.q_proj(hidden), module.num_heads), *query_rotary)
        key, _ = module.kv_proj(memory).chunk(2, dim=-1)
        key = apply_partial_rotary(module._heads(key, module.num_key_value_heads), *memory_rotary)
        key = repeat_kv(key, module.num_key_value_groups)
        probabilities = torch.softmax(query @ key.transpose(-2, -1) * module.scaling, dim=-1)  # (1, H, L, M)
        masses.append(probabilities[0].mean(dim=1))
    return masses


def per_frame(mass: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    return mass.reshape(mass.shape[0], -1, tokens_per_frame).sum(-1)


def prompt_for(model, num_frames: int) -> torch.Tensor:
    return video_prompt(num_video_tokens(num_frames, model.config), [5, 6, 7, 8], [9, 10, 11])


@pytest.mark.parametrize("num_frames", [130, 40])
def test_memory_attentions_are_the_explicit_attention_mass_per_frame(num_frames):
    """130 frames: one memory frame per video frame; 40: the video is resampled to `memory_min_frames` (128) and
    the mass of a repeated frame goes back to the video frame it repeats."""
    from modeling_hour_llava.memory_hour_llava import resample_frame_indices

    model = tiny_model()
    video = features(num_frames, model.config)
    ids = prompt_for(model, num_frames)
    inputs = dict(input_ids=ids, video_features=video, video_num_frames=[num_frames])
    with torch.no_grad():
        plain = model(**inputs)
        output = model(**inputs, output_memory_attentions=True)
        expected = explicit_masses(model, lambda: model(**inputs))
    torch.testing.assert_close(output.logits, plain.logits)  # looking changes nothing
    assert plain.memory_attentions is None
    (blocks,) = output.memory_attentions
    assert len(blocks) == model.config.memaug_num_layers == len(expected)
    grid = model.config.memory_pool_size**2 + 1
    for got, full in zip(blocks, expected, strict=True):
        assert got.shape == (model.config.text_config.num_attention_heads, num_frames)
        frames = per_frame(full, grid)
        if num_frames < model.config.memory_min_frames:
            resample = resample_frame_indices(num_frames, model.config.memory_min_frames)
            frames = torch.zeros(frames.shape[0], num_frames).index_add_(1, resample, frames)
        torch.testing.assert_close(got, frames, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[0]))


def test_the_mass_of_a_batch_belongs_to_its_samples_and_a_text_sample_has_none():
    model = tiny_model()
    long, short = features(130, model.config, seed=1), features(140, model.config, seed=2)
    n_long, n_short = num_video_tokens(130, model.config), num_video_tokens(140, model.config)
    rows = [video_prompt(n_long, [5, 6], [9])[0], video_prompt(n_short, [7, 8], [9])[0], torch.tensor([3, 4, 5])]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.nn.functional.pad(r, (width - len(r), 0), value=0) for r in rows])
    mask = torch.stack(
        [torch.nn.functional.pad(torch.ones(len(r), dtype=torch.long), (width - len(r), 0)) for r in rows]
    )
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, video_features=torch.cat([long, short]),
                      video_num_frames=[130, 140], output_memory_attentions=True).memory_attentions  # fmt: skip
        alone = model(input_ids=rows[1][None], video_features=short, video_num_frames=[140],
                      output_memory_attentions=True).memory_attentions  # fmt: skip
    assert [None if a is None else a[0].shape[-1] for a in batch] == [130, 140, None]
    for got, want in zip(batch[1], alone[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_generate_returns_the_memory_attentions_of_its_prompt():
    model = tiny_model()
    video, ids = features(130, model.config), prompt_for(model, 130)
    with torch.no_grad():
        forward = model(input_ids=ids, video_features=video, video_num_frames=[130], output_memory_attentions=True)
        generated = model.generate(input_ids=ids, video_features=video, video_num_frames=[130], max_new_tokens=3,
                                   do_sample=False, output_memory_attentions=True,
                                   return_dict_in_generate=True)  # fmt: skip
        with pytest.raises(ValueError, match="return_dict_in_generate"):
            model.generate(input_ids=ids, video_features=video, video_num_frames=[130], max_new_tokens=1,
                           output_memory_attentions=True)  # fmt: skip
    assert generated.sequences.shape[1] == ids.shape[1] + 3
    for got, want in zip(generated.memory_attentions[0], forward.memory_attentions[0], strict=True):
        torch.testing.assert_close(got, want)


def test_a_model_without_memaug_reports_no_memory_attention():
    model = tiny_model(use_memaug=False)
    with torch.no_grad():
        output = model(input_ids=prompt_for(model, 130), video_features=features(130, model.config),
                       video_num_frames=[130], output_memory_attentions=True)  # fmt: skip
    assert output.memory_attentions == (None,)


class LargestTensor(TorchDispatchMode):
    """The largest tensor (elements) any aten op returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def largest_tensor(function) -> int:
    with LargestTensor() as mode:
        function()
    return mode.largest


def test_memory_attention_mass_matches_softmax_and_never_builds_the_score_matrix():
    """The helper alone: equal to the full softmax's mean, with grouped heads; its largest tensor is one key chunk
    of scores or the (H, M) result, never the (H, L, M) matrix; twice the memory, at most twice the memory."""
    generator = torch.Generator().manual_seed(0)
    heads, groups, length, dim = 4, 2, 300, 16
    query = torch.randn(1, heads, length, dim, generator=generator)

    def run(memory: int) -> tuple[torch.Tensor, int]:
        key = torch.randn(1, heads // groups, memory, dim, generator=torch.Generator().manual_seed(memory))
        full = torch.softmax(query @ repeat_kv(key, groups).transpose(-2, -1) * 0.25, dim=-1).mean(2)
        max_scores = heads * length * 64
        mass = memory_attention_mass(query, key, 0.25, groups, max_scores)
        torch.testing.assert_close(mass, full, rtol=1e-5, atol=1e-7)
        size = largest_tensor(lambda: memory_attention_mass(query, key, 0.25, groups, max_scores))
        assert size < heads * length * memory / 10, "a score matrix of the whole memory was built"
        return mass, size

    _, small = run(5_000)
    _, large = run(10_000)
    assert large <= 2 * small


def test_the_model_with_memory_attentions_stays_linear_in_the_video_length():
    """A forward with `output_memory_attentions=True` and chunked eager attention, at a fixed decoder budget (16 kept
    frames, so the decoder's own prompt does not grow with the video): the largest tensor of a 4x longer video is at
    most 4x larger, and smaller than one (heads x queries x memory) score matrix."""
    model = tiny_model(memaug_eager_max_scores=4096, attn_implementation="eager", temporal_min_frames=16,
                       temporal_max_frames=16)  # fmt: skip
    sizes = {}
    for num_frames in (128, 512):
        ids, video = prompt_for(model, num_frames), features(num_frames, model.config)
        with torch.no_grad():
            sizes[num_frames] = largest_tensor(
                lambda ids=ids, video=video, n=num_frames: model(
                    input_ids=ids, video_features=video, video_num_frames=[n], output_memory_attentions=True
                )
            )
        queries = ids.shape[1]
        memory = num_frames * (model.config.memory_pool_size**2 + 1)
        assert sizes[num_frames] < model.config.text_config.num_attention_heads * queries * memory / 4
    assert sizes[512] <= 4 * sizes[128]
