"""Wrong input gets one clear error, and nothing wrong passes silently: frames, features, durations, metadata and
options given to the video processor, the processor and the model (issue 18), and the one error family that
catches them however the code was loaded.

Unambiguous inputs are converted (float [0, 1] frames, 0-255 integers and floats, uint16, RGBA, grey, channels-last)
and must give exactly the uint8 frames they stand for; everything else is refused with an `HourLlavaError` that
names the field or the file.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from isolated import run_isolated
from transformers import SiglipImageProcessor

from dataset_builder.synthetic_video import write_video
from hour_llava_testing.tiny_tokenizer import build_tokenizer
from modeling_hour_llava import (
    HourLlavaError,
    HourLlavaInputError,
    HourLlavaProcessor,
    HourLlavaVideoMemory,
    HourLlavaVideoProcessor,
    VideoDecodeError,
)
from modeling_hour_llava.features_hour_llava import save_feature_file

from conftest import tiny_model

SIZE = 140


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        text={"vocab_size": len(tokenizer)},
    )


@pytest.fixture(scope="module")
def processor(tokenizer, model):
    return HourLlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": SIZE, "width": SIZE}),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(size={"height": SIZE, "width": SIZE}, min_frames=4),
        token_geometry=HourLlavaProcessor.geometry_from_config(model.config),
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return str(write_video(tmp_path_factory.mktemp("videos") / "clip.mp4", num_frames=40, fps=10))


def video_question(path: str, question: str = "Q?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": question}]}]


def video_prompt(model, num_placeholders: int = 544) -> torch.Tensor:
    """A (1, L) prompt: a text id, the placeholders of a 5-frame video, a text id."""
    return torch.tensor([[5] + [model.config.video_token_id] * num_placeholders + [6]])


def encode(processor, messages, **kwargs):
    options = {"tokenize": True, "return_dict": True, "return_tensors": "pt", "add_generation_prompt": True}
    return processor.apply_chat_template(messages, **{**options, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# Decoded frames given to the video processor: converted when unambiguous, else refused
# ---------------------------------------------------------------------------------------------------------------------
REFERENCE = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)  # (T, H, W, 3)
EXPECTED = torch.from_numpy(REFERENCE).permute(0, 3, 1, 2)


def as_given(video) -> torch.Tensor:
    return HourLlavaVideoProcessor(size={"height": SIZE, "width": SIZE})(video, do_sample_frames=False)[
        "pixel_values_videos"
    ]


@pytest.mark.parametrize(
    "form",
    [
        "uint8 channels-last",
        "uint8 channels-first",
        "float [0, 1]",
        "float 0-255",
        "float64 [0, 1]",
        "int64 0-255",
        "int16 0-255",
        "uint16",
        "RGBA",
        "tensor channels-first",
        "list of PIL images",
    ],
)
def test_unambiguous_frames_are_converted_to_the_frames_they_stand_for(form):
    from PIL import Image

    video = {
        "uint8 channels-last": REFERENCE,
        "uint8 channels-first": REFERENCE.transpose(0, 3, 1, 2),
        "float [0, 1]": REFERENCE.astype(np.float32) / 255,
        "float 0-255": REFERENCE.astype(np.float32),
        "float64 [0, 1]": REFERENCE.astype(np.float64) / 255,
        "int64 0-255": REFERENCE.astype(np.int64),
        "int16 0-255": REFERENCE.astype(np.int16),
        "uint16": REFERENCE.astype(np.uint16) * 257,
        "RGBA": np.concatenate([REFERENCE, np.full((*REFERENCE.shape[:3], 1), 9, np.uint8)], axis=-1),
        "tensor channels-first": EXPECTED.clone(),
        "list of PIL images": [Image.fromarray(frame) for frame in REFERENCE],
    }[form]
    out = as_given(video)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, SIZE, SIZE)
    assert torch.equal(out, EXPECTED), form


def test_grey_frames_become_rgb():
    grey = REFERENCE[..., :1]
    assert torch.equal(as_given(grey), torch.from_numpy(grey).permute(0, 3, 1, 2).expand(-1, 3, -1, -1))


@pytest.mark.parametrize(
    ("video", "words"),
    [
        (REFERENCE.astype(np.float32) / 127.5 - 1, "negative values.*normalised already"),
        (np.full((2, SIZE, SIZE, 3), np.nan, np.float32), "NaN or infinite"),
        (np.full((2, SIZE, SIZE, 3), 300.0, np.float32), "values up to 300"),
        (REFERENCE.astype(np.int64) * 4, "int64 with values 0..1020"),
        (REFERENCE > 100, "boolean"),
        (np.zeros((2, SIZE, SIZE, 5), np.uint8), "cannot tell where the channels are"),
        (np.zeros((2, 5, SIZE, SIZE), np.uint8), "cannot tell where the channels are"),
        (np.zeros((SIZE, SIZE, 3), np.uint8), r"shape \(140, 140, 3\); expected frames \(T, H, W, C\)"),
        (np.array([["a"]]), "expected numeric frames"),
        (np.zeros((0, SIZE, SIZE, 3), np.uint8), "has no frames"),
    ],
)
def test_ambiguous_or_broken_frames_are_refused_by_name(video, words):
    with pytest.raises(HourLlavaInputError, match=f"video 0.*{words}|{words}"):
        as_given(video)


# ---------------------------------------------------------------------------------------------------------------------
# Options: honoured or refused, never ignored; paths; media mixes refused before anything is decoded
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"num_frames": 32}, "num_frames=32: Hour-LLaVA does not take a fixed frame count"),
        ({"video_load_backend": "decord"}, r"unknown processor option\(s\) \['video_load_backend'\]"),
        ({"video_backend": "decord"}, "video_backend='decord'; expected one of"),
        ({"fps": -1}, "fps=-1; expected frames per second above 0"),
        ({"fps": float("nan")}, "fps=nan"),
        ({"max_frames": 0}, "max_frames is 0; expected an integer frame count >= 1"),
        ({"min_frames": 2.5}, "min_frames is 2.5"),
        ({"pixel_dtype": "float16"}, "pixel_dtype='float16'"),
        ({"do_sample_frames": "yes"}, "do_sample_frames='yes'"),
    ],
)
def test_bad_options_are_refused_before_the_video_is_read(processor, tmp_path, options, words):
    missing = str(tmp_path / "not_there.mp4")  # were it read first, the error would be "file not found"
    with pytest.raises(HourLlavaInputError, match=words):
        encode(processor, video_question(missing), processor_kwargs=options)
    with pytest.raises(HourLlavaInputError, match=words.replace("processor option", "(video )?processor option")):
        processor.video_processor(missing, **options)


def test_options_that_are_valid_are_honoured(processor, clip):
    assert encode(processor, video_question(clip), processor_kwargs={"max_frames": 2})["video_num_frames"].tolist() == [
        2
    ]
    floats = encode(processor, video_question(clip), processor_kwargs={"pixel_dtype": "float32"})
    uint8 = encode(processor, video_question(clip))
    expected = (uint8["pixel_values_videos"].float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(floats["pixel_values_videos"], expected, rtol=0, atol=1e-6)
    assert encode(processor, video_question(clip), processor_kwargs={"video_backend": "pyav"})["video_num_frames"] == 4


def test_home_and_environment_variables_are_expanded_in_paths(processor, clip, tmp_path, monkeypatch):
    import shutil

    home = tmp_path / "home"
    (home / "videos").mkdir(parents=True)
    shutil.copy(clip, home / "videos" / "clip.mp4")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("VIDEO_DIR", str(home / "videos"))
    expected = encode(processor, video_question(clip))
    for path in ("~/videos/clip.mp4", "$VIDEO_DIR/clip.mp4", "${VIDEO_DIR}/clip.mp4", f"file://{home}/videos/clip.mp4"):
        batch = encode(processor, video_question(path))
        assert torch.equal(batch["pixel_values_videos"], expected["pixel_values_videos"]), path
    with pytest.raises(VideoDecodeError, match="https:// URLs are not fetched"):
        encode(processor, video_question("https://example.com/video.mp4"))


def test_a_media_mix_the_model_cannot_take_fails_before_anything_is_decoded(processor, tmp_path):
    from PIL import Image

    missing = str(tmp_path / "not_there.mp4")
    mixed = [
        {
            "role": "user",
            "content": [
                {"type": "video", "path": missing},
                {"type": "image", "image": Image.new("RGB", (50, 50))},
                {"type": "text", "text": "Same?"},
            ],
        }
    ]
    with pytest.raises(HourLlavaInputError, match=r"sample 0 holds 1 video\(s\) and 1 image\(s\)"):
        encode(processor, mixed)
    two_videos = [
        {
            "role": "user",
            "content": [
                {"type": "video", "path": missing},
                {"type": "video", "path": missing},
                {"type": "text", "text": "?"},
            ],
        }
    ]
    with pytest.raises(HourLlavaInputError, match="sample 0 holds 2 videos; Hour-LLaVA takes one video per sample"):
        encode(processor, two_videos)


def test_bad_video_metadata_is_refused_by_field(processor):
    frames = torch.zeros(10, 3, SIZE, SIZE, dtype=torch.uint8)
    for metadata, words in [
        ({"total_num_frames": 10, "fps": "30"}, r"video_metadata\[0\].fps is '30'"),
        ({"total_num_frames": 10, "fps": -5}, r"video_metadata\[0\].fps is -5"),
        ({"total_num_frames": 10, "fps": float("nan")}, r"video_metadata\[0\].fps is nan"),
        ({"total_num_frames": "10", "fps": 5}, r"video_metadata\[0\].total_num_frames is '10'"),
        ({"total_num_frames": 12, "fps": 5}, "has 10 frames, but its video_metadata says total_num_frames=12"),
        ({"total_num_frames": 10, "frame_rate": 5}, "unexpected keyword argument 'frame_rate'"),
        ([{"total_num_frames": 10}, {"total_num_frames": 10}], "2 video_metadata entries for 1 videos"),
    ]:
        with pytest.raises(HourLlavaInputError, match=words):
            processor.video_processor(frames, video_metadata=metadata)


@pytest.mark.parametrize(
    ("duration", "words"),
    [(float("nan"), "nan"), (-3.0, "-3.0"), ("10", "'10'"), (True, "True"), (0, "0"), (float("inf"), "inf")],
)
def test_bad_durations_are_refused_by_field(processor, duration, words):
    with pytest.raises(HourLlavaInputError, match=rf"video_durations\[0\] is {words}"):
        processor.text_for_encoded_videos("<video>\nQ?", [10], [duration])


def test_frame_counts_for_encoded_videos_are_checked(processor):
    for frames, words in [(0, r"video_num_frames\[0\] is 0"), (2.5, "2.5"), ("10", "'10'")]:
        with pytest.raises(HourLlavaInputError, match=words):
            processor.text_for_encoded_videos("<video>\nQ?", [frames], [10.0])
    with pytest.raises(HourLlavaInputError, match="holds 2 <video> tag"):
        processor.text_for_encoded_videos(["<video>\nQ?", "<video>\nR?"], [10], [10.0])


# ---------------------------------------------------------------------------------------------------------------------
# Feature files and features
# ---------------------------------------------------------------------------------------------------------------------
def test_a_feature_file_from_another_model_is_refused_by_name(processor, model, tmp_path):
    path = tmp_path / "other_model.safetensors"
    save_feature_file(path, torch.randn(12, 64, model.config.vision_config.hidden_size * 2), duration=12.0)
    with pytest.raises(
        VideoDecodeError, match=r"other_model.safetensors: feature file of another model: features of width 64"
    ):
        encode(processor, video_question(str(path)))


def test_features_given_to_the_model_are_checked(model):
    width = model.config.vision_config.hidden_size
    ids = video_prompt(model)
    for features, words in [
        (torch.randn(5, 64, width + 1), "width 33, but this model's vision tower gives 32"),
        (torch.full((5, 64, width), float("nan")), "NaN or infinite"),
        (torch.randn(5, 60, width), "60 tokens per frame, which is not a square"),
        (torch.ones(5, 64, width, dtype=torch.long), "expected float SigLIP features"),
    ]:
        with pytest.raises(HourLlavaInputError, match=words):
            model(input_ids=ids, video_features=features, video_num_frames=[5])
    with pytest.raises(HourLlavaInputError, match=r"video_num_frames\[0\] is -5"):
        model(input_ids=ids, video_features=torch.randn(5, 64, width), video_num_frames=[-5])


# ---------------------------------------------------------------------------------------------------------------------
# Frames given to the model
# ---------------------------------------------------------------------------------------------------------------------
def test_pixels_given_to_the_model_are_normalised_once_or_refused(model):
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 3, SIZE, SIZE), dtype=np.uint8))
    ids = video_prompt(model)
    with torch.no_grad():
        reference = model(input_ids=ids, pixel_values_videos=frames, video_num_frames=[5]).logits
        normalised = (frames.float() / 255 - 0.5) / 0.5
        for same in (frames.long(), frames.permute(0, 2, 3, 1), normalised, normalised.permute(0, 2, 3, 1)):
            logits = model(input_ids=ids, pixel_values_videos=same, video_num_frames=[5]).logits
            torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)
    for pixels, words in [
        (frames.float(), "float with values 0..255, outside the normalised range"),
        (torch.full((5, 3, SIZE, SIZE), float("nan")), "NaN or infinite"),
        (frames.long() * 4, "int64 with values"),
        (frames[..., :100], "frames are 140x100, but this model's vision tower takes 140x140"),
        (frames[:, :2], "cannot tell where the channels are|2 channels"),
    ]:
        with pytest.raises(HourLlavaInputError, match=words):
            model(input_ids=ids, pixel_values_videos=pixels, video_num_frames=[5])


def test_a_damaged_video_memory_file_is_refused_by_name(model, tmp_path):
    from safetensors.torch import save_file

    memory = HourLlavaVideoMemory([torch.randn(3, 64, 64)])
    good = tmp_path / "memory.safetensors"
    memory.save(good)
    assert torch.equal(HourLlavaVideoMemory.load(good).frame_tokens[0], memory.frame_tokens[0])
    cases = {
        "count.safetensors": ({"video.0": torch.randn(3, 64, 64)}, {"num_videos": "abc"}, "num_videos='abc'"),
        "missing.safetensors": (
            {"video.0": torch.randn(3, 64, 64)},
            {"num_videos": "2"},
            r"lacks tensors \['video.1'\]",
        ),
        "nan.safetensors": ({"video.0": torch.full((3, 64, 64), math.nan)}, {"num_videos": "1"}, "expected finite"),
        "shape.safetensors": ({"video.0": torch.randn(3, 64)}, {"num_videos": "1"}, r"\(3, 64\); expected finite"),
    }
    for name, (tensors, metadata, words) in cases.items():
        save_file(tensors, tmp_path / name, metadata={"format": "hour_llava_video_memory/1", **metadata})
        with pytest.raises(HourLlavaInputError, match=f"{name}.*{words}"):
            model.load_video_memory(tmp_path / name)


# ---------------------------------------------------------------------------------------------------------------------
# One family, whichever way the code was loaded
# ---------------------------------------------------------------------------------------------------------------------
def test_the_family_is_value_errors_exposed_on_every_object_and_pickles_whole(processor, model):
    assert issubclass(VideoDecodeError, HourLlavaError) and issubclass(HourLlavaInputError, HourLlavaError)
    assert issubclass(HourLlavaError, ValueError)
    for obj in (processor, processor.video_processor, model, model.model):
        assert obj.VideoDecodeError is VideoDecodeError and obj.HourLlavaInputError is HourLlavaInputError
        assert obj.HourLlavaError is HourLlavaError
    error = pickle.loads(pickle.dumps(VideoDecodeError("/data/a.mp4", "truncated")))
    assert type(error) is VideoDecodeError and (error.path, error.reason, str(error)) == (
        "/data/a.mp4",
        "truncated",
        "/data/a.mp4: truncated",
    )


REMOTE_ONLY_SCRIPT = """
import pickle
from transformers import AutoModelForImageTextToText, AutoProcessor

