"""One batch, every kind of sample: cached feature files, decoded videos, images and text-only rows go through the
processor in one call and the model in one forward, each by its kind; and a forward whose placeholders lost their
media (TRL's stock collator) is refused instead of trained on as text."""

from __future__ import annotations

import pytest
import torch
from train_data import build_training_data, image_row, text_row, video_row, write_rows
from transformers import AutoModelForImageTextToText, AutoProcessor

from dataset_builder.chat import clean_messages
from dataset_builder.extract_features import feature_name
from modeling_hour_llava.errors_hour_llava import HourLlavaInputError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return build_training_data(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def model_and_processor(data):
    model = AutoModelForImageTextToText.from_pretrained(data["model"], trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(data["model"], trust_remote_code=True)


def conversations(data) -> list[list[dict]]:
    """A feature file, a decoded video, an image and text only, as absolute paths."""
    feature = f"{data['feature_dir']}/{feature_name(data['cached'][0])}"
    rows = [
        video_row(feature),
        video_row(f"{data['media_root']}/{data['decoded'][0]}"),
        image_row(data["image"]),
        text_row(),
        video_row(f"{data['media_root']}/{data['decoded'][1]}", question="And now?"),
        video_row(f"{data['feature_dir']}/{feature_name(data['cached'][1])}", answer="It stops."),
    ]
    return [clean_messages(row["messages"]) for row in rows]


def encode(processor, batch: list[list[dict]]) -> dict:
    kwargs = dict(tokenize=True, return_dict=True, return_tensors="pt", processor_kwargs={"padding": True})
    return dict(processor.apply_chat_template(batch, **kwargs))


def test_the_processor_outputs_both_kinds_and_marks_each_video_in_order(data, model_and_processor):
    _, processor = model_and_processor
    inputs = encode(processor, conversations(data))
    assert inputs["video_is_features"].tolist() == [True, False, False, True]
    counts = inputs["video_num_frames"].tolist()
    assert inputs["video_features"].shape[0] == counts[0] + counts[3]
    assert inputs["pixel_values_videos"].shape[0] == counts[1] + counts[2]
    assert inputs["pixel_values"].shape[0] >= 1


def test_a_batch_of_every_kind_gives_each_sample_its_own_logits(data, model_and_processor):
    model, processor = model_and_processor
    batch = conversations(data)
    inputs = encode(processor, batch)
    with torch.no_grad():
        together = model(**inputs).logits
    for index, conversation in enumerate(batch):
        alone = encode(processor, [conversation])
        with torch.no_grad():
            expected = model(**alone).logits[0]
        kept = inputs["attention_mask"][index].bool()
        torch.testing.assert_close(together[index][kept], expected, rtol=1e-4, atol=1e-4, msg=f"sample {index}")


def test_a_marker_that_disagrees_with_the_tensors_is_refused(data, model_and_processor):
    model, processor = model_and_processor
    inputs = encode(processor, conversations(data)[:2])
    with pytest.raises(HourLlavaInputError, match="video_is_features"):
        model(**{**inputs, "video_is_features": None})
    with pytest.raises(HourLlavaInputError, match="marks"):
        model(**{**inputs, "video_is_features": torch.tensor([True, True])})


@pytest.mark.parametrize("kind", ["video", "image"])
def test_placeholders_without_their_media_are_refused_naming_the_collator(data, model_and_processor, kind):
    model, processor = model_and_processor
    index = 1 if kind == "video" else 2
    inputs = encode(processor, [conversations(data)[index]])
    text_only = {name: inputs[name] for name in ("input_ids", "attention_mask")}
    for forward in (model, model.model):  # TRL's fused LM head calls model.base_model (= model.model)
        with pytest.raises(HourLlavaInputError, match=rf"<{kind}> placeholder.*HourLlavaDataCollator\(processor\)"):
            forward(**text_only, labels=inputs["input_ids"])


def test_a_feature_file_of_another_model_is_refused_by_name(data, model_and_processor):
    model, processor = model_and_processor
    inputs = encode(processor, [conversations(data)[0]])
    foreign = inputs["video_features"][..., :16]
    with pytest.raises(HourLlavaInputError, match="width 16.*another model"):
        model(**{**inputs, "video_features": foreign})


def collated_rows(data) -> list[dict]:
    """The README's stage-3 mixture in one batch: cached VideoMarathon features 3 : a decoded short video 1."""
    cached, decoded = data["cached"], data["decoded"]
    return [video_row(cached[0]), video_row(cached[1], answer="It stops."), video_row(decoded[0]), video_row(cached[0])]


@pytest.mark.parametrize("batch_size", [2, 4])
def test_a_mixed_batch_gives_the_loss_of_its_samples_one_by_one(data, model_and_processor, batch_size):
    from hour_llava_training import HourLlavaDataCollator

    model, processor = model_and_processor
    collator = HourLlavaDataCollator(processor, media_root=data["media_root"], feature_dir=data["feature_dir"])
    rows = collated_rows(data)[-batch_size:]
    batch = collator(rows)
    kinds = batch["video_is_features"].tolist()
    assert True in kinds and False in kinds
    with torch.no_grad():
        together = model(**batch).loss
        sums, counts = [], []
        for row in rows:
            alone = collator([row])
            tokens = int((alone["labels"][:, 1:] != -100).sum())
            sums.append(model(**alone).loss * tokens)
            counts.append(tokens)
    torch.testing.assert_close(together, sum(sums) / sum(counts), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size", ["2", "4"])
def test_the_readme_stage3_mixture_trains(data, tmp_path, batch_size):
    from hour_llava_training import cli as train

    long = write_rows(
        tmp_path / "long", [video_row(video, id=f"long-{i}") for i, video in enumerate(data["cached"] * 12)]
    )
    short = [video_row(video, id=f"short-{i}") for i, video in enumerate(data["decoded"] * 6)]
    short = write_rows(tmp_path / "short", short)
    summary = train.run_training(
        [
            "--stage", "stage3", "--model_name_or_path", data["model"], "--dataset", f"{long}:3", f"{short}:1",
            "--media_root", data["media_root"], "--feature_dir", data["feature_dir"], "--output_dir",
            str(tmp_path / "out"), "--per_device_train_batch_size", batch_size, "--max_steps", "2",
            "--save_strategy", "no", "--use_cpu", "--report_to", "none",
        ]
    )  # fmt: skip
    assert summary["steps"] == 2 and summary["skipped_samples"] == {}
    assert 0 < summary["cached_features_used"] < summary["rows_drawn"] == 2 * int(batch_size)


def test_non_finite_frames_are_found_whatever_tensor_holds_them(model_and_processor):
    """Decoded frames are uint8 (never NaN); float frames (pixel_dtype="float32", images) and features are checked."""
    from hour_llava_training.collator import NON_FINITE, HourLlavaDataCollator

    collator = HourLlavaDataCollator(model_and_processor[1])
    frames = torch.zeros(2, 3, 4, 4)
    assert collator.media_problem({"pixel_values_videos": frames}) is None
    frames[1, 0, 0, 0] = float("inf")
    for key in ("pixel_values_videos", "pixel_values"):
        assert collator.media_problem({key: frames})[0] == NON_FINITE
