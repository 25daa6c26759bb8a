"""The assembled model: what reaches the decoder, images, text-only samples, attention backends, bad inputs."""

from __future__ import annotations

import pytest
import torch

from modeling_hour_llava import (
    HourLlavaForConditionalGeneration,
    HourLlavaInputError,
    num_image_tokens,
    num_video_tokens,
)
from modeling_hour_llava.memory_hour_llava import decayed_video_tokens, resample_frame_indices, temporal_forgetting

from conftest import IMAGE_TOKEN, VIDEO_TOKEN, tiny_config, tiny_model, video_prompt


def frames(num_frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_frames, 3, 140, 140, generator=torch.Generator().manual_seed(seed))


def capture_decoder_inputs(model: HourLlavaForConditionalGeneration) -> list[torch.Tensor]:
    """Record the inputs_embeds the decoder receives (a forward pre-hook on the real decoder)."""
    seen: list[torch.Tensor] = []
    model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True
    )
    return seen


def count_vision_calls(model: HourLlavaForConditionalGeneration) -> list[int]:
    calls = [0]
    model.model.vision_tower.embeddings.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_only_memaug_video_outputs_replace_the_placeholders(model):
    n = num_video_tokens(6, model.config)
    ids = video_prompt(n, [5, 6, 7, 8], [9, 10])
    seen = capture_decoder_inputs(model)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values_videos=frames(6), video_num_frames=[6])
    embeds = seen[0][0]
    placeholders = ids[0] == VIDEO_TOKEN
    text_rows = model.get_input_embeddings()(ids[0][~placeholders])
    assert torch.equal(embeds[~placeholders], text_rows)  # question tokens skip MemAug on their way to the decoder
    assert torch.equal(embeds[placeholders], out.video_hidden_states)
    assert out.video_hidden_states.shape == (544, model.config.text_config.hidden_size)


def test_without_memaug_the_decoder_reads_the_decayed_tokens():
    """`use_memaug=False` is the hand-made compression baseline: decayed tokens go straight to the decoder."""
    model = tiny_model(use_memaug=False, spatial_forgetting_mode="uniform")
    n = num_video_tokens(9, model.config)
    with torch.no_grad():
        out = model(input_ids=video_prompt(n, [5, 6], [7]), pixel_values_videos=frames(9), video_num_frames=[9])
        memory = model.encode_video(pixel_values_videos=frames(9), video_num_frames=[9]).frame_tokens[0]
        memory = memory[resample_frame_indices(9, model.config.memory_min_frames)]
        expected = decayed_video_tokens(memory, model.model.image_newline, model.config)
    torch.testing.assert_close(out.video_hidden_states, expected.embeds)


def test_text_only_samples_cost_no_vision_compute(model):
    calls = count_vision_calls(model)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        plain = model.lm_head(model.model.language_model(input_ids=ids).last_hidden_state)
    assert calls[0] == 0
    torch.testing.assert_close(logits, plain)


def test_text_only_training_batch_keeps_multimodal_parameters_in_the_graph():
    """DDP and ZeRO need every trainable parameter in the graph; the price is one token, not a dummy image."""
    model = tiny_model().train()
    calls = count_vision_calls(model)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert calls[0] == 0
    for name in ("multi_modal_projector.linear_1.weight", "memaug.layers.0.cross_attn.kv_proj.weight", "image_newline"):
        grad = model.model.get_parameter(name).grad
        assert grad is not None and torch.count_nonzero(grad) == 0, name