folder, broken = sys.argv[1:3]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
assert type(processor).__module__.startswith("transformers_modules.")
assert model.VideoDecodeError is processor.VideoDecodeError is processor.video_processor.VideoDecodeError
messages = [{"role": "user", "content": [{"type": "video", "path": broken}, {"type": "text", "text": "Q?"}]}]
try:
    processor.apply_chat_template(messages, tokenize=True, return_dict=True)
except processor.VideoDecodeError as error:
    assert isinstance(error, ValueError) and isinstance(error, model.HourLlavaError)
    assert type(pickle.loads(pickle.dumps(error))) is type(error)
    print("caught", type(error).__module__, type(error).__name__, error.reason)
try:
    processor.video_processor(broken, num_frames=32)
except model.HourLlavaInputError as error:
    print("caught", type(error).__name__)
"""

REMOTE_THEN_PACKAGE_SCRIPT = """
from transformers import AutoProcessor

folder, broken = sys.argv[1:3]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)  # remote code: the package is not imported
assert type(processor).__module__.startswith("transformers_modules.")
import modeling_hour_llava  # now the package, a second copy of the code

messages = [{"role": "user", "content": [{"type": "video", "path": broken}, {"type": "text", "text": "Q?"}]}]
try:
    processor.apply_chat_template(messages, tokenize=True, return_dict=True)
