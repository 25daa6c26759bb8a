"""HourLlavaProcessor: the reference's prompt, placeholder counts the model agrees with, masks, images, features,
and a remote-code reload that gives identical tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from isolated import run_isolated
from transformers import SiglipImageProcessor

from dataset_builder.synthetic_video import read_frame_index, write_video
from hour_llava_testing.tiny_tokenizer import build_tokenizer
from modeling_hour_llava import (
    HourLlavaInputError,
    HourLlavaProcessor,
    HourLlavaVideoProcessor,
    VideoDecodeError,
    num_image_tokens,
    num_video_tokens,
)
from modeling_hour_llava.features_hour_llava import save_feature_file

from conftest import tiny_model

SIZE = 140  # the tiny vision tower's input size


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def matching_model(tokenizer, **overrides):
    return tiny_model(
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        text={"vocab_size": len(tokenizer)},
        **overrides,
    )


@pytest.fixture(scope="module")
def model(tokenizer):
    return matching_model(tokenizer)


def make_processor(tokenizer, model, **kwargs) -> HourLlavaProcessor:
    return HourLlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": SIZE, "width": SIZE}),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(size={"height": SIZE, "width": SIZE}),
        token_geometry=HourLlavaProcessor.geometry_from_config(model.config),
        **kwargs,
    )


@pytest.fixture(scope="module")
def processor(tokenizer, model):
    return make_processor(tokenizer, model)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """10 s at 30 fps: 10 one-per-second frames are fewer than 128, so 128 frames are spread over the clip."""
    return str(write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", num_frames=300, fps=30))


def video_question(path: str, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": question}]}]


def encode(processor, messages, **kwargs):
    options = {"tokenize": True, "return_dict": True, "return_tensors": "pt", "add_generation_prompt": True}
    return processor.apply_chat_template(messages, **{**options, **kwargs})


def model_inputs(batch) -> dict:
    return {k: v for k, v in batch.items() if k not in ("assistant_masks",)}


def test_chat_template_renders_the_reference_prompt(processor):
    rendered = processor.apply_chat_template(video_question("v.mp4", "What happens?"), add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<video>\nWhat happens?<|im_end|>\n<|im_start|>assistant\n"
    )
    # The media tag moves to the front of a single-media message, as the reference does.
    late = [{"role": "user", "content": [{"type": "text", "text": "What happens?"}, {"type": "video", "path": "v"}]}]
    assert processor.apply_chat_template(late, add_generation_prompt=True) == rendered


def test_video_placeholders_match_the_model_and_the_time_instruction(processor, model, tokenizer, clip):
    batch = encode(processor, video_question(clip, "What colour is the square?"))
    frames = batch["pixel_values_videos"]
    assert frames.shape == (128, 3, SIZE, SIZE) and frames.dtype == torch.uint8
    assert batch["video_num_frames"].tolist() == [128]
    assert [read_frame_index(f.numpy()) for f in frames] == np.linspace(0, 299, 128, dtype=int).tolist()
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    assert int((batch["input_ids"] == video_id).sum()) == num_video_tokens(128, model.config) == 544
    text = tokenizer.decode(batch["input_ids"][0][batch["input_ids"][0] != video_id])
    assert (
        "<|im_start|>user\n\nThe video lasts for 10.00 seconds, and 128 frames are uniformly sampled from it. "
        "Please answer the following questions related to this video.\nWhat colour is the square?<|im_end|>"
    ) in text
    with torch.no_grad():
        out = model(**model_inputs(batch))
    assert out.video_hidden_states.shape[0] == 544
    generated = model.generate(**model_inputs(batch), max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3


def test_long_video_keeps_one_frame_per_second(processor, model, tmp_path):
    path = write_video(tmp_path / "long.mkv", num_frames=2 * 200, fps=2)  # 200 s: 200 one-per-second frames
    batch = encode(processor, video_question(str(path), "Q?"))
    assert [read_frame_index(f.numpy()) for f in batch["pixel_values_videos"]] == list(range(0, 400, 2))
    assert int((batch["input_ids"] == model.config.video_token_id).sum()) == 50 * 17  # 200 // 4 frames kept


def test_a_streamed_video_gives_the_memory_and_prompt_of_the_one_call_path(processor, model, tmp_path):
    # 200 s in chunks of 48 frames (vision_chunk_size is 128): the tower sees the stream while it is decoded.
    path = str(write_video(tmp_path / "long.mp4", num_frames=2 * 200, fps=2))
    messages = video_question(path, "What came after the red scene?")
    batch = encode(processor, messages)
    stream = processor.video_processor.open_stream(path, chunk_frames=48)
    assert (stream.num_frames, stream.duration) == (200, 200.0)  # known before decoding, for the prompt
    prompt = processor.text_for_encoded_videos(
        processor.apply_chat_template(messages, add_generation_prompt=True),
        [stream.num_frames],
        [stream.duration],
        return_tensors="pt",
    )
    assert torch.equal(prompt["input_ids"], batch["input_ids"])
    with torch.no_grad():
        streamed = model.encode_video(video_streams=[stream])
        whole = model.encode_video(pixel_values_videos=batch["pixel_values_videos"], video_num_frames=[200])
    torch.testing.assert_close(streamed.frame_tokens[0], whole.frame_tokens[0], rtol=0, atol=0)
    with pytest.raises(HourLlavaInputError, match="announced 201"):
        model.encode_video(video_streams=[Announced(201, [batch["pixel_values_videos"]])])


class Announced(list):
    """A stream that announces `count` frames whatever its chunks hold."""

    def __init__(self, count: int, chunks: list):
        super().__init__(chunks)
        self.count = count

    def __len__(self) -> int:
        return self.count


def multi_turn(clip: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "video", "path": clip}, {"type": "text", "text": "What colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
        {"role": "user", "content": [{"type": "text", "text": "How many times does it appear?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "two"}]},
    ]


def test_assistant_mask_covers_the_answers_and_their_end_tokens(processor, tokenizer, clip):
    batch = encode(processor, multi_turn(clip), return_assistant_tokens_mask=True, add_generation_prompt=False)
    ids, mask = batch["input_ids"][0], batch["assistant_masks"][0].bool()
    assert tokenizer.decode(ids[mask]) == "red<|im_end|>two<|im_end|>"


def test_query_mask_policies(processor, tokenizer, clip):
    batch = encode(processor, multi_turn(clip)[:3])
    ids = batch["input_ids"][0]
    training = tokenizer.decode(ids[batch["memaug_query_mask"][0].bool()])
    # What the reference's training feeds MemAug: no specials, no "\n", no assistant turn or generation header.
    assert training == (
        "systemYou are a helpful assistant.userThe video lasts for 10.00 seconds, and 128 frames are uniformly "
        "sampled from it. Please answer the following questions related to this video.What colour is it?"
        "userHow many times does it appear?"
    )
    everything = processor(
        text=processor.apply_chat_template(multi_turn(clip)[:3], add_generation_prompt=True),
        videos=[clip],
        memaug_query_policy="all",
        return_tensors="pt",
    )
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    assert torch.equal(everything["input_ids"], batch["input_ids"])
    assert torch.equal(everything["memaug_query_mask"][0].bool(), ids != video_id)


def test_training_policy_equals_the_references_ignored_labels(processor, tokenizer, clip):
    """Reference Sec. 4.3: assistant turns (header, answer, trailer) are targets, and so are "\\n", <|im_start|>,
    <|im_end|> everywhere; MemAug reads the tokens whose label is ignored."""
    batch = encode(processor, multi_turn(clip), add_generation_prompt=False)
    ids = batch["input_ids"][0]
    assistant = processor.assistant_turn_mask(batch["input_ids"])[0]
    labels = torch.where(assistant, ids, torch.full_like(ids, -100))
    always = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")] + [203])
    assert tokenizer.decode([203]) == "\n"
    labels = torch.where(torch.isin(ids, always), ids, labels)
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    expected = (labels == -100) & (ids != video_id)
    assert torch.equal(batch["memaug_query_mask"][0].bool(), expected)
    turns = "<|im_start|>assistant\nred<|im_end|>\n<|im_start|>assistant\ntwo<|im_end|>\n"
    assert tokenizer.decode(ids[assistant]) == turns


def test_batch_of_conversations_pads_every_mask(processor, model, clip, tmp_path):
    short = str(write_video(tmp_path / "short.webm", num_frames=40, fps=10, codec="libvpx-vp9"))
    batch = processor.apply_chat_template(
        [video_question(clip, "Q one?"), video_question(short, "A longer second question, is it?")],
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        add_generation_prompt=True,
        processor_kwargs={"padding": True},
    )
    assert batch["video_num_frames"].tolist() == [128, 40]
    padding = batch["attention_mask"] == 0
    assert padding.any() and not batch["memaug_query_mask"][padding].any()
    assert batch["pixel_values_videos"].shape[0] == 168
    with torch.no_grad():
        assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_images_are_padded_to_squares_with_the_reference_grey(tokenizer, model):
    from PIL import Image

    padding = HourLlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": SIZE, "width": SIZE}),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(size={"height": SIZE, "width": SIZE}),
        token_geometry={**HourLlavaProcessor.geometry_from_config(model.config), "image_aspect_ratio": "pad"},
    )
    wide = Image.new("RGB", (100, 50), (255, 0, 0))
    messages = [{"role": "user", "content": [{"type": "image", "image": wide}, {"type": "text", "text": "Colour?"}]}]
    batch = encode(padding, messages)
    pixels = batch["pixel_values"]
    assert pixels.shape == (1, 3, SIZE, SIZE) and batch["image_num_tiles"].tolist() == [1]
    grey = (127 / 255 - 0.5) / 0.5
    assert pixels[0, :, 2, SIZE // 2].allclose(torch.full((3,), grey), atol=0.02)  # the band above the image
    assert pixels[0, 0, SIZE // 2, SIZE // 2] > 0.9  # red inside
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert int((batch["input_ids"] == image_id).sum()) == num_image_tokens(model.config)
    with torch.no_grad():
        assert model(**batch).image_hidden_states.shape[0] == num_image_tokens(model.config)


def test_a_single_image_is_tiled_and_several_are_padded(processor, model, tokenizer):
    from PIL import Image

    wide = Image.new("RGB", (300, 120), (255, 0, 0))  # best grid: 1 x 3 tiles of 140 px (120 x 300 kept whole)
    messages = [{"role": "user", "content": [{"type": "image", "image": wide}, {"type": "text", "text": "Colour?"}]}]
    batch = encode(processor, messages)
    assert batch["image_num_tiles"].tolist() == [1 + 3] and batch["image_sizes"].tolist() == [[120, 300]]
    assert batch["pixel_values"].shape == (4, 3, SIZE, SIZE)
    placeholders = int((batch["input_ids"] == tokenizer.convert_tokens_to_ids("<image>")).sum())
    with torch.no_grad():
        out = model(**batch)
    assert out.image_hidden_states.shape[0] == placeholders > num_image_tokens(model.config)
    assert model.generate(**batch, max_new_tokens=2, do_sample=False).shape[1] == batch["input_ids"].shape[1] + 2

    two = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": wide},
                {"type": "text", "text": "and"},
                {"type": "image", "image": Image.new("RGB", (40, 80), (0, 0, 255))},
                {"type": "text", "text": "Same colour?"},
            ],
        }
    ]
    rendered = processor.apply_chat_template(two, add_generation_prompt=True)
    assert "<|im_start|>user\n<image>\nand<image>\nSame colour?<|im_end|>" in rendered
    batch = encode(processor, two)
    assert batch["pixel_values"].shape[0] == 2 and batch["image_num_tiles"].tolist() == [1, 1]
    with torch.no_grad():
        assert model(**batch).image_hidden_states.shape[0] == 2 * num_image_tokens(model.config)


def test_feature_files_feed_cached_memory_repositories(processor, tokenizer, tmp_path):
    model = matching_model(tokenizer)
    features = torch.randn(200, 64, model.config.vision_config.hidden_size)
    path = tmp_path / "video.safetensors"
    save_feature_file(path, features, duration=150.0)
    batch = encode(processor, video_question(str(path), "Q?"))
    kept = np.linspace(0, 199, 150, dtype=int)  # min(stored, int(duration)) frames, spread evenly
    assert torch.equal(batch["video_features"], features[kept])
    text = tokenizer.decode(batch["input_ids"][0][batch["input_ids"][0] != model.config.video_token_id])
    assert "The video lasts for 150.00 seconds, and 150 frames are uniformly sampled from it." in text
    with torch.no_grad():
        out = model(**batch)
    assert out.video_hidden_states.shape[0] == num_video_tokens(150, model.config)


def test_bad_videos_name_the_file(processor, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("this is not a video")
    with pytest.raises(VideoDecodeError, match="broken.mp4: not a readable video container"):
        encode(processor, video_question(str(broken), "Q?"))


RELOAD_SCRIPT = """
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoVideoProcessor

folder, clip, out = sys.argv[1:4]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
video_processor = AutoVideoProcessor.from_pretrained(folder, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "video", "path": clip}, {"type": "text", "text": "What is shown?"}]}]
batch = processor.apply_chat_template(
    messages, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True
)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
torch.save({**{k: v for k, v in batch.items()}, "generated": generated,
            "classes": [type(processor).__module__, type(video_processor).__module__]}, out)
"""


def test_processor_and_model_reload_from_the_folder_without_the_package(processor, model, clip, tmp_path):
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    run_isolated(RELOAD_SCRIPT, [str(folder), clip, str(tmp_path / "out.pt")], tmp_path, tmp_path / "hf_home")
    child = torch.load(tmp_path / "out.pt")
    assert all(module.startswith("transformers_modules.") for module in child.pop("classes"))
    batch = encode(processor, video_question(clip, "What is shown?"))
    for key, value in batch.items():
        assert torch.equal(child[key], value), key
    assert torch.equal(child["generated"], model.generate(**batch, max_new_tokens=4, do_sample=False))
