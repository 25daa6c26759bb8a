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


# ---------------------------------------------------------------------------------------------------------------------
# The video processor on BaseVideoProcessor's hooks: sampling rule, options, do_sample_frames
# ---------------------------------------------------------------------------------------------------------------------
def test_frames_given_with_do_sample_frames_false_come_back_as_given(processor):
    frames = np.random.default_rng(0).integers(0, 256, (7, SIZE, SIZE, 3), dtype=np.uint8)
    out = processor.video_processor(frames, do_sample_frames=False, return_metadata=True)
    assert torch.equal(out["pixel_values_videos"], torch.from_numpy(frames).permute(0, 3, 1, 2))
    assert out["video_num_frames"].tolist() == [7]
    assert list(out["video_metadata"][0].frames_indices) == list(range(7))


def test_do_sample_frames_false_decodes_every_frame_of_a_file(processor, tmp_path):
    path = str(write_video(tmp_path / "short.mp4", num_frames=40, fps=10))
    sampled = processor.video_processor(path, min_frames=4)
    assert [read_frame_index(f.numpy()) for f in sampled["pixel_values_videos"]] == [0, 10, 20, 30]
    every = processor.video_processor(path, min_frames=4, do_sample_frames=False)
    assert [read_frame_index(f.numpy()) for f in every["pixel_values_videos"]] == list(range(40))


def test_decoded_frames_with_a_frame_rate_are_sampled_by_the_rule(processor):
    frames = torch.zeros(100, 3, SIZE, SIZE, dtype=torch.uint8)
    frames[:, 0] = torch.arange(100, dtype=torch.uint8).view(100, 1, 1)  # the red channel numbers the frame
    out = processor.video_processor(
        frames, video_metadata={"total_num_frames": 100, "fps": 10}, min_frames=4, return_metadata=True
    )
    assert out["pixel_values_videos"][:, 0, 0, 0].tolist() == list(range(0, 100, 10))  # 1 per second
    assert out["video_metadata"][0].frames_indices.tolist() == list(range(0, 100, 10))
    assert out["video_durations"].tolist() == [10.0]
    # Without metadata the frames are taken as already sampled at 1 fps: every one is kept.
    assert processor.video_processor(frames, min_frames=4)["video_num_frames"].tolist() == [100]


def test_fps_is_applied_and_num_frames_is_refused_with_the_rule(processor, clip, tmp_path):
    path = str(write_video(tmp_path / "long.mp4", num_frames=2 * 200, fps=2))  # 200 s
    assert processor.video_processor(path)["video_num_frames"].tolist() == [200]
    assert processor.video_processor(path, fps=2)["video_num_frames"].tolist() == [400]
    assert processor.video_processor(path, fps=0.5)["video_num_frames"].tolist() == [128]  # 100 < min_frames
    assert processor.video_processor(path, max_frames=50)["video_num_frames"].tolist() == [50]
    with pytest.raises(HourLlavaInputError, match=r"num_frames=32: .*1 frame\(s\) per second.*max_frames=32"):
        processor.video_processor(path, num_frames=32)
    # Through the chat template too (transformers serve sends num_frames=32), before anything is decoded.
    missing = video_question(str(tmp_path / "absent.mp4"), "Q?")
    with pytest.raises(HourLlavaInputError, match="num_frames=32"):
        encode(processor, missing, processor_kwargs={"num_frames": 32})
    batch = encode(processor, video_question(clip, "Q?"), processor_kwargs={"fps": 2, "min_frames": 4})
    assert batch["video_num_frames"].tolist() == [20]


# ---------------------------------------------------------------------------------------------------------------------
# The processor: no per-call state, token budgets, chat_template.jinja, geometry from the config
# ---------------------------------------------------------------------------------------------------------------------
def image_messages(count: int, seed: int) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [
        Image.fromarray(rng.integers(0, 256, (int(rng.integers(40, 300)), int(rng.integers(40, 300)), 3), np.uint8))
        for _ in range(count)
    ]
    content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": "Colours?"}]
    return [{"role": "user", "content": content}]


