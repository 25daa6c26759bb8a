"""The converter against tiny checkpoints written in the released layouts.

Sources are written here from the key tables of the reference (official Hour-LLaVA, LLaVA-NeXT code: `model.layers`,
`model.mm_projector.0/2`, `model.vision_tower.vision_tower.vision_model`, `model.vision_resampler.layers.N.{Wqkv,
Wo, Wq, Wkv, mlp.0/2, norm1/2/3}`) and of llava-hf (`language_model.model`, `vision_tower.vision_model`,
`multi_modal_projector`, or the v5 `model.*` names), not with the converter's own tables. A converted folder must
give the logits of a model built directly from the same tensors, with a video in the prompt so that the vision
tower, projector, newline, MemAug and decoder all take part.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import torch
import yaml
from isolated import run_isolated
from safetensors import safe_open
from safetensors.torch import save_file

from dataset_builder.synthetic_video import write_video
from hour_llava_testing.tiny_tokenizer import build_tokenizer
from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor, num_video_tokens
from modeling_hour_llava.convert import ConversionError, convert, main

from conftest import tiny_model, video_prompt

TINY_VISION_HEADS = {"num_attention_heads": 2}  # not visible in tensor shapes; official configs do not say
# The reference's MemAug names (official_hour_llava.md section 3.2) for each of ours.
OFFICIAL_MEMAUG = {
    "self_attn.qkv_proj": "self_attn.Wqkv",
    "self_attn.o_proj": "self_attn.Wo",
    "cross_attn.q_proj": "cross_attn.Wq",
    "cross_attn.kv_proj": "cross_attn.Wkv",
    "cross_attn.o_proj": "cross_attn.Wo",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
    "self_attn_norm": "norm1",
    "cross_attn_norm": "norm2",
    "mlp_norm": "norm3",
}
LMMS_PREFIXES = {  # ours -> LLaVA-NeXT code
    "model.language_model.": "model.",
    "model.vision_tower.": "model.vision_tower.vision_tower.vision_model.",
    "model.multi_modal_projector.linear_1.": "model.mm_projector.0.",
    "model.multi_modal_projector.linear_2.": "model.mm_projector.2.",
}
HF_DISK_PREFIXES = {  # v5 names -> llava-hf hub files
    "model.language_model.": "language_model.model.",
    "lm_head.": "language_model.lm_head.",
    "model.vision_tower.": "vision_tower.vision_model.",
    "model.multi_modal_projector.": "multi_modal_projector.",
    "model.image_newline": "image_newline",
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def perturbed(model: HourLlavaForConditionalGeneration, seed: int) -> HourLlavaForConditionalGeneration:
    """Every parameter moved off its init (LayerNorm weights off 1, biases off 0), so that swapping two tensors of
    the same shape changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def token_settings(tokenizer) -> dict:
    return dict(
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        text={"vocab_size": len(tokenizer)},
    )


def renamed(state: dict, prefixes: dict) -> dict:
    out = {}
    for name, tensor in state.items():
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        out[name if prefix is None else prefixes[prefix] + name[len(prefix) :]] = tensor.contiguous()
    return out


def official_state_dict(model: HourLlavaForConditionalGeneration, tied: bool) -> dict:
    """Our model's tensors under the official names, with the SigLIP head the reference keeps on disk."""
    state = {}
    for name, tensor in model.state_dict().items():
        match = re.match(r"model\.memaug\.layers\.(\d+)\.(.+)\.(weight|bias)$", name)
        if match:
            name = f"model.vision_resampler.layers.{match[1]}.{OFFICIAL_MEMAUG[match[2]]}.{match[3]}"
        state[name] = tensor
    state = renamed(state, LMMS_PREFIXES)
    if tied:
        del state["lm_head.weight"]
    width = model.config.vision_config.hidden_size
    state["model.vision_tower.vision_tower.vision_model.head.probe"] = torch.randn(1, 1, width)
    return state


def official_config(model: HourLlavaForConditionalGeneration, tied: bool) -> dict:
    """The LLaVA-NeXT-style config.json of the reference: Qwen2 fields at the top and the mm_* fields."""
    text = model.config.text_config
    return {
        "architectures": ["HourLlavaQwenForCausalLM"],
        "model_type": "llava",  # what the hub tags show; the converter must not rely on it
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "vocab_size": text.vocab_size,
        "rope_theta": text.rope_parameters["rope_theta"],
        "rms_norm_eps": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings,
        "tie_word_embeddings": tied,
        "rope_scaling": None,
        "torch_dtype": "float32",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_hidden_size": model.config.vision_config.hidden_size,
        "mm_vision_select_layer": -2,
        "mm_projector_type": "mlp2x_gelu",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_resampler_type": "memaug",
        "memaug_depth": model.config.memaug_num_layers,
        "spatial_sampling_type": "random",
        "mm_spatial_pool_mode": "bilinear",
        "image_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": "(1x1),(1x2),(1x3),(1x4),(1x5),(1x6),(2x1),(6x6)",
        "add_time_instruction": True,
        "tokenizer_model_max_length": 32768,
    }