except modeling_hour_llava.VideoDecodeError as error:
    print("caught", type(error).__name__, error.reason)
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, processor, model):
    folder = tmp_path_factory.mktemp("family") / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    broken = folder.parent / "broken.mp4"
    broken.write_text("not a video")
    return folder, broken


def test_remote_code_alone_raises_the_family(checkpoint, tmp_path):
    folder, broken = checkpoint
    child = run_isolated(REMOTE_ONLY_SCRIPT, [str(folder), str(broken)], tmp_path, tmp_path / "hf_home")
    lines = child.stdout.splitlines()
    assert lines[0].startswith("caught hour_llava_errors VideoDecodeError not a readable video container")
    assert lines[1] == "caught HourLlavaInputError"


def test_the_package_catches_what_a_remote_code_processor_raises(checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    folder, broken = checkpoint
    script = tmp_path / "child.py"
    script.write_text("import sys\n" + REMOTE_THEN_PACKAGE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_MODULES_CACHE",)}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    child = subprocess.run(
        [sys.executable, str(script), str(folder), str(broken)], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr[-4000:]
    assert child.stdout.startswith("caught VideoDecodeError not a readable video container")


def test_images_as_arrays_follow_the_same_rules(processor):
    from PIL import Image

    array = np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)

    def pixels(image):
        content = [{"type": "image", "image": image}, {"type": "text", "text": "Colour?"}]
        return encode(processor, [{"role": "user", "content": content}])["pixel_values"]

    expected = pixels(Image.fromarray(array))
    for same in (
        array,
        array.astype(np.float32) / 255,
        array.astype(np.int64),
        torch.from_numpy(array).permute(2, 0, 1),
    ):
        assert torch.equal(pixels(same), expected)
    with pytest.raises(HourLlavaInputError, match="negative values"):
        pixels(array.astype(np.float32) / 127.5 - 1)
