"""More faults of the construction pipeline: jobs without a duration (probed from the file; unreadable files fail
alone), prompts over the model's context (transformers and HTTP 400), a corrupt state file on resume, and the QA
filters (quality, duplicates across groups, timestamps in many spellings)."""

from __future__ import annotations

import json
import os

import pytest
from test_construction import (
    ChatServer,
    HTTPFailure,
    ScriptedBackend,
    canned_answer,
    config,
    prompt_of,
    read_rows,
)

from dataset_builder.construction import (
    Backend,
    Completion,
    OpenAIBackend,
    Prompts,
    StageSettings,
    TransformersBackend,
    VideoJob,
    run_pipeline,
)
from dataset_builder.construction.stages import TIMESTAMP, StageContext, StageLog, check_qa_item
from dataset_builder.construction.synthetic import synthetic_jobs
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from dataset_builder.videomarathon import MULTIPLE_CHOICE, OPEN_ENDED

SPEC = SyntheticSpec(num_videos=2, min_duration=4, max_duration=6, fps=2.0, width=64, height=48, seed=11)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_videomarathon(tmp_path_factory.mktemp("faults"), SPEC)


# ---------------------------------------------------------------------------------------------------------------
# Durations from the files
# ---------------------------------------------------------------------------------------------------------------
def test_jobs_without_duration_are_probed_and_unreadable_files_fail_alone(tmp_path, synthetic):
    folder = os.path.join(synthetic.video_root, "synthetic")
    with open(os.path.join(folder, "broken.mp4"), "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    jobs = [VideoJob(job.video, job.source, descriptions=job.descriptions) for job in synthetic_jobs(synthetic)]
    jobs += [VideoJob("broken.mp4", "synthetic"), VideoJob("missing.mp4", "synthetic")]
    report = run_pipeline(jobs, ScriptedBackend(tmp_path / "cache"), config(tmp_path / "out", topics=("Scene",),
                          video_root=synthetic.video_root))  # fmt: skip
    assert report["done"] == 2 and report["failed_by_kind"] == {"video": 2}
    assert "synthetic/broken.mp4: cannot probe the duration" in report["failed"]["synthetic/broken.mp4"]
    assert "missing.mp4: file not found" in report["failed"]["synthetic/missing.mp4"]
    durations = {row["video"]: row["duration"] for row in read_rows(report["rows_path"])}
    assert durations == {t.video: pytest.approx(t.duration, abs=0.51) for t in synthetic.timelines}
    # without a video root there is nothing to probe: a clear error per job, not a crash
    report = run_pipeline(jobs[:1], ScriptedBackend(None), config(tmp_path / "no-root"))
    assert "no duration given and no video file" in next(iter(report["failed"].values()))


# ---------------------------------------------------------------------------------------------------------------
# Context overflow
# ---------------------------------------------------------------------------------------------------------------
def tiny_causal_lm(max_positions: int):
    """A tiny random Qwen2 LM with a character-level tokenizer and a plain chat template."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from hour_llava_testing.tiny_tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    torch.manual_seed(0)
    sizes = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config_ = Qwen2Config(
        vocab_size=len(tokenizer), num_key_value_heads=1, max_position_embeddings=max_positions, **sizes
    )
    return Qwen2ForCausalLM(config_).eval(), tokenizer


def test_prompts_over_the_context_fail_their_video_only(tmp_path, synthetic):
    model, tokenizer = tiny_causal_lm(max_positions=64)
    backend = TransformersBackend("tiny", tmp_path / "cache", model_obj=model, tokenizer=tokenizer)
    report = run_pipeline(synthetic_jobs(synthetic), backend, config(tmp_path / "out", topics=("Scene",)))
    assert report["done"] == 0 and report["failed_by_kind"] == {"context_overflow": 2}
    assert all("exceeds the model's context of 64 tokens" in error for error in report["failed"].values())
    assert backend.cost.calls == 0  # refused before generating
    # the same model with a window that fits runs (its random answers are malformed, but nothing overflows)
    roomy = TransformersBackend("tiny", tmp_path / "cache", model_obj=model, tokenizer=tokenizer, context_length=8192)
    settings = StageSettings(max_new_tokens=dict.fromkeys(("clip", "split", "event", "global", "qa"), 2))
    fits = run_pipeline(synthetic_jobs(synthetic), roomy, config(tmp_path / "out", topics=("Scene",),
                        settings=settings))  # fmt: skip
    assert fits["done"] == 2 and fits["failed"] == {}


def test_http_context_errors_are_not_retried_and_fail_their_video(tmp_path, synthetic):
    limit = 500  # characters: the clip caption prompts (600+) do not fit

    def respond(body):
        prompt = prompt_of(body)
        if len(prompt) > limit:  # how vLLM words it
            raise HTTPFailure(
                400, f"This model's maximum context length is 300 tokens. However, you requested {len(prompt)}"
            )
        return canned_answer(prompt), 1, 1

    with ChatServer(respond) as server:
        backend = OpenAIBackend(server.url, "canned", tmp_path / "cache", backoff=0.01, timeout=5)
        report = run_pipeline(synthetic_jobs(synthetic), backend, config(tmp_path / "out", topics=("Scene",)))
        long_prompts = server.requests - backend.cost.calls
    assert report["failed_by_kind"] == {"context_overflow": 2} and report["done"] == 0
    assert all("does not fit the model's context" in error for error in report["failed"].values())
    assert backend.cost.transport_retries == 0 and long_prompts >= 2  # asked once each, never retried
    for path in (tmp_path / "out" / "state").rglob("*.json"):
        assert json.load(open(path))["error_kind"] == "context_overflow"


# ---------------------------------------------------------------------------------------------------------------
# A corrupt state file on resume
# ---------------------------------------------------------------------------------------------------------------
def test_a_corrupt_state_file_is_moved_aside_and_its_video_redone_from_the_cache(tmp_path, synthetic):
    jobs = synthetic_jobs(synthetic)
    first = run_pipeline(jobs, ScriptedBackend(tmp_path / "cache"), config(tmp_path / "out"))
    states = sorted((tmp_path / "out" / "state").rglob("*.json"))
    text = states[0].read_text()
    states[0].write_text(text[: len(text) // 2])  # half-written
    states[1].write_text(json.dumps({"video": "x"}))  # parses, but is not a state
    again = ScriptedBackend(tmp_path / "cache")
    second = run_pipeline(jobs, again, config(tmp_path / "out"))
    assert second["done"] == 2 and len(second["recovered_states"]) == 2
    assert read_rows(second["rows_path"]) == read_rows(first["rows_path"])
    assert again.answered == 0 and again.cost.cache_hits > 0  # redone entirely from the disk cache
    assert os.path.isfile(str(states[0]) + ".corrupt") and json.load(open(states[0]))["done"]


# ---------------------------------------------------------------------------------------------------------------
# QA filters
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, leak",
    [
        ("What happens at 1:02:03?", "1:02:03"),
        ("What is shown after 12.5s?", "12.5s"),
        ("What is on screen at 5 minutes?", "5 minutes"),
        ("What changes at 1m30s?", "1m30s"),
        ("What happens in minute 3?", "minute 3"),
        ("What is shown at the 12th second?", "12th second"),
        ("What happens after five minutes?", "five minutes"),
        ("What is shown after half a minute?", "half a minute"),
        ("What is at the 10-second mark?", "10-second"),
        ("Which 3 shapes appear in the second scene?", None),
        ("In how many steps does the red circle move?", None),
    ],
)
def test_timestamp_spellings(text, leak):
    match = TIMESTAMP.search(text)
    assert (match.group(0) if match else None) == leak


def qa_context() -> StageContext:
    return StageContext(None, Prompts(), StageSettings(), StageLog(), None)


@pytest.mark.parametrize(
    "item, reason",
    [
        ({"question": "...", "answer": "red"}, "placeholder"),
        ({"question": "Which <task name> is it?", "answer": "red"}, "placeholder"),
        ({"question": "Colour?", "answer": "red"}, "shorter than 3 words"),
        ({"question": "What is the colour?", "answer": "what is the colour"}, "repeats the question"),
        ({"question": "Which colour is shown?", "options": ["A", "B"], "answer": "A"}, "bare letter"),
    ],
)
def test_quality_filters(item, reason):
    question_type = MULTIPLE_CHOICE if "options" in item else OPEN_ENDED
    with pytest.raises(ValueError, match=reason):
        check_qa_item({"task": "Scene Recognition", **item}, ["Scene Recognition"], question_type, qa_context())


class RepeatingBackend(Backend):
    """Valid answers whose QA questions are the same in every group (a model that repeats itself)."""

    backend_id = "repeating"

    def _generate_uncached(self, prompts, max_new_tokens, temperature, json_schema):
        out = []
        for prompt in prompts:
            text = canned_answer(prompt)
            if text.startswith('{"qa"'):
                value = json.loads(text)  # one item per task (the canned extra items are dropped), all alike
                value["qa"] = [item for item in value["qa"] if item["question"].startswith(("What about", "Which is"))]
                for item in value["qa"]:
                    item["question"] = "Which colour  is the Background?"  # spacing and case differ from below
                value["qa"][0]["question"] = "which colour is the background"
                text = json.dumps(value)
            out.append(Completion(text, 1, 1))
        return out


def test_repeated_questions_are_kept_once_per_video_and_type(tmp_path, synthetic):
    backend = RepeatingBackend("repeat", tmp_path / "cache")
    report = run_pipeline(synthetic_jobs(synthetic), backend, config(tmp_path / "out", topics=("Scene", "Event")))
    rows = read_rows(report["rows_path"])
    keys = [(row["video"], row["question_type"]) for row in rows]
    assert sorted(keys) == sorted({(t.video, q) for t in synthetic.timelines for q in (OPEN_ENDED, MULTIPLE_CHOICE)})
    # per video and type: 4 groups (Scene and Event, short and long) with 5 tasks in all, one item kept
    assert report["log"]["rejected"]["duplicate_question"] == 2 * 2 * (5 - 1)