def write_source(folder, state: dict, config: dict, tokenizer, shards: int = 2) -> None:
    folder.mkdir(parents=True)
    names = sorted(state)
    for index in range(shards):
        save_file({n: state[n] for n in names[index::shards]}, str(folder / f"model-{index:05d}.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def frames(num_frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(num_frames, 3, 140, 140, generator=torch.Generator().manual_seed(seed))


def video_logits(model: HourLlavaForConditionalGeneration) -> torch.Tensor:
    config = model.config
    ids = video_prompt(num_video_tokens(4, config), [5, 6, 7], [8, 9])
    ids[ids == 319] = config.video_token_index  # conftest's prompt uses the tiny default id
    with torch.no_grad():
        return model(input_ids=ids, pixel_values_videos=frames(4), video_num_frames=[4]).logits


def stored_names(folder) -> set[str]:
    names = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            names.update(handle.keys())
    return names


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_official_checkpoint_converts_to_the_same_model(tmp_path, tokenizer, tied):
    direct = perturbed(tiny_model(seed=3, tie_word_embeddings=tied, **token_settings(tokenizer)), seed=4)
    source = tmp_path / "official"
    write_source(source, official_state_dict(direct, tied), official_config(direct, tied), tokenizer)
    report = convert(str(source), tmp_path / "out", vision_config=TINY_VISION_HEADS, max_shard_size="100KB")
    assert report.kind == "official" and not report.initialised
    assert set(report.dropped) == {"model.vision_tower.vision_tower.vision_model.head.probe"}
    out = tmp_path / "out"
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").exists()
    converted = HourLlavaForConditionalGeneration.from_pretrained(out).eval()
    assert converted.config.tie_word_embeddings == tied
    assert ("lm_head.weight" in stored_names(out)) != tied
    for name, tensor in direct.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    torch.testing.assert_close(video_logits(converted), video_logits(direct), rtol=0, atol=0)
    config = converted.config
    assert (config.memaug_num_layers, config.vision_config.num_hidden_layers) == (2, 2)
    assert config.spatial_forgetting_mode == "random" and config.image_grid_pinpoints[-1] == [840, 840]
    processor = HourLlavaProcessor.from_pretrained(out)
    assert processor.token_geometry == HourLlavaProcessor.geometry_from_config(config)
    assert processor.tokenizer.model_max_length == 32768 and processor.add_time_instruction


def onevision_pair(tokenizer, tied: bool, seed: int = 5):
    """A tiny LLaVA-OneVision model and an Hour-LLaVA one with the same widths (MemAug aside)."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    ours = tiny_model(seed=seed, tie_word_embeddings=tied, **token_settings(tokenizer))
    text = {**ours.config.text_config.to_dict(), "tie_word_embeddings": tied}
    config = LlavaOnevisionConfig(
        vision_config=ours.config.vision_config.to_dict(),
        text_config=text,
        image_token_index=ours.config.image_token_index,
        video_token_index=ours.config.video_token_index,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed + 1)
    return ours, perturbed(LlavaOnevisionForConditionalGeneration(config).eval(), seed + 2)


def lmms_onevision_config(onevision) -> dict:
    text = onevision.config.text_config
    return {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        **{k: getattr(text, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")},
        **{k: getattr(text, k) for k in ("num_attention_heads", "num_key_value_heads", "rms_norm_eps")},
        "rope_theta": text.rope_parameters["rope_theta"],
        "tie_word_embeddings": onevision.config.tie_word_embeddings,
        "torch_dtype": "float32",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_hidden_size": onevision.config.vision_config.hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "image_aspect_ratio": "anyres_max_9",
    }


@pytest.mark.parametrize(
    ("layout", "tied"),
    [("hf-disk", True), ("hf-v5", False), ("lmms", False), ("lmms", True)],
)
def test_llava_onevision_converts_with_fresh_memaug(tmp_path, tokenizer, layout, tied):
    ours, onevision = onevision_pair(tokenizer, tied)
    state = {k: v for k, v in onevision.state_dict().items() if not (tied and k == "lm_head.weight")}
    if layout == "hf-disk":
        state, config = renamed(state, HF_DISK_PREFIXES), onevision.config.to_dict()
    elif layout == "hf-v5":
        config = onevision.config.to_dict()
    else:
        state, config = renamed(state, LMMS_PREFIXES), lmms_onevision_config(onevision)
    source = tmp_path / "src"
    write_source(source, state, config, tokenizer, shards=1)
    vision = TINY_VISION_HEADS if layout == "lmms" else {}
    report = convert(str(source), tmp_path / "out", vision_config=vision, memaug_layers=3)
    assert report.kind == "llava-onevision" and report.memaug_initialised
    assert "MemAug: freshly initialised" in report.render()
    converted = HourLlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    assert converted.config.memaug_num_layers == 3 and converted.config.tie_word_embeddings == tied
    reference = onevision.state_dict()
    for name, tensor in converted.state_dict().items():
        if not name.startswith("model.memaug."):
            assert torch.equal(tensor, reference[name]), name
    memaug = converted.model.memaug.layers[2]
    assert abs(memaug.cross_attn.kv_proj.weight.std().item() - 0.02) < 0.004
    assert torch.count_nonzero(memaug.cross_attn.kv_proj.bias) == 0 and torch.all(memaug.mlp_norm.weight == 1)
    # The model built directly: LLaVA-OneVision's tensors by name, MemAug from the converted folder.
    direct = tiny_model(memaug_num_layers=3, tie_word_embeddings=tied, **token_settings(tokenizer))
    assert direct.load_state_dict(onevision.state_dict(), strict=False).unexpected_keys == []
    direct.model.memaug.load_state_dict(converted.model.memaug.state_dict())
    torch.testing.assert_close(video_logits(converted), video_logits(direct), rtol=0, atol=0)


def test_a_missing_memaug_tensor_is_refused_by_name(tmp_path, tokenizer):
    model = tiny_model(**token_settings(tokenizer))
    state = official_state_dict(model, tied=False)
    del state["model.vision_resampler.layers.1.cross_attn.Wkv.bias"]
    write_source(tmp_path / "src", state, official_config(model, tied=False), tokenizer)
    with pytest.raises(ConversionError, match=r"model\.vision_resampler\.layers\.1\.cross_attn\.Wkv\.bias"):
        convert(str(tmp_path / "src"), tmp_path / "out", vision_config=TINY_VISION_HEADS)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["src"]


def test_wrong_kind_shape_and_unknown_tensors_are_refused(tmp_path, tokenizer):
    model = tiny_model(**token_settings(tokenizer))
    state, config = official_state_dict(model, tied=False), official_config(model, tied=False)
    write_source(tmp_path / "official", state, config, tokenizer)
    with pytest.raises(ConversionError, match="use --from official"):
        convert(str(tmp_path / "official"), tmp_path / "out", "llava-onevision", vision_config=TINY_VISION_HEADS)
    wide = {**state, "model.mm_projector.2.bias": torch.zeros(65)}
    write_source(tmp_path / "wide", wide, config, tokenizer)
    with pytest.raises(ConversionError, match=r"model\.mm_projector\.2\.bias: \(65,\), expected \(64,\)"):
        convert(str(tmp_path / "wide"), tmp_path / "out", vision_config=TINY_VISION_HEADS)
    write_source(tmp_path / "extra", {**state, "model.mystery.weight": torch.zeros(2)}, config, tokenizer)
    with pytest.raises(ConversionError, match=r"model\.mystery\.weight"):
        convert(str(tmp_path / "extra"), tmp_path / "out", vision_config=TINY_VISION_HEADS)
    assert not (tmp_path / "out").exists()


def test_pickle_weights_need_the_explicit_flag(tmp_path, tokenizer, capsys):
    model = tiny_model(**token_settings(tokenizer))
    source = tmp_path / "src"
    source.mkdir()
    torch.save(official_state_dict(model, tied=False), source / "pytorch_model.bin")
    (source / "config.json").write_text(json.dumps(official_config(model, tied=False)))
    tokenizer.save_pretrained(source)
    args = [str(source), str(tmp_path / "out"), "--vision-config", json.dumps(TINY_VISION_HEADS)]
    assert main(args) == 1
    assert "--allow-pickle" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main([*args, "--allow-pickle", "--report", str(tmp_path / "report.json")]) == 0
    converted = HourLlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(video_logits(converted), video_logits(model), rtol=0, atol=0)
    assert json.loads((tmp_path / "report.json").read_text())["kind"] == "official"


SNIPPET_CHILD = textwrap.dedent(
    """
    import runpy
    runpy.run_path(sys.argv[1], run_name="__main__")
    """
)


def test_model_card_metadata_and_its_usage_snippet_runs(tmp_path, tokenizer):
    model = tiny_model(**token_settings(tokenizer))
    write_source(tmp_path / "src", official_state_dict(model, True), official_config(model, True), tokenizer)
    out = tmp_path / "out"
    convert(str(tmp_path / "src"), out, vision_config=TINY_VISION_HEADS, repo_id="someone/hour-llava-tiny")
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "video-text-to-text" and meta["library_name"] == "transformers"
    assert {"license", "tags", "datasets"} <= set(meta) and "jylins/videomarathon" in meta["datasets"]
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert 'model_id = "someone/hour-llava-tiny"' in snippet
    video = write_video(tmp_path / "clip.mp4", num_frames=40, fps=10)
    snippet = snippet.replace('"someone/hour-llava-tiny"', repr(str(out))).replace('"video.mp4"', repr(str(video)))
    (tmp_path / "snippet.py").write_text(snippet)
    workdir = tmp_path / "child"
    workdir.mkdir()
    run_isolated(SNIPPET_CHILD, [str(tmp_path / "snippet.py")], workdir, tmp_path / "hf_home")


def test_media_tokens_are_added_to_a_tokenizer_that_lacks_them(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from modeling_hour_llava.convert import ConversionReport, load_tokenizer

    words = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "what", "happens"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>").save_pretrained(tmp_path)
    report = ConversionReport(source="src", kind="official", layout="lmms")
    tokenizer, ids = load_tokenizer(tmp_path, {"tokenizer_model_max_length": 64}, len(words) + 2, report)
    assert ids == {"<image>": len(words), "<video>": len(words) + 1} and tokenizer.model_max_length == 64
    assert tokenizer("what <video> happens")["input_ids"] == [3, ids["<video>"], 4]
    assert any("added" in note for note in report.notes)
    with pytest.raises(ConversionError, match=r"<image> has id 5, outside the decoder's 5 embedding rows"):
        load_tokenizer(tmp_path, {}, len(words), report)


# ---------------------------------------------------------------------------------------------------------------------
# Sources the converter must refuse rather than convert wrongly
# ---------------------------------------------------------------------------------------------------------------------
def word_tokenizer(folder, words: list[str]):
    """A word-level fast tokenizer with exactly `words` (ids in order), saved to `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>")
    tokenizer.save_pretrained(folder)
    return tokenizer


def test_a_source_without_a_tokenizer_needs_the_flag(tmp_path, tokenizer):
    """The issue's case: with `model_type: qwen2` and no tokenizer files, transformers builds an empty tokenizer
    (3 tokens, `encode("What colour?") == []`); the converter refuses and names --tokenizer, then converts with it."""
    model = tiny_model(**token_settings(tokenizer))
    config = {**official_config(model, tied=False), "model_type": "qwen2"}
    write_source(tmp_path / "src", official_state_dict(model, tied=False), config, None)
    with pytest.raises(ConversionError, match=r"holds no tokenizer .*pass --tokenizer"):
        convert(str(tmp_path / "src"), tmp_path / "out", vision_config=TINY_VISION_HEADS)
    assert not (tmp_path / "out").exists()
    tokenizer.save_pretrained(tmp_path / "tok")
    convert(str(tmp_path / "src"), tmp_path / "out", vision_config=TINY_VISION_HEADS, tokenizer=str(tmp_path / "tok"))
    converted = HourLlavaProcessor.from_pretrained(tmp_path / "out").tokenizer
    assert converted.encode("What colour?") == tokenizer.encode("What colour?") != []
    assert len(converted) == len(tokenizer)


def test_a_tokenizer_with_a_folder_without_one_is_refused_by_name(tmp_path, tokenizer):
    """Own case: --tokenizer pointing at a folder that holds only a tokenizer_config.json."""
    model = tiny_model(**token_settings(tokenizer))
    write_source(tmp_path / "src", official_state_dict(model, False), official_config(model, False), None)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConversionError, match=rf"{tmp_path / 't'} holds no tokenizer"):
        convert(str(tmp_path / "src"), tmp_path / "out", vision_config=TINY_VISION_HEADS, tokenizer=str(tmp_path / "t"))
    with pytest.raises(ConversionError, match=r"--tokenizer '.*/nowhere' is neither a folder nor a Hub repo id"):
        convert(str(tmp_path / "src"), tmp_path / "out", vision_config=TINY_VISION_HEADS, tokenizer="./nowhere")


def test_a_tokenizer_larger_than_the_embeddings_is_refused(tmp_path, capsys):
    """261 tokens for 256 embedding rows: ids 256..260 would index past the embeddings (an IndexError in forward
    after converting); refused with the counts."""
    words = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"] + [f"w{i}" for i in range(256)]
    folder = tmp_path / "src"
    folder.mkdir()
    word_tokenizer(folder, words)
    model = tiny_model(image_token_index=3, video_token_index=4, text={"vocab_size": 256})
    config = {**official_config(model, tied=False), "vocab_size": 256}
    save_file(official_state_dict(model, tied=False), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    code = main([str(folder), str(tmp_path / "out"), "--vision-config", json.dumps(TINY_VISION_HEADS)])
    error = capsys.readouterr().err
    assert code == 1 and "the tokenizer has 261 tokens but the decoder has 256 embedding rows" in error
    assert "256..260" in error and not (tmp_path / "out").exists()


def test_the_vision_head_count_is_never_guessed(tmp_path, tokenizer):
    """No tensor shows SigLIP's head count: a source config without it (and whose named tower does not match the
    tensors) is refused naming --vision-config; a `vision_config` with it converts without the flag; a count that
    does not divide the width is refused (own case)."""
    model = tiny_model(**token_settings(tokenizer))
    state, config = official_state_dict(model, tied=False), official_config(model, tied=False)
    write_source(tmp_path / "named", state, config, tokenizer)
    with pytest.raises(ConversionError, match=r"num_attention_heads .*differ.*--vision-config") as error:
        convert(str(tmp_path / "named"), tmp_path / "out")
    assert "siglip-so400m-patch14-384" in str(error.value)
    unnamed = {k: v for k, v in config.items() if k != "mm_vision_tower"}
    write_source(tmp_path / "unnamed", state, unnamed, tokenizer)
    with pytest.raises(ConversionError, match=r"\(no vision_config\).*--vision-config"):
        convert(str(tmp_path / "unnamed"), tmp_path / "out")
    with pytest.raises(ConversionError, match=r"num_attention_heads=5 does not divide the tower's width 32"):
        convert(str(tmp_path / "unnamed"), tmp_path / "out", vision_config={"num_attention_heads": 5})
    assert not (tmp_path / "out").exists()
    nested = {**config, "vision_config": {"num_attention_heads": 2, "hidden_size": 32}}
    write_source(tmp_path / "nested", state, nested, tokenizer)
    convert(str(tmp_path / "nested"), tmp_path / "out")
    assert (
        HourLlavaForConditionalGeneration.from_pretrained(tmp_path / "out").config.vision_config.num_attention_heads
        == 2
    )


def test_the_named_so400m_tower_gives_its_published_head_count():
    """The reference's configs name `google/siglip-so400m-patch14-384` and carry no vision_config: with tensors of
    that tower's shapes (on the meta device here) its published 16 heads are used, and the report says so."""
    from modeling_hour_llava.convert import ConversionReport, vision_config_from

    tower = "model.vision_tower."
    tensors = {
        f"{tower}embeddings.patch_embedding.weight": torch.empty(1152, 3, 14, 14, device="meta"),
        f"{tower}embeddings.position_embedding.weight": torch.empty(729, 1152, device="meta"),
        f"{tower}encoder.layers.0.mlp.fc1.weight": torch.empty(4304, 1152, device="meta"),
    }
    report = ConversionReport(source="src", kind="official", layout="lmms")
    source = {"mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_hidden_size": 1152}
    vision = vision_config_from(source, tensors, {}, report)
    assert vision["num_attention_heads"] == 16 and vision["image_size"] == 384
    assert any("16 (the published config of google/siglip-so400m-patch14-384)" in note for note in report.notes)
    # llava-hf configs state 384 px; the 27 x 27 position grid only shows 384 // 14. An image size that does not
    # give the stored grid is refused.
    nested = {"vision_config": {"image_size": 384, "num_attention_heads": 16, "hidden_size": 1152}}
    assert vision_config_from(nested, tensors, {}, report)["image_size"] == 384
    with pytest.raises(ConversionError, match=r"image_size=420 .* gives a 30-patch side, but .* hold 27 x 27"):
        vision_config_from(source, tensors, {"image_size": 420}, report)


def test_a_config_that_is_not_an_object_and_a_vision_config_that_is_not_one(tmp_path, capsys):
    """Own case: no raw AttributeError from a config.json holding a list, or from --vision-config '[16]'."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("[1, 2]")
    assert main([str(tmp_path / "src"), str(tmp_path / "out")]) == 1
    assert "config.json holds a JSON list; a config is a JSON object" in capsys.readouterr().err
    assert main([str(tmp_path / "src"), str(tmp_path / "out"), "--vision-config", "[16]"]) == 1
    assert "--vision-config must be a JSON object" in capsys.readouterr().err