def test_two_threads_interleaved_give_what_one_at_a_time_gives(tokenizer, model, clip):
    """A call suspended half-way (inside ProcessorMixin.__call__, where it fetches its images) while another call
    runs whole gives what it gives alone: no call leaves state on the processor. (A single image is
    tiled and two are padded, so a layout kept on the instance would leak from one call into the other.)"""
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor

    resume, paused = threading.Event(), threading.Event()

    class PausingImageProcessor(SiglipImageProcessor):
        def fetch_images(self, images):
            caller = sys._getframe(1).f_code.co_name
            if threading.current_thread().name == "suspended" and caller == "prepare_inputs_layout":
                paused.set()
                assert resume.wait(timeout=120), "the other call did not finish"
            return super().fetch_images(images)

    processor = HourLlavaProcessor(
        image_processor=PausingImageProcessor(size={"height": SIZE, "width": SIZE}),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(size={"height": SIZE, "width": SIZE}),
        token_geometry=HourLlavaProcessor.geometry_from_config(model.config),
    )
    one, two = image_messages(1, seed=1), image_messages(2, seed=2)
    expected = {"one": encode(processor, one), "two": encode(processor, two)}
    results = {}

    def suspended():
        results["one"] = encode(processor, one)

    def other():
        try:
            results["two"] = encode(processor, two)
        finally:
            resume.set()

    first = threading.Thread(target=suspended, name="suspended")
    first.start()
    assert paused.wait(timeout=120), "the first call never reached ProcessorMixin.prepare_inputs_layout"
    second = threading.Thread(target=other, name="other")
    second.start()
    second.join(timeout=300)
    first.join(timeout=300)
    for name in ("one", "two"):
        assert results[name].keys() == expected[name].keys(), name
        for key in expected[name]:
            assert torch.equal(results[name][key], expected[name][key]), (name, key)

    # And many calls from a pool of two threads, images and videos mixed.
    jobs = [image_messages(1 + i % 2, i) for i in range(8)] + [video_question(clip, "Q?")] * 2
    alone = [encode(processor, messages) for messages in jobs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(lambda messages: encode(processor, messages), jobs))
    for one_call, other_call in zip(alone, together, strict=True):
        assert one_call.keys() == other_call.keys()
        for key in one_call:
            assert torch.equal(one_call[key], other_call[key]), key