def test_single_and_multi_image_samples_in_one_batch_with_text_and_video():
    model = tiny_model()
    per_image = num_image_tokens(model.config)
    assert per_image == 26  # 25 of the 10 x 10 patches + newline
    n_video = num_video_tokens(4, model.config)
    length = 2 + 2 * per_image + 1 + 1
    single = [1, 2] + [IMAGE_TOKEN] * per_image + [3] * (length - 2 - per_image)
    double = [1, 2] + [IMAGE_TOKEN] * per_image + [4] + [IMAGE_TOKEN] * per_image + [5]
    text = [6] * length
    images = frames(3, seed=1)
    video = frames(4, seed=2)
    video_ids = video_prompt(n_video, [7, 8], [9])
    with torch.no_grad():
        batch = model(input_ids=torch.tensor([single, text, double]), pixel_values=images).logits
        alone = [
            model(input_ids=torch.tensor([single]), pixel_values=images[:1]).logits,
            model(input_ids=torch.tensor([text])).logits,
            model(input_ids=torch.tensor([double]), pixel_values=images[1:]).logits,
        ]
        out = model(input_ids=video_ids, pixel_values_videos=video, video_num_frames=[4])
    torch.testing.assert_close(batch, torch.cat(alone), rtol=1e-4, atol=1e-5)
    assert out.logits.shape[1] == video_ids.shape[1]


