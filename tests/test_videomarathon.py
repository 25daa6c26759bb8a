"""The synthetic VideoMarathon and the VideoMarathon builder.

The synthetic videos are checked against their timelines by decoding them (background colour and shape position
read from the pixels), so answers "right by construction" are right in the video. The builder is checked on that
set in both annotation formats: QA and grouped configs, the split by video, exclusions (missing, unreadable and
escaping videos, bad fields) with their report and strict mode, and that its rows go through the processor's chat
template with the video placeholders and assistant turns where they belong.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from dataset_helpers import tiny_processor

from dataset_builder.chat import clean_messages
from dataset_builder.mixtures import videomarathon_chat
from dataset_builder.synthetic_videomarathon import (
    BACKGROUNDS,
    DIRECTIONS,
    SyntheticSpec,
    background_at,
    write_synthetic_videomarathon,
)
from dataset_builder.videomarathon import (
    MC_PROMPT,
    QUESTION_TYPES,
    TASK_TOPIC,
    TASKS,
    TOPICS,
    VideoMarathon,
    format_question,
    video_split,
)
from modeling_hour_llava.video_loading_hour_llava import decode_frames

SPEC = SyntheticSpec(num_videos=6, min_duration=5, max_duration=8, fps=4.0, width=96, height=64, seed=3)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_videomarathon(tmp_path_factory.mktemp("vm"), SPEC)


def build(tmp_path, config: str, annotations, video_root, **kwargs):
    builder = VideoMarathon(
        config_name=config,
        annotations=annotations,
        video_root=video_root,
        cache_dir=str(tmp_path / "cache"),
        **{"validation_fraction": 0.5, **kwargs},
    )
    builder.download_and_prepare()
    return builder, builder.as_dataset()


# -----------------------------------------------------------------------------------------------------------------
# Synthetic set
# -----------------------------------------------------------------------------------------------------------------
def test_synthetic_rows_cover_every_task_topic_and_question_type(synthetic):
    rows = synthetic.rows
    per_video = Counter((row["video"], row["task"], row["question_type"]) for row in rows)
    assert set(per_video.values()) == {1}
    assert len(per_video) == SPEC.num_videos * len(TASKS) * len(QUESTION_TYPES)
    assert {row["topic"] for row in rows} == set(TOPICS)
    assert all(TASK_TOPIC[row["task"]] == row["topic"] for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        if row["question_type"] == "multiple-choice":
            letters = [option[0] for option in row["options"]]
            assert 2 <= len(row["options"]) <= 4 and row["answer"] in letters
            assert len(set(row["options"])) == len(row["options"])
        else:
            assert row["options"] == [] and row["answer"]


def test_synthetic_rows_are_deterministic(tmp_path, synthetic):
    again = write_synthetic_videomarathon(tmp_path, SPEC)
    assert again.rows == synthetic.rows
    other = write_synthetic_videomarathon(tmp_path / "other", SyntheticSpec(**{**SPEC.__dict__, "seed": 4}))
    assert other.rows != synthetic.rows


def decoded(synthetic, timeline):
    path = os.path.join(synthetic.video_root, SPEC.source, timeline.video)
    frames, info, times = decode_frames(path, size=(SPEC.height, SPEC.width), sample_fps=SPEC.fps, min_frames=1)
    assert info.num_frames == timeline.duration * SPEC.fps
    return frames.permute(0, 2, 3, 1).numpy(), times


def test_videos_show_their_timeline(synthetic):
    for timeline in synthetic.timelines:
        frames, times = decoded(synthetic, timeline)
        seen = [background_at(frame) for frame in frames]
        assert seen == [timeline.scene_at(t).background for t in times]


def shape_side(frame: np.ndarray, background: str) -> str:
    """Where the shape is, from the pixels that differ from the background below the text row."""
    height, width = frame.shape[:2]
    top = int(height * 0.3)
    differs = np.abs(frame[top:].astype(int) - np.array(BACKGROUNDS[background])).sum(-1) > 120
    ys, xs = np.nonzero(differs)
    dx, dy = xs.mean() - width / 2, ys.mean() + top - height / 2
    if abs(dx) > abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def test_answers_match_the_decoded_pixels(synthetic):
    """Scene Recognition answers are the decoded background at the asked time; Spatial Perception answers are
    where the shape's pixels are in the scene's first frame."""
    checked = Counter()
    for timeline in synthetic.timelines:
        frames, _ = decoded(synthetic, timeline)
        for row in (r for r in synthetic.rows if r["video"] == timeline.video and r["question_type"] == "open-ended"):
            if row["task"] == "Scene Recognition":
                seconds = float(row["question"].split(" at ")[1].split(" seconds")[0])
                assert background_at(frames[int(seconds * SPEC.fps)]) == row["answer"]
                checked["scene"] += 1
            if row["task"] == "Spatial Perception":
                colour = row["question"].split("when the ")[1].split(" scene")[0]
                scene = next(s for s in timeline.scenes if s.background == colour)
                side = shape_side(frames[int(scene.start * SPEC.fps)], colour)
                assert side == row["answer"] == DIRECTIONS[scene.direction][0]
                checked["side"] += 1
    assert checked == {"scene": SPEC.num_videos, "side": SPEC.num_videos}


# -----------------------------------------------------------------------------------------------------------------
# Builder
# -----------------------------------------------------------------------------------------------------------------
def test_qa_rows_carry_the_annotations(tmp_path, synthetic):
    builder, splits = build(tmp_path, "qa", synthetic.hub_rows, synthetic.video_root)
    rows = {row["id"]: row for split in splits.values() for row in split}
    assert len(rows) == len(synthetic.rows)
    for source in synthetic.rows:
        row = rows[source["id"]]
        for key in ("video", "task", "topic", "question_type", "question", "options", "answer"):
            assert row[key] == source[key], key
        assert row["source"] == SPEC.source and row["duration"] == source["duration"]
        user, assistant = clean_messages(row["messages"])
        assert user["content"][0] == {"type": "video", "path": f"{SPEC.source}/{source['video']}"}
        assert user["content"][1]["text"] == format_question(source["question"], source["options"])
        assert (MC_PROMPT in user["content"][1]["text"]) == bool(source["options"])
        assert assistant["content"] == [{"type": "text", "text": source["answer"]}]
    report = json.loads(open(builder.report_path).read())
    assert report["excluded_rows"] == {} and report["statistics"]["all"]["qa_pairs"] == len(synthetic.rows)
    assert report["statistics"]["all"]["tasks"] == {task: SPEC.num_videos * 2 for task in TASKS}


def test_grouped_rows_hold_up_to_five_pairs_of_one_video(tmp_path, synthetic):
    _, splits = build(tmp_path, "grouped", synthetic.hub_rows, synthetic.video_root)
    seen = Counter()
    for split in splits.values():
        for row in split:
            assert 1 <= len(row["qa"]) <= 5
            assert {pair["id"].split("-")[0] for pair in row["qa"]} == {os.path.splitext(row["video"])[0]}
            messages = clean_messages(row["messages"])
            assert [m["role"] for m in messages] == ["user", "assistant"] * len(row["qa"])
            videos = [b for m in messages for b in m["content"] if b["type"] == "video"]
            assert videos == [{"type": "video", "path": f"{SPEC.source}/{row['video']}"}]
            assert messages[0]["content"][0]["type"] == "video"
            assert [m["content"][-1]["text"] for m in messages[1::2]] == [pair["answer"] for pair in row["qa"]]
            seen.update(pair["id"] for pair in row["qa"])
    assert seen == Counter(row["id"] for row in synthetic.rows)  # every pair exactly once
    per_video = Counter(len(row["qa"]) for split in splits.values() for row in split)
    assert per_video[5] == SPEC.num_videos * (len(TASKS) * 2 // 5)


def test_grouping_is_seeded(tmp_path, synthetic):
    def groups(seed, where):
        _, splits = build(tmp_path / where, "grouped", synthetic.hub_rows, synthetic.video_root, group_seed=seed)
        return [[pair["id"] for pair in row["qa"]] for row in splits["train"]]

    assert groups(0, "a") == groups(0, "b")
    assert groups(0, "a") != groups(1, "c")


def test_llava_json_gives_the_same_pairs_as_hub_rows(tmp_path, synthetic):
    _, from_json = build(tmp_path / "json", "grouped", synthetic.llava_json, synthetic.video_root)
    _, from_rows = build(tmp_path / "rows", "qa", synthetic.hub_rows, synthetic.video_root)

    def pairs(rows, grouped):
        out = set()
        for row in rows:
            for pair in row["qa"] if grouped else [row]:
                out.add((row["video"], format_question(pair["question"], pair["options"]), pair["answer"]))
        return out

    for split in ("train", "validation"):
        assert pairs(from_json[split], True) == pairs(from_rows[split], False)
    assert all(len(row["qa"]) <= 5 and re.fullmatch(r"video_\d{4}-g\d+", row["id"]) for row in from_json["train"])


def test_split_is_by_video_and_stable(tmp_path, synthetic):
    _, splits = build(tmp_path / "all", "qa", synthetic.hub_rows, synthetic.video_root)
    videos = {split: set(splits[split]["video"]) for split in splits}
    assert videos["train"] and videos["validation"] and not videos["train"] & videos["validation"]
    assert videos["train"] | videos["validation"] == {t.video for t in synthetic.timelines}
    # Dropping videos from the annotations does not move the others.
    kept = [row for row in synthetic.rows if row["video"] != synthetic.timelines[0].video]
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(json.dumps(row) + "\n" for row in kept))
    _, fewer = build(tmp_path / "fewer", "qa", str(subset), synthetic.video_root)
    for split in fewer:
        assert set(fewer[split]["video"]) == videos[split] - {synthetic.timelines[0].video}
    assigned = Counter(video_split("s", f"v{i}.mp4", 0.25) for i in range(2000))
    assert 0.2 < assigned["validation"] / 2000 < 0.3


def damaged_copy(tmp_path, synthetic):
    """Videos with one missing and one unreadable (truncated to its first bytes) video."""
    root = tmp_path / "videos"
    shutil.copytree(synthetic.video_root, root)
    first, second = synthetic.timelines[0].video, synthetic.timelines[1].video
    os.remove(root / SPEC.source / first)
    broken = root / SPEC.source / second
    broken.write_bytes(broken.read_bytes()[:200])
    return str(root), first, second


def test_missing_and_unreadable_videos_are_excluded_and_reported(tmp_path, synthetic):
    root, missing, broken = damaged_copy(tmp_path, synthetic)
    report_path = tmp_path / "report.json"
    builder, splits = build(
        tmp_path, "qa", synthetic.hub_rows, root, check_videos="probe", report_path=str(report_path)
    )
    per_video = len(TASKS) * len(QUESTION_TYPES)
    report = json.loads(report_path.read_text())
    assert report["excluded_rows"] == {"missing_media": per_video, "unreadable_media": per_video}
    assert report["excluded_media"] == {"missing_media": 1, "unreadable_media": 1}
    assert report["examples"]["missing_media"][0]["media"] == f"{SPEC.source}/{missing}"
    assert report["examples"]["unreadable_media"][0]["media"] == f"{SPEC.source}/{broken}"
    kept = {video for split in splits.values() for video in split["video"]}
    assert kept == {t.video for t in synthetic.timelines} - {missing, broken}
    assert sum(len(split) for split in splits.values()) == len(synthetic.rows) - 2 * per_video
    assert sum(report["kept_rows"].values()) == len(synthetic.rows) - 2 * per_video
    assert all(d is not None for split in splits.values() for d in split["duration"])


def test_strict_mode_raises_and_still_writes_the_report(tmp_path, synthetic):
    root, missing, _ = damaged_copy(tmp_path, synthetic)
    report_path = tmp_path / "strict.json"
    with pytest.raises(ValueError, match="missing_media") as error:
        build(tmp_path, "qa", synthetic.hub_rows, root, strict=True, report_path=str(report_path))
    assert missing in str(error.value) and str(report_path) in str(error.value)
    assert json.loads(report_path.read_text())["excluded_rows"]["missing_media"] == len(TASKS) * 2


def test_paths_may_not_escape_their_root(tmp_path, synthetic):
    outside = tmp_path / "outside.mp4"
    shutil.copy(os.path.join(synthetic.video_root, SPEC.source, synthetic.timelines[0].video), outside)
    root = tmp_path / "videos"
    shutil.copytree(synthetic.video_root, root)
    os.symlink(outside, root / SPEC.source / "link.mp4")
    template = dict(synthetic.rows[0])
    bad = [
        {**template, "id": "dotdot", "video": "../../outside.mp4"},
        {**template, "id": "absolute", "video": str(outside)},
        {**template, "id": "symlink", "video": "link.mp4"},
        {**template, "id": "source", "data_source": "../videos"},
        {**template, "id": "task", "video": synthetic.timelines[1].video, "task": "Bogus Task"},
    ]
    annotations = tmp_path / "bad.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in [*synthetic.rows, *bad]))
    builder, splits = build(tmp_path, "qa", str(annotations), str(root))
    report = json.loads(open(builder.report_path).read())
    assert report["excluded_rows"] == {"path_escapes_root": 3, "unknown_source": 1, "invalid_annotation": 1}
    assert "Bogus Task" in report["examples"]["invalid_annotation"][0]["detail"]
    assert sum(len(split) for split in splits.values()) == len(synthetic.rows)
    with pytest.raises(ValueError, match="path_escapes_root"):
        build(tmp_path / "strict", "qa", str(annotations), str(root), strict=True)


def test_chat_rows_skip_and_count_rows_whose_video_cannot_be_placed(tmp_path, synthetic):
    """Rows from elsewhere (the Hub, a hand-edited copy) whose video leaves its root or whose source has no root
    are skipped and counted by reason, not raised on for the whole dataset; map-style and streamed alike."""
    _, splits = build(tmp_path, "grouped", synthetic.hub_rows, synthetic.video_root)
    rows = splits["train"].to_list()
    rows[0] = {**rows[0], "video": "../../outside.mp4"}
    rows[1] = {**rows[1], "source": "nowhere/else"}
    edited = datasets.Dataset.from_list(rows, features=splits["train"].features)
    for dataset in (edited, edited.to_iterable_dataset()):
        skipped = Counter()
        chat = list(videomarathon_chat(dataset, video_root=synthetic.video_root, skipped=skipped))
        assert [row["id"] for row in chat] == [row["id"] for row in rows[2:]]
        assert skipped == {"path_escapes_root": 1, "unknown_source": 1}


def test_rows_feed_the_processor_chat_template(tmp_path, synthetic):
    """Grouped rows -> chat rows with local paths -> `apply_chat_template`: one video, its placeholders, and the
    assistant tokens are exactly the answers."""
    processor, tokenizer = tiny_processor()
    _, splits = build(tmp_path, "grouped", synthetic.hub_rows, synthetic.video_root)
    rows = videomarathon_chat(splits["train"], video_root=synthetic.video_root).select(range(2))
    batch = processor.apply_chat_template(
        [clean_messages(row["messages"]) for row in rows],
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        return_assistant_tokens_mask=True,
        processor_kwargs={"padding": True},
    )
    assert batch["video_num_frames"].shape == (2,)
    video_id = tokenizer.convert_tokens_to_ids("<video>")
    assert ((batch["input_ids"] == video_id).sum(1) > 0).all()
    for index, source in enumerate(splits["train"].select(range(2))):
        mask = batch["assistant_masks"][index].bool() & batch["attention_mask"][index].bool()
        text = tokenizer.decode(batch["input_ids"][index][mask])
        assert text == "".join(f"{pair['answer']}<|im_end|>" for pair in source["qa"])
    assert torch.is_tensor(batch["pixel_values_videos"])


def test_per_source_roots_and_edited_annotations_rebuild(tmp_path, synthetic):
    """`video_roots` maps sources to their own folders; editing the annotation file changes the cache key, so the
    same cache directory gives the new rows instead of the cached ones."""
    annotations = tmp_path / "rows.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in synthetic.rows[:10]))
    roots = {SPEC.source: os.path.join(synthetic.video_root, SPEC.source)}

    def rows():
        builder = VideoMarathon(
            config_name="qa",
            annotations=str(annotations),
            video_roots=roots,
            cache_dir=str(tmp_path / "cache"),
            validation_fraction=0.0,
        )
        builder.download_and_prepare()
        return builder.as_dataset("train")["id"]

    assert rows() == [row["id"] for row in synthetic.rows[:10]]
    annotations.write_text("".join(json.dumps(row) + "\n" for row in synthetic.rows[:12]))
    assert rows() == [row["id"] for row in synthetic.rows[:12]]


def test_hub_rows_from_parquet_with_other_column_names(tmp_path, synthetic):
    """The Hub's Parquet rows, with alias column names (`video_path`, `source`, `task_type`, `qa_type`,
    `candidates`) and lower-case task names, give the same rows as the JSONL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    renamed = [
        {
            "question_id": row["id"],
            "video_path": row["video"],
            "source": row["data_source"],
            "duration": row["duration"],
            "task_type": row["task"].lower().replace(" ", "_"),
            "qa_type": "MC" if row["options"] else "OE",
            "question": row["question"],
            "candidates": row["options"],
            "answer": row["answer"],
        }
        for row in synthetic.rows
    ]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(renamed), path)
    _, from_parquet = build(tmp_path / "parquet", "qa", str(path), synthetic.video_root)
    _, from_jsonl = build(tmp_path / "jsonl", "qa", synthetic.hub_rows, synthetic.video_root)
    for split in from_jsonl:
        assert from_parquet[split].to_list() == from_jsonl[split].to_list()
