"""The other stage sources (LLaVA JSON: short videos, single images, multi-image, text) and the mixtures.

Checks that each LLaVA item becomes chat messages with its media at the tags' places (untagged media first), that
bad items are excluded by reason, that a weighted mixture has the requested ratio (map-style and streaming),
is seeded, and that a mixed batch of video, image and text rows goes through the processor's chat template.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from dataset_helpers import tiny_processor
from PIL import Image

from dataset_builder.chat import CHAT_FEATURES, clean_messages
from dataset_builder.mixtures import LlavaJson, build_mixture, videomarathon_chat
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from dataset_builder.videomarathon import VideoMarathon

SPEC = SyntheticSpec(num_videos=4, min_duration=4, max_duration=5, fps=2.0, width=48, height=32, seed=7)


def conversation(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    data = write_synthetic_videomarathon(root / "vm", SPEC)
    images = root / "images"
    images.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 30), (80 * index, 20, 20)).save(images / f"{index}.png")
    items = {
        "llava_onevision_si": [
            {"id": f"si{i}", "image": f"{i % 3}.png", "conversations": conversation("<image>\nColour?", "red")}
            for i in range(40)
        ]
        + [
            {"id": "untagged", "image": "1.png", "conversations": conversation("Describe.", "dark")},
            {"id": "escape", "image": "../vm/x.png", "conversations": conversation("<image>\nq", "a")},
            {"id": "missing", "image": "nope.png", "conversations": conversation("<image>\nq", "a")},
            {"id": "two", "image": ["0.png", "1.png"], "conversations": conversation("<image> <image>", "a")},
        ],
        "llava_onevision_mi": [
            {"id": "mi", "image": ["2.png", "0.png"], "conversations": conversation("Is <image> like <image>?", "no")}
        ],
        "llava_onevision_text": [{"id": "t", "conversations": conversation("Hello <b>", "Hi")}],
        "llava_video_178k": [
            {
                "id": f"v{i}",
                "video": data.timelines[i % 2].video,
                "data_source": "synthetic",
                "conversations": conversation("<image>\nWhat happens?", "Shapes move."),
            }
            for i in range(4)
        ],
    }
    roots = {"llava_video_178k": data.video_root, "llava_onevision_text": None}
    built, reports = {}, {}
    for name, rows in items.items():
        path = root / f"{name}.json"
        path.write_text(json.dumps(rows))
        builder = LlavaJson(
            config_name=name,
            annotations=str(path),
            media_root=roots.get(name, str(images)),
            cache_dir=str(root / "cache"),
        )
        builder.download_and_prepare()
        built[name] = builder.as_dataset("train")
        reports[name] = json.loads(open(builder.report_path).read())
    vm = VideoMarathon(
        config_name="qa", annotations=data.hub_rows, video_root=data.video_root, cache_dir=str(root / "cache")
    )
    vm.download_and_prepare()
    built["videomarathon"] = videomarathon_chat(vm.as_dataset("train"), video_root=data.video_root)
    return root, data, images, built, reports


def test_llava_items_become_chat_rows(sources):
    _, data, images, built, reports = sources
    si = {row["id"]: clean_messages(row["messages"]) for row in built["llava_onevision_si"]}
    assert si["si1"][0]["content"] == [
        {"type": "image", "path": f"{images}/1.png"},
        {"type": "text", "text": "Colour?"},
    ]
    assert si["untagged"][0]["content"][0] == {"type": "image", "path": f"{images}/1.png"}
    assert reports["llava_onevision_si"]["excluded_rows"] == {
        "missing_media": 1,
        "path_escapes_root": 1,
        "wrong_modality": 1,
    }
    (mi,) = built["llava_onevision_mi"]
    assert [block.get("path") or block["text"] for block in clean_messages(mi["messages"])[0]["content"]] == [
        "Is ",
        f"{images}/2.png",
        " like ",
        f"{images}/0.png",
        "?",
    ]
    assert mi["modality"] == "multi_image"
    (text,) = built["llava_onevision_text"]
    assert text["modality"] == "text" and clean_messages(text["messages"])[0]["content"] == [
        {"type": "text", "text": "Hello <b>"}
    ]
    video = clean_messages(built["llava_video_178k"][0]["messages"])[0]["content"][0]
    assert video == {"type": "video", "path": f"{data.video_root}/synthetic/{data.timelines[0].video}"}
    assert built["videomarathon"].features == CHAT_FEATURES
    first = clean_messages(built["videomarathon"][0]["messages"])[0]["content"][0]
    assert first["type"] == "video" and first["path"].startswith(data.video_root)


def test_strict_llava_source_raises(sources, tmp_path):
    root, _, images, _, _ = sources
    builder = LlavaJson(
        config_name="llava_onevision_si",
        annotations=str(root / "llava_onevision_si.json"),
        media_root=str(images),
        cache_dir=str(tmp_path),
        strict=True,
    )
    with pytest.raises(ValueError, match="path_escapes_root"):
        builder.download_and_prepare()


def test_mixture_ratio_seed_and_streaming(sources):
    _, _, _, built, _ = sources
    parts = {"videomarathon": built["videomarathon"], "llava_onevision_si": built["llava_onevision_si"]}
    weights = {"videomarathon": 3, "llava_onevision_si": 1}
    mixture = build_mixture(weights, parts, seed=0)
    counts = Counter(mixture["dataset"])
    # first_exhausted: stops when a source runs out; no row repeats; 3 : 1 within sampling noise (n ~ 50-180).
    assert len(set(mixture["id"])) == len(mixture)
    assert 0.6 < counts["videomarathon"] / len(mixture) < 0.9
    assert build_mixture(weights, parts, seed=0)["id"] == mixture["id"]
    assert build_mixture(weights, parts, seed=1)["id"] != mixture["id"]
    streamed = list(build_mixture(weights, parts, seed=0, streaming=True))
    assert set(streamed[0]) == set(CHAT_FEATURES)
    share = Counter(row["dataset"] for row in streamed)["videomarathon"] / len(streamed)
    assert 0.6 < share < 0.9
    everything = build_mixture({"videomarathon": 1, "llava_onevision_si": 1}, parts, stopping_strategy="all_exhausted")
    assert set(everything["id"]) == set(parts["videomarathon"]["id"]) | set(parts["llava_onevision_si"]["id"])
    with pytest.raises(ValueError, match="must match"):
        build_mixture({"videomarathon": 1}, parts)
    with pytest.raises(ValueError, match="positive"):
        build_mixture({"videomarathon": 0, "llava_onevision_si": 1}, parts)


def test_mixed_batch_goes_through_the_chat_template(sources):
    _, data, _, built, _ = sources
    processor, tokenizer = tiny_processor()
    rows = [built[name][0] for name in ("llava_video_178k", "llava_onevision_si", "llava_onevision_text")]
    batch = processor.apply_chat_template(
        [clean_messages(row["messages"], open_images=True) for row in rows],
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        return_assistant_tokens_mask=True,
        processor_kwargs={"padding": True},
    )
    video_id, image_id = (tokenizer.convert_tokens_to_ids(t) for t in ("<video>", "<image>"))
    has_video = (batch["input_ids"] == video_id).any(1).tolist()
    has_image = (batch["input_ids"] == image_id).any(1).tolist()
    assert has_video == [True, False, False] and has_image == [False, True, False]
    assert batch["video_num_frames"].tolist() == [data.timelines[0].duration * SPEC.fps]  # all frames: < 128
    answers = []
    for index in range(3):
        mask = batch["assistant_masks"][index].bool() & batch["attention_mask"][index].bool()
        answers.append(tokenizer.decode(batch["input_ids"][index][mask]))
    assert answers == ["Shapes move.<|im_end|>", "red<|im_end|>", "Hi<|im_end|>"]


def test_sampling_strategies_of_the_reference_yamls(sources, tmp_path):
    """`{"json_path", "sampling_strategy"}` entries: first/end/random P% (ceil) or N items per file, random seeded."""
    root, _, images, _, _ = sources
    path = str(root / "llava_onevision_si.json")  # 44 items: si0..si39, then untagged, escape, missing, two

    def ids(strategy: str, seed: int = 0) -> list[str]:
        builder = LlavaJson(
            config_name="llava_onevision_si",
            annotations=[{"json_path": path, "sampling_strategy": strategy}],
            media_root=str(images),
            cache_dir=str(tmp_path / f"{strategy}-{seed}".replace(":", "_").replace("%", "p")),
            sampling_seed=seed,
        )
        builder.download_and_prepare()
        excluded[strategy, seed] = sum(json.loads(open(builder.report_path).read())["excluded_rows"].values())
        return builder.as_dataset("train")["id"]

    excluded = {}
    assert ids("first:10%") == [f"si{i}" for i in range(5)]  # ceil(4.4)
    assert ids("end:5") == ["si39", "untagged"]  # escape, missing and two are excluded
    sampled = ids("random:25%")
    assert len(sampled) + excluded["random:25%", 0] == 11  # ceil(11.0) items drawn, the bad ones then excluded
    assert sampled == ids("random:25%") and sampled != ids("random:25%", seed=1)
    order = [item["id"] for item in json.loads(open(path).read())]
    assert sampled == sorted(sampled, key=order.index)  # file order kept
    with pytest.raises(ValueError, match="sampling strategy"):
        ids("middle:10%")