def test_sdpa_and_eager_models_agree():
    n = num_video_tokens(5, tiny_config())
    ids = video_prompt(n, [5, 6, 7], [8, 9])
    outputs = {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = HourLlavaForConditionalGeneration._from_config(
            tiny_config(memaug_eager_max_scores=1_000_000), attn_implementation=implementation
        ).eval()
        assert model.model.memaug.layers[0].cross_attn.config._attn_implementation == implementation
        # 1e6 scores over 8,320 memory tokens and 4 heads: eager attends 30 queries at a time, in 19 chunks.
        with torch.no_grad():
            outputs[implementation] = model(input_ids=ids, pixel_values_videos=frames(5), video_num_frames=[5]).logits
    torch.testing.assert_close(outputs["sdpa"], outputs["eager"], rtol=1e-4, atol=1e-4)


def test_mismatched_placeholders_name_the_sample_and_the_counts(model):
    n = num_video_tokens(5, model.config)
    with pytest.raises(HourLlavaInputError, match=r"sample 0: 500 <video> placeholders.*544 decayed tokens"):
        model(input_ids=video_prompt(500, [5], [6]), pixel_values_videos=frames(5), video_num_frames=[5])
    with pytest.raises(HourLlavaInputError, match="video.*left over"):
        model(input_ids=torch.tensor([[5, 6]]), pixel_values_videos=frames(5), video_num_frames=[5])
    with pytest.raises(HourLlavaInputError, match="no video is left"):
        model(input_ids=torch.cat([video_prompt(n, [5], [6])] * 2), pixel_values_videos=frames(5), video_num_frames=[5])
    both = torch.tensor([[IMAGE_TOKEN] * num_image_tokens(model.config) + [VIDEO_TOKEN] * n])
    with pytest.raises(HourLlavaInputError, match="both <video> and <image>"):
        model(input_ids=both, pixel_values=frames(1), pixel_values_videos=frames(5), video_num_frames=[5])
    with pytest.raises(HourLlavaInputError, match="zero frames"):
        model(input_ids=video_prompt(n, [5], [6]), pixel_values_videos=frames(5), video_num_frames=[5, 0])
    with pytest.raises(HourLlavaInputError, match="needs `video_num_frames`"):
        model(input_ids=video_prompt(n, [5], [6]), pixel_values_videos=frames(5))
    with pytest.raises(HourLlavaInputError, match="one of pixel_values_videos, video_features or video_memory"):
        model(input_ids=video_prompt(n, [5], [6]), pixel_values_videos=frames(5), video_features=torch.zeros(5, 64, 32))


def test_a_llava_onevision_checkpoint_loads_by_renaming_alone():
    """Same module names as transformers' LLaVA-OneVision: only MemAug is new."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    ours = tiny_model()
    config = ours.config
    torch.manual_seed(1)
    onevision = LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(vision_config=config.vision_config.to_dict(), text_config=config.text_config.to_dict())
    ).eval()
    result = ours.load_state_dict(onevision.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(key.startswith("model.memaug.") for key in result.missing_keys)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, onevision(input_ids=ids).logits)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = {}
    for checkpointing in (False, True):
        model = tiny_model(spatial_forgetting_mode="uniform").train()
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        n = num_video_tokens(3, model.config)
        ids = video_prompt(n, [5, 6], [7, 8, 9])
        labels = torch.where(ids == VIDEO_TOKEN, -100, ids)
        model(input_ids=ids, pixel_values_videos=frames(3), video_num_frames=[3], labels=labels).loss.backward()
        grads[checkpointing] = model.model.memaug.layers[0].cross_attn.kv_proj.weight.grad.clone()
    assert torch.count_nonzero(grads[False]) > 0
    torch.testing.assert_close(grads[True], grads[False])


def test_beam_search_repeats_each_samples_images_with_it():
    model = tiny_model()
    per_image = num_image_tokens(model.config)
    double = [1, 2] + [IMAGE_TOKEN] * per_image + [4] + [IMAGE_TOKEN] * per_image + [5]
    single = [1, 2, 3] + [IMAGE_TOKEN] * per_image + [6] * (per_image + 1)
    images = frames(3, seed=4)
    settings = dict(max_new_tokens=3, num_beams=2, num_return_sequences=2, do_sample=False, pad_token_id=0)
    batch = model.generate(input_ids=torch.tensor([double, single]), pixel_values=images, **settings)
    alone = torch.cat(
        [
            model.generate(input_ids=torch.tensor([double]), pixel_values=images[:2], **settings),
            model.generate(input_ids=torch.tensor([single]), pixel_values=images[2:], **settings),
        ]
    )
    assert torch.equal(batch, alone)


def test_keyframe_selection_on_frozen_vision_features_is_a_criterion_training_cannot_move(tmp_path):
    """`temporal_selection_features="vision"`: keyframes come from the tower's pooled features before the projector,
    so changing the projector (what stage-3 training does) leaves the chosen frames as they were; on the projected
    memory ("memory") they move with it. Memories carry the summaries through save/load and indexing."""
    import copy

    video = frames(160, seed=3)
    video[40:] += 2.0  # a scene change at frame 40, in pixels

    def kept_frames(model, memory) -> list[int]:
        summaries = memory.vision_summaries[0] if memory.vision_summaries else memory.frame_tokens[0].mean(1)
        return temporal_forgetting(160, model.config, frame_summaries=summaries).tolist()

    for features in ("vision", "memory"):
        model = tiny_model(use_memaug=False, temporal_forgetting_mode="keyframe", temporal_selection_features=features,
                           spatial_forgetting_mode="uniform")  # fmt: skip
        retrained = copy.deepcopy(model)
        weight = retrained.model.multi_modal_projector.linear_1.weight
        with torch.no_grad():
            weight.mul_(torch.rand(weight.shape, generator=torch.Generator().manual_seed(1)) * 4)
        ids = video_prompt(num_video_tokens(160, model.config), [5, 6], [7])
        chosen = []
        for candidate in (model, retrained):
            with torch.no_grad():
                memory = candidate.encode_video(pixel_values_videos=video, video_num_frames=[160])
                out = candidate(input_ids=ids, video_memory=memory)
                summaries = memory.vision_summaries[0] if memory.vision_summaries else None
                newline = candidate.model.image_newline
                expected = decayed_video_tokens(
                    memory.frame_tokens[0], newline, candidate.config, vision_summaries=summaries
                )
            torch.testing.assert_close(out.video_hidden_states, expected.embeds)  # the forward selects these frames
            chosen.append(kept_frames(candidate, memory))
        if features == "vision":
            assert memory.vision_summaries[0].shape == (160, model.config.vision_config.hidden_size)
            assert chosen[0] == chosen[1] and 40 in chosen[0]
            memory.save(tmp_path / "memory.safetensors")
            loaded = type(memory).load(tmp_path / "memory.safetensors")
            assert torch.equal(loaded.vision_summaries[0], memory.vision_summaries[0])
            assert torch.equal((loaded + loaded)[[1]].vision_summaries[0], memory.vision_summaries[0])
        else:
            assert memory.vision_summaries is None and chosen[0] != chosen[1]
    with pytest.raises(ValueError, match="temporal_selection_features='memory'"):
        tiny_config(temporal_forgetting_mode="question", temporal_selection_features="vision")
