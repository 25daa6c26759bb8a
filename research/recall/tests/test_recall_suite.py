"""The recall suite says what its rows claim: answers read back from decoded pixels, disjoint splits, resumable."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from dataset_builder.media import write_jsonl_atomically
from dataset_builder.videomarathon import MULTIPLE_CHOICE, OPEN_ENDED, VideoMarathon
from modeling_hour_llava.video_loading_hour_llava import decode_frames
from research.recall.recall_suite import (
    COUNT_WORDS,
    RECALL_TASKS,
    RecallSpec,
    answers_from_frames,
    grouped_chat,
    write_recall_suite,
)
from research.recall.tasks.recall import doc_to_text, is_correct

SHORT = {"min_minutes": 5.0, "max_minutes": 6.0, "size": 32}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_recall_suite(tmp_path_factory.mktemp("recall"), RecallSpec(num_videos=3, seed=5, **SHORT))


def test_every_answer_is_what_the_decoded_frames_show(suite):
    for timeline in suite.timelines:
        frames, _, _ = decode_frames(os.path.join(suite.video_root, "recall", timeline.video), size=32, min_frames=1)
        frames = frames.permute(0, 2, 3, 1).numpy()
        assert len(frames) == timeline.duration  # 1 fps, one frame per second
        seen = answers_from_frames(frames, timeline)
        flashes = dict(item.split(":", 1) for item in seen["shapes"].split(","))
        rows = {row["id"].split("-", 1)[1]: row for row in suite.rows if row["video"] == timeline.video}
        assert rows["count-open-ended"]["answer"] == seen["count"]
        assert rows["order-open-ended"]["answer"] == seen["order"]
        last_shape, (last_colour, last_scene) = list(flashes.items())[-1][0], list(flashes.values())[-1].split(":")
        assert rows["colour-open-ended"]["answer"] == last_colour
        assert rows["shape-open-ended"]["answer"] == last_shape
        assert rows["scene-open-ended"]["answer"] == last_scene


def test_no_question_gives_away_an_answer(suite):
    """Grouped training samples hold every question about a video: none may name what another asks for."""
    for timeline in suite.timelines:
        rows = [row for row in suite.rows if row["video"] == timeline.video and row["question_type"] == OPEN_ENDED]
        answers = {row["answer"] for row in rows}
        for row in rows:
            words = set(row["question"].lower().rstrip("?").split())
            assert not words & answers, (row["question"], answers)


def test_each_video_gets_every_task_in_both_forms_and_flashes_are_brief(suite):
    for timeline in suite.timelines:
        rows = [row for row in suite.rows if row["video"] == timeline.video]
        assert {(r["recall_task"], r["question_type"]) for r in rows} == {
            (task, kind) for task in RECALL_TASKS for kind in (OPEN_ENDED, MULTIPLE_CHOICE)
        }
        assert 1 <= len(timeline.flashes) <= len(COUNT_WORDS)
        assert all(2 <= f.end - f.start <= 3 for f in timeline.flashes)
        assert 300 <= timeline.duration < 360
        # Scene cuts outnumber flash frames: keyframe selection has to choose between them.
        assert len(timeline.scenes) > 2 * len(timeline.flashes)
        for row in rows:
            if row["question_type"] == MULTIPLE_CHOICE:
                assert 3 <= len(row["options"]) <= 4 and len({o[3:] for o in row["options"]}) == len(row["options"])
                assert row["answer"] in "ABCD"


def test_train_and_test_never_share_a_video_and_stratified_lengths_cover_the_span(tmp_path):
    train = write_recall_suite(tmp_path / "train", RecallSpec(num_videos=2, split="train", **SHORT))
    test = write_recall_suite(tmp_path / "test", RecallSpec(num_videos=4, split="test", stratified=True, **SHORT))
    assert not {t.video for t in train.timelines} & {t.video for t in test.timelines}
    assert sorted(t.duration for t in test.timelines) == [300, 315, 330, 345]


def test_a_rerun_keeps_its_videos_and_a_changed_spec_rewrites_them(tmp_path):
    spec = RecallSpec(num_videos=2, **SHORT)
    first = write_recall_suite(tmp_path, spec)
    path = os.path.join(first.video_root, "recall", first.timelines[0].video)
    stamp = os.stat(path).st_mtime_ns
    again = write_recall_suite(tmp_path, spec)
    assert os.stat(path).st_mtime_ns == stamp and again.replaced == [] and again.rows == first.rows
    changed = write_recall_suite(tmp_path, RecallSpec(num_videos=2, seed=9, **SHORT))
    assert sorted(changed.replaced) == sorted(f"recall/{t.video}" for t in first.timelines)
    assert os.stat(path).st_mtime_ns != stamp


def test_the_rows_load_with_the_videomarathon_builder(suite, tmp_path):
    builder = VideoMarathon(config_name="qa", cache_dir=str(tmp_path), annotations=suite.hub_rows,
                            video_root=suite.video_root, validation_fraction=0.0)  # fmt: skip
    builder.download_and_prepare()
    rows = builder.as_dataset(split="train")
    assert len(rows) == len(suite.rows) == 30
    assert rows[0]["messages"][0]["content"][0]["path"].startswith("recall/")


def test_the_lmms_eval_task_scores_replies_the_way_the_model_is_trained_to_answer(suite):
    open_row = next(r for r in suite.rows if r["question_type"] == OPEN_ENDED)
    choice_row = next(r for r in suite.rows if r["question_type"] == MULTIPLE_CHOICE)
    assert doc_to_text(open_row) == open_row["question"]
    assert doc_to_text(choice_row).splitlines()[1:5] == choice_row["options"]
    assert is_correct(open_row, open_row["answer"].capitalize() + ".")
    assert not is_correct(open_row, "nothing")
    assert is_correct(choice_row, choice_row["answer"])
    wrong = next(letter for letter in "ABCD" if letter != choice_row["answer"])
    assert not is_correct(choice_row, wrong)
    assert np.isfinite(open_row["duration"])


def test_a_curriculum_stage_puts_the_one_flash_at_the_start_and_asks_only_the_chosen_tasks(tmp_path):
    spec = RecallSpec(num_videos=2, flash_start=0, max_flashes=1, tasks=("colour", "scene"),
                      question_types=(OPEN_ENDED,), **SHORT)  # fmt: skip
    suite = write_recall_suite(tmp_path, spec)
    assert {(r["recall_task"], r["question_type"]) for r in suite.rows} == {
        ("colour", OPEN_ENDED),
        ("scene", OPEN_ENDED),
    }
    for timeline in suite.timelines:
        (flash,) = timeline.flashes
        assert flash.start == 0 and 2 <= flash.end <= 3
        frames, _, _ = decode_frames(os.path.join(suite.video_root, "recall", timeline.video), size=32, min_frames=1)
        seen = answers_from_frames(frames.permute(0, 2, 3, 1).numpy(), timeline)
        assert seen["shapes"] == f"{flash.shape}:{flash.colour}:{timeline.background_at(0)}"
    with pytest.raises(ValueError, match="flash_start=0 needs max_flashes=1"):
        write_recall_suite(tmp_path / "bad", RecallSpec(num_videos=1, flash_start=0, **SHORT))


def test_at_the_suites_budget_frame_selection_misses_an_hours_flashes(tmp_path):
    """The suite's premise, on the suite's own model: an hour keeps 64 of 3,600 frames, so uniform sampling keeps
    a 2-3 s flash 3-5 % of the time; keyframe selection (largest change between frame summaries of the projected
    memory) catches the flashes of 10-minute videos but spends an hour's 64 frames on its ~140 scene cuts."""
    from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor
    from modeling_hour_llava.memory_hour_llava import temporal_forgetting
    from research.recall.recall_model import write_recall_init

    model_dir = write_recall_init(tmp_path / "model", "keyframe", seed=0)
    model = HourLlavaForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = HourLlavaProcessor.from_pretrained(model_dir)

    uniform = set(temporal_forgetting(3600, model.config, mode="uniform").tolist())
    windows = [set(range(start, start + 2)) for start in range(3599)]
    assert len(uniform) == 64 and 0.03 < sum(bool(w & uniform) for w in windows) / len(windows) < 0.05

    def keyframe_catches(minutes: int) -> tuple[int, int, int]:
        """(flashes with a frame among the keyframes, flashes, keyframes on scene cuts) over three videos."""
        spec = RecallSpec(num_videos=3, min_minutes=minutes, max_minutes=minutes, seed=11)
        suite = write_recall_suite(tmp_path / f"{minutes}", spec)
        caught = total = on_cuts = 0
        for timeline in suite.timelines:
            stream = processor.video_processor.open_stream(os.path.join(suite.video_root, "recall", timeline.video))
            with torch.inference_mode():
                frames = model.encode_video(video_streams=[stream]).frame_tokens[0]
            kept = set(temporal_forgetting(len(frames), model.config, frame_summaries=frames.mean(1)).tolist())
            assert len(kept) == 64
            caught += sum(bool(kept & set(range(f.start, f.end))) for f in timeline.flashes)
            total += len(timeline.flashes)
            on_cuts += len(kept & {start for start, _, _ in timeline.scenes[1:]})
            if minutes == 60:
                assert 110 < len(timeline.scenes) < 180  # "about 140 cuts in an hour" (scenes of 10 to 40 s)
        return caught, total, on_cuts

    caught, total, _ = keyframe_catches(10)
    assert caught >= total - 1
    caught, total, on_cuts = keyframe_catches(60)
    assert caught <= 1 < total and on_cuts > 3 * 50