def test_num_multimodal_tokens_equal_the_placeholders_written(processor, tokenizer, tmp_path):
    image_id, video_id = (tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<video>"))
    for count in (1, 2, 3):
        messages = image_messages(count, seed=count)
        batch = encode(processor, messages)
        sizes = batch["image_sizes"].tolist()
        budget = processor._get_num_multimodal_tokens(image_sizes=sizes, image_layout=None if count == 1 else "pad")
        assert sum(budget.num_image_tokens) == int((batch["input_ids"] == image_id).sum())
        assert budget.num_image_patches == batch["image_num_tiles"].tolist()
    for seconds in (5, 40, 200, 333):
        path = str(write_video(tmp_path / f"v{seconds}.mp4", num_frames=seconds, fps=1, width=32, height=32))
        batch = encode(processor, video_question(path, "Q?"))
        frames = int(batch["video_num_frames"][0])
        budget = processor._get_num_multimodal_tokens(video_sizes=[(frames, 32, 32)])
        assert budget.num_video_tokens == [int((batch["input_ids"] == video_id).sum())]


def test_the_chat_template_is_read_from_chat_template_jinja(processor, tmp_path):
    folder = tmp_path / "processor"
    processor.save_pretrained(folder)
    from modeling_hour_llava.processing_hour_llava import CHAT_TEMPLATE_FILE

    with open(CHAT_TEMPLATE_FILE) as handle:
        assert (folder / "chat_template.jinja").read_text() == handle.read() == processor.chat_template
    edited = (folder / "chat_template.jinja").read_text().replace("You are a helpful assistant.", "Be brief.")
    (folder / "chat_template.jinja").write_text(edited)
    reloaded = HourLlavaProcessor.from_pretrained(folder)
    rendered = reloaded.apply_chat_template(video_question("v.mp4", "Q?"), add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_the_geometry_comes_from_the_model_config(processor, model, tmp_path):
    import json

    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    saved = json.loads((folder / "processor_config.json").read_text())
    saved["token_geometry"]["temporal_keep_ratio"] = 0.5  # a stale copy that disagrees with config.json
    (folder / "processor_config.json").write_text(json.dumps(saved))
    reloaded = HourLlavaProcessor.from_pretrained(folder)
    assert reloaded.token_geometry == HourLlavaProcessor.geometry_from_config(model.config)
    assert reloaded.token_geometry["feature_width"] == model.config.vision_config.hidden_size


CHILD_TEMPLATE_SCRIPT = """
import torch
from transformers import AutoProcessor

folder, clip, out = sys.argv[1:4]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "video", "path": clip}, {"type": "text", "text": "Why?"}]}]
batch = processor.apply_chat_template(
    messages, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True
)
torch.save({**batch, "template": processor.chat_template, "module": type(processor).__module__}, out)
"""


def test_a_reloaded_processor_reads_its_template_from_the_folder_in_a_fresh_process(processor, clip, tmp_path):
    folder = tmp_path / "checkpoint"
    processor.save_pretrained(folder)
    edited = (folder / "chat_template.jinja").read_text().replace("You are a helpful assistant.", "Be brief.")
    (folder / "chat_template.jinja").write_text(edited)
    run_isolated(CHILD_TEMPLATE_SCRIPT, [str(folder), clip, str(tmp_path / "out.pt")], tmp_path, tmp_path / "hf")
    child = torch.load(tmp_path / "out.pt")
    assert child.pop("module").startswith("transformers_modules.") and child.pop("template") == edited
    local = HourLlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        video_processor=processor.video_processor,
        token_geometry=processor.token_geometry,
        chat_template=edited,
    )
    batch = encode(local, video_question(clip, "Why?"))
    assert batch.keys() == child.keys()
    for key, value in batch.items():
        assert torch.equal(child[key], value), key


# ---------------------------------------------------------------------------------------------------------------------
# Another decoder's chat format (not ChatML), end to end
# ---------------------------------------------------------------------------------------------------------------------
TURN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<start_of_turn>' + role + '\\n' -}}"
    "{%- if message['content'] is string -%}{%- set blocks = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set blocks = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{%- for block in blocks if block['type'] == 'text' -%}{{- block['text'] -}}{%- endfor -%}"
    "{{- '<end_of_turn>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}"
    "{%- for block in blocks -%}{%- if block['type'] in ['image', 'video'] -%}{{- '<' + block['type'] + '>\\n' -}}"
    "{%- else -%}{{- block['text'] -}}{%- endif -%}{%- endfor -%}{{- '<end_of_turn>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)


def turn_tokenizer():
    """A Gemma-style tokenizer: <start_of_turn> / <end_of_turn>, no ChatML token at all."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from hour_llava_testing.tiny_tokenizer import CORPUS, QWEN2_SPLIT

    specials = ["<pad>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<image>", "<video>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS + ["model user"] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<eos>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        padding_side="left",
    )


def test_a_decoder_with_another_chat_format_works_end_to_end(clip):
    tokenizer = turn_tokenizer()
    assert "<|im_start|>" not in tokenizer.get_vocab() and "<|im_end|>" not in tokenizer.get_vocab()
    model = matching_model(tokenizer)
    processor = make_processor(tokenizer, model, chat_template=TURN_TEMPLATE)
    start, end, newline = (tokenizer.convert_tokens_to_ids(t) for t in ("<start_of_turn>", "<end_of_turn>", "Ċ"))
    turn = processor.turn_format
    assert (turn.header[0], turn.end, turn.trailer, set(turn.markers)) == (
        start,
        end,
        (newline,),
        {start, end, newline},
    )
    assert tokenizer.decode(turn.header) == "<start_of_turn>model"
    from modeling_hour_llava import end_of_turn_token_ids

    assert end_of_turn_token_ids(processor)[0] == end == processor.end_of_turn_token_ids()[0]

    batch = encode(processor, multi_turn(clip), return_assistant_tokens_mask=True, add_generation_prompt=False)
    ids = batch["input_ids"][0]
    assert tokenizer.decode(ids[batch["assistant_masks"][0].bool()]) == "red<end_of_turn>two<end_of_turn>"
    assistant = processor.assistant_turn_mask(batch["input_ids"])[0]
    turns = "<start_of_turn>model\nred<end_of_turn>\n<start_of_turn>model\ntwo<end_of_turn>\n"
    assert tokenizer.decode(ids[assistant]) == turns
    query = tokenizer.decode(ids[batch["memaug_query_mask"][0].bool()])
    assert query == (
        "userThe video lasts for 10.00 seconds, and 128 frames are uniformly sampled from it. Please answer the "
        "following questions related to this video.What colour is it?userHow many times does it appear?"
    )
    prompt = encode(processor, multi_turn(clip)[:3])
    assert tokenizer.decode(prompt["input_ids"][0]).endswith("<end_of_turn>\n<start_of_turn>model\n")
    with torch.no_grad():
        out = model(**model_inputs(prompt))
    assert out.video_hidden_states.shape[0] == num_video_tokens(128, model.config)
    generated = model.generate(
        **prompt, max_new_tokens=3, do_sample=False, eos_token_id=processor.end_of_turn_token_ids()
    )
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_chatml_markers_are_read_from_the_template(processor, tokenizer):
    turn = processor.turn_format
    ids = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")} | {203}
    assert set(turn.markers) == ids and turn.end == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(turn.header) == "<|im_start|>assistant"