def test_grouped_chat_is_rebuilt_when_the_questions_change_and_reused_otherwise(tmp_path):
    suite = write_recall_suite(tmp_path / "suite", RecallSpec(num_videos=2, question_types=(OPEN_ENDED,), **SHORT))
    path = tmp_path / "chat" / "train.parquet"
    rows = grouped_chat(suite, path, group_size=5)
    assert len(rows) == 2 and all(len(row["messages"]) == 10 for row in rows)  # 5 questions and answers per video
    stamp = path.stat().st_mtime_ns
    assert grouped_chat(suite, path, group_size=5).to_list() == rows.to_list()
    assert path.stat().st_mtime_ns == stamp  # same rows: reused
    edited = [dict(row, question=row["question"].replace("flashed", "appeared")) for row in suite.rows]
    write_jsonl_atomically(suite.hub_rows, edited)
    rebuilt = grouped_chat(suite, path, group_size=5)
    assert "appeared" in json.dumps(rebuilt.to_list()) and "flashed" not in json.dumps(rebuilt.to_list())
    assert [p.name for p in path.parent.iterdir()] == ["train.parquet"]  # nothing else where a trainer loads


def test_the_needle_is_the_one_flash_of_its_colour_among_many_and_its_answers_are_in_the_pixels(tmp_path):
    """The needle form: flashes every 5-12 s, each inside one scene, more of them than the 16 frames a
    `kept_frames_budget(16)` model keeps; exactly one flash of its colour, and its rows' answers read back from
    the decoded frames."""
    from research.recall.recall_suite import NEEDLE, NEEDLE_TASKS, needle_of

    spec = RecallSpec(num_videos=3, min_minutes=3.0, max_minutes=4.0, split="needle", seed=2, **NEEDLE)
    suite = write_recall_suite(tmp_path, spec)
    assert {r["recall_task"] for r in suite.rows} == set(NEEDLE_TASKS)
    for timeline in suite.timelines:
        frames, _, _ = decode_frames(os.path.join(suite.video_root, "recall", timeline.video), size=32, min_frames=1)
        seen = answers_from_frames(frames.permute(0, 2, 3, 1).numpy(), timeline)
        flashes = [item.split(":") for item in seen["shapes"].split(",")]  # shape, colour, background per flash
        assert len(flashes) > 16 and seen["count"] == str(len(flashes))
        colours = [colour for _, colour, _ in flashes]
        ((shape, colour, background),) = [f for f in flashes if colours.count(f[1]) == 1]
        assert needle_of(timeline).colour == colour
        rows = {row["recall_task"]: row for row in suite.rows if row["video"] == timeline.video}
        assert colour in rows["needle_shape"]["question"] and rows["needle_shape"]["answer"] == shape
        assert colour in rows["needle_scene"]["question"] and rows["needle_scene"]["answer"] == background
        assert not {shape, background} & set(" ".join(r["question"] for r in rows.values()).rstrip("?").split())
        starts = [flash.start for flash in timeline.flashes]
        assert all(5 <= later - earlier <= 12 + 15 for earlier, later in zip(starts, starts[1:], strict=False))
        for flash in timeline.flashes:
            assert 2 <= flash.end - flash.start <= 3
            assert timeline.background_at(flash.start) == timeline.background_at(flash.end - 1)
    with pytest.raises(ValueError, match="not a needle-form video"):
        needle_of(write_recall_suite(tmp_path / "one", RecallSpec(num_videos=1, **SHORT)).timelines[0])


def test_a_needle_colour_stage_gives_every_video_the_same_needle_colour_and_question():
    import random

    from research.recall.recall_suite import NEEDLE, make_timeline, needle_of, recall_question

    spec = RecallSpec(needle_colour="pink", **NEEDLE)
    timelines = [make_timeline("v.mp4", 200, spec, random.Random(seed)) for seed in range(20)]
    assert {needle_of(t).colour for t in timelines} == {"pink"}
    assert {recall_question("needle_shape", t, random.Random(0))[0] for t in timelines} == {
        "Which shape flashed on screen in pink?"
    }
    assert len({needle_of(t).shape for t in timelines}) == 3  # what it asks for still varies
    with pytest.raises(ValueError, match="needle_colour='mauve'"):
        make_timeline("v.mp4", 200, RecallSpec(needle_colour="mauve", **NEEDLE), random.Random(0))
