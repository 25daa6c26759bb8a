"""The stages of the VideoMarathon construction, one function each, on one video:

    clip captions (six aspects per clip) -> event splitting -> event captions -> global caption -> QA per
    (topic, short/long form, question type)

Each stage builds prompts from `Prompts`, asks a backend through `ask`, which parses the JSON, validates it
against the stage's schema and the stage's own checks, retries malformed answers (`max_attempts`, a higher
temperature after the first) and then logs and skips them (`StageLog`). Short-form tasks are asked from the
time-stamped clip captions, long-form tasks from the event captions and the global caption.

Clip captions come from a captioner: `vision.VisionCaptioner` shows a VLM the frames of each clip;
`TextCaptioner` has a text-only LLM caption each clip from a time-stamped description of the video that the
caller supplies (`VideoJob.descriptions`: a log, a transcript, or for the synthetic videos their ground-truth
timeline). Both implement `caption(ctx, job, clips)`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..videomarathon import MULTIPLE_CHOICE, OPEN_ENDED, TAXONOMY, normalize_task
from . import schemas
from .backends import Backend, Completion, Cost
from .prompts import Prompts, is_long_form

NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|"
    "eighteen|nineteen|twenty|thirty|forty|fifty|sixty|ninety|hundred|half|quarter"
)
TIME_UNITS = r"(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s|ms)"
# Times a question may leak: clock times (1:02, 01:02:03, 0:05.5), compact durations (1m30s, 1h05m), a number
# with a unit (12.5s, 5 minutes, 10-second), a unit with a number (minute 3), ordinals (the 12th second), number
# words (five minutes, half a minute) and "t=12".
TIMESTAMP = re.compile(
    r"\b\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?\b"
    r"|\b\d+\s*[hm]\s*\d+(?:\.\d+)?\s*[ms]?\b"
    rf"|\b\d+(?:[.,]\d+)?\s*-?\s*{TIME_UNITS}\b"
    r"|\b(?:second|minute|hour|sec|min)\s+\d+(?:\.\d+)?\b"
    r"|\b\d+(?:st|nd|rd|th)\s+(?:second|minute|hour)s?\b"
    rf"|\b(?:{NUMBER_WORDS})(?:[\s-]+(?:{NUMBER_WORDS}|and|an?))*[\s-]+(?:seconds?|minutes?|hours?)\b"
    r"|\bt\s*=\s*\d",
    re.IGNORECASE,
)
PLACEHOLDER = re.compile(r"^\W*$|\.\.\.|<[^>]*>")  # nothing but punctuation, "...", "<task name>"
BARE_LETTER = re.compile(r"^\(?[A-Za-z][.)]?$")
MIN_QUESTION_WORDS = 3
OPTION_PREFIX = re.compile(r"^\s*\(?([A-Za-z])[.):]\s+")
ANSWER_LETTER = re.compile(r"^\s*\(?([A-Za-z])\)?(?:[.):]|\s*$)")
EXAMPLES_PER_STAGE = 5
QUESTION_TYPE_CODES = {OPEN_ENDED: "oe", MULTIPLE_CHOICE: "mc"}


class JobError(RuntimeError):
    """A video that cannot be processed as given (unreadable file, no duration and no file, ...): the pipeline
    fails that video with this message and `kind` ("video", "job") and goes on with the others."""

    def __init__(self, message: str, kind: str = "job"):
        super().__init__(message)
        self.kind = kind


@dataclass
class StageSettings:
    """Generation settings: tokens per stage, temperatures, attempts per prompt, options per MC question."""

    max_new_tokens: dict[str, int] = field(
        default_factory=lambda: {"clip": 384, "split": 256, "event": 384, "global": 512, "qa": 1024}
    )
    temperature: float = 0.0
    retry_temperature: float = 0.7
    max_attempts: int = 3
    num_options: int = 4
    fallback_event_clips: int = 3


@dataclass
class VideoJob:
    """One video to annotate: its path relative to its source's root, the source, its duration in seconds (None:
    probed from the file), optional time-stamped descriptions `[{"start": s, "end": s, "text": ...}]` for a
    text-only captioner, and the file itself (`path`; the pipeline fills it from its video roots)."""

    video: str
    source: str
    duration: float | None = None
    descriptions: list[dict] = field(default_factory=list)
    path: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.video}"


@dataclass
class StageLog:
    """Per-video bookkeeping: prompts asked, retries, malformed answers, skipped prompts, rejected QA items (by
    reason), fallbacks, with a few examples each; stored in the video's state file."""

    asked: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    fallbacks: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def example(self, what: str, text: str) -> None:
        bucket = self.examples.setdefault(what, [])
        if len(bucket) < EXAMPLES_PER_STAGE:
            bucket.append(text[:300])

    def as_dict(self) -> dict:
        return {name: dict(value) for name, value in vars(self).items()}

    @classmethod
    def from_dict(cls, data: dict | None) -> StageLog:
        data = data or {}
        log = cls(**{name: Counter(data.get(name, {})) for name in ("asked", "retries", "malformed", "skipped")})
        log.rejected, log.fallbacks = Counter(data.get("rejected", {})), Counter(data.get("fallbacks", {}))
        log.examples = dict(data.get("examples", {}))
        return log


@dataclass
class StageContext:
    """What every stage needs: the LLM backend, prompts, settings, and the video's log and cost."""

    llm: Backend
    prompts: Prompts
    settings: StageSettings
    log: StageLog
    cost: Cost


def _add_cost(cost: Cost, completions: list[Completion]) -> None:
    for completion in completions:
        cost.add(completion)


def ask(
    ctx: StageContext,
    stage: str,
    prompts: list[str],
    schema: dict | list[dict],
    check: Callable[[object], object] | list[Callable[[object], object]] | None = None,
    backend: Backend | None = None,
    images: list[list] | None = None,
) -> list[object | None]:
    """Ask every prompt (one batched call per attempt; `schema`: one for all or one per prompt; `images`: each
    prompt's frames for a vision backend); parse,
    validate and `check` each answer (one check, or one per prompt; it returns the cleaned value or raises
    OutputError); re-ask the failed ones up to `max_attempts`; None for a prompt that never gave a valid answer."""
    backend = backend or ctx.llm
    checks = check if isinstance(check, list) else [check] * len(prompts)
    own_schemas = schema if isinstance(schema, list) else [schema] * len(prompts)
    settings = ctx.settings
    results: list[object | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    ctx.log.asked[stage] += len(prompts)
    errors: dict[int, str] = {}
    for attempt in range(settings.max_attempts):
        if not pending:
            break
        if attempt:
            ctx.log.retries[stage] += len(pending)
        temperature = settings.temperature if attempt == 0 else settings.retry_temperature
        completions = backend.generate(
            [prompts[i] for i in pending],
            settings.max_new_tokens[_budget(stage)],
            temperature,
            [own_schemas[i] for i in pending] if isinstance(schema, list) else schema,
            attempt,
            images=None if images is None else [images[i] for i in pending],
        )
        _add_cost(ctx.cost, completions)
        failed = []
        for index, completion in zip(pending, completions, strict=True):
            try:
                value = schemas.parse(completion.text, own_schemas[index])
                results[index] = checks[index](value) if checks[index] else value
            except schemas.OutputError as error:
                ctx.log.malformed[stage] += 1
                ctx.log.example(f"malformed:{stage}", f"{error} | output: {completion.text}")
                errors[index] = str(error)
                failed.append(index)
        pending = failed
    for index in pending:
        ctx.log.skipped[stage] += 1
        ctx.log.example(f"skipped:{stage}", errors.get(index, ""))
    return results


def _budget(stage: str) -> str:
    return {"clip_captions": "clip", "events": "split", "event_captions": "event", "global_caption": "global"}.get(
        stage, "qa"
    )


# ---------------------------------------------------------------------------------------------------------------
# Clips and clip captions
# ---------------------------------------------------------------------------------------------------------------
def make_clips(duration: float, clip_seconds: float) -> list[dict]:
    """Consecutive clips `[{"index", "start", "end"}]` of `clip_seconds` covering the video (the last is shorter)."""
    if duration <= 0 or clip_seconds <= 0:
        raise ValueError(f"duration {duration} and clip_seconds {clip_seconds} must be positive")
    count = max(1, math.ceil(duration / clip_seconds - 1e-9))
    return [
        {"index": k, "start": round(k * clip_seconds, 3), "end": round(min(duration, (k + 1) * clip_seconds), 3)}
        for k in range(count)
    ]


def clip_content(job: VideoJob, clip: dict) -> str:
    """The caller's descriptions that overlap a clip, with their times, one per line."""
    lines = [
        f"- from {max(d['start'], clip['start']):g}s to {min(d['end'], clip['end']):g}s: {d['text']}"
        for d in job.descriptions
        if d["start"] < clip["end"] and d["end"] > clip["start"]
    ]
    if not lines:
        raise JobError(
            f"{job.key}: no description covers clip {clip['start']}s-{clip['end']}s; describe the whole video"
        )
    return "\n".join(lines)


class TextCaptioner:
    """Clip captions from a text-only LLM given the caller's time-stamped descriptions of the video."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def caption(self, ctx: StageContext, job: VideoJob, clips: list[dict]) -> list[dict | None]:
        prompts = [
            ctx.prompts.clip_caption.format(start=c["start"], end=c["end"], content=clip_content(job, c)) for c in clips
        ]
        answers = ask(ctx, "clip_captions", prompts, schemas.CLIP_CAPTION, backend=self.backend)
        return [
            None if answer is None else {**clip, "captions": answer}
            for clip, answer in zip(clips, answers, strict=True)
        ]


# ---------------------------------------------------------------------------------------------------------------
# Events and the global caption
# ---------------------------------------------------------------------------------------------------------------
def _clip_line(position: int, clip: dict) -> str:
    return f"{position}. [{clip['start']:g}s-{clip['end']:g}s] {clip['captions']['summary']}"


def check_events(value: dict, num_clips: int) -> list[list[int]]:
    """Events as [start_clip, end_clip] that cover 0..num_clips-1 in order without gaps or overlaps."""
    events = [[event["start_clip"], event["end_clip"]] for event in value["events"]]
    expected = 0
    for start, end in events:
        if start != expected or end < start or end >= num_clips:
            raise schemas.OutputError(f"events {events} do not cover clips 0..{num_clips - 1} in order")
        expected = end + 1
    if expected != num_clips:
        raise schemas.OutputError(f"events {events} stop before clip {num_clips - 1}")
    return events


def split_events(ctx: StageContext, captions: list[dict]) -> list[list[int]]:
    """Group the captioned clips into events (positions in `captions`); a fixed grouping when the model fails."""
    if len(captions) == 1:
        return [[0, 0]]
    prompt = ctx.prompts.event_split.format(clips="\n".join(_clip_line(i, c) for i, c in enumerate(captions)))
    check = lambda value: check_events(value, len(captions))
    [events] = ask(ctx, "events", [prompt], schemas.EVENT_SPLIT, check)
    if events is None:
        ctx.log.fallbacks["events"] += 1
        size = max(1, ctx.settings.fallback_event_clips)
        events = [[start, min(start + size, len(captions)) - 1] for start in range(0, len(captions), size)]
    return events


def caption_events(ctx: StageContext, captions: list[dict], events: list[list[int]]) -> list[dict | None]:
    """One caption per event from its clips' captions."""
    spans = [captions[start : end + 1] for start, end in events]
    prompts = [
        ctx.prompts.event_caption.format(
            start=span[0]["start"], end=span[-1]["end"], clips="\n".join(_clip_line(i, c) for i, c in enumerate(span))
        )
        for span in spans
    ]
    answers = ask(ctx, "event_captions", prompts, schemas.EVENT_CAPTION)
    return [
        None if answer is None else {"start": span[0]["start"], "end": span[-1]["end"], "caption": answer["caption"]}
        for span, answer in zip(spans, answers, strict=True)
    ]


def caption_video(ctx: StageContext, job: VideoJob, events: list[dict]) -> str | None:
    """The global caption from the event captions."""
    lines = "\n".join(f"[{e['start']:g}s-{e['end']:g}s] {e['caption']}" for e in events)
    [answer] = ask(ctx, "global_caption", [ctx.prompts.global_caption.format(duration=job.duration, events=lines)],
                   schemas.GLOBAL_CAPTION)  # fmt: skip
    return None if answer is None else answer["caption"]


# ---------------------------------------------------------------------------------------------------------------
# QA
# ---------------------------------------------------------------------------------------------------------------
def qa_groups(topics: list[str], question_types: list[str]) -> list[tuple[str, str, str, list[str]]]:
    """(topic, "short"/"long", question type, tasks) for every non-empty group: one prompt each."""
    groups = []
    for topic in topics:
        for form in ("short", "long"):
            tasks = [task for task in TAXONOMY[topic] if is_long_form(task) == (form == "long")]
            groups.extend((topic, form, qtype, tasks) for qtype in question_types if tasks)
    return groups


def qa_context(form: str, clips: list[dict], events: list[dict], global_caption: str | None) -> str:
    """Short form: the time-stamped clip captions. Long form: the global caption and the event captions."""
    if form == "short":
        return "\n".join(
            f"[{c['start']:g}s-{c['end']:g}s] "
            + " ".join(f"{aspect}: {text}" for aspect, text in c["captions"].items() if aspect != "summary")
            + f" summary: {c['captions']['summary']}"
            for c in clips
        )
    lines = [f"Whole video: {global_caption}"] if global_caption else []
    lines += [f"[{e['start']:g}s-{e['end']:g}s] {e['caption']}" for e in events]
    return "\n".join(lines)


def _strip_label(option: str) -> str:
    return OPTION_PREFIX.sub("", option, count=1).strip()


def answer_index(answer: str, options: list[str]) -> int:
    """The index of the right option from a letter ("B", "(B)", "B. text") or the option's own text."""
    match = ANSWER_LETTER.match(answer)
    if match:
        index = ord(match.group(1).upper()) - ord("A")
        if 0 <= index < len(options):
            return index
    folded = [option.casefold() for option in options]
    if _strip_label(answer).casefold() in folded:
        return folded.index(_strip_label(answer).casefold())
    raise schemas.OutputError(f"answer {answer!r} is not among the options {options}", "answer_not_in_options")


def check_timestamps(task: str, question: str, answer: str, options: list[str], policy: dict[str, str]) -> None:
    """Refuse times where the task's policy forbids them (see prompts.TIMESTAMP_POLICY)."""
    rule = policy.get(task, "free")
    if rule == "free":
        return
    wrong = [o for i, o in enumerate(options)] if rule == "none" else []
    texts = {"question": question, **{f"option {i}": o for i, o in enumerate(wrong)}}
    if rule == "none":
        texts["answer"] = answer
    for where, text in texts.items():
        if TIMESTAMP.search(text):
            raise schemas.OutputError(
                f"{task}: timestamp {TIMESTAMP.search(text).group(0)!r} in the {where}", "timestamp"
            )


def question_key(question: str) -> str:
    """A question's identity for deduplication: case, punctuation and spacing ignored."""
    return re.sub(r"[\W_]+", " ", question.casefold()).strip()


def check_quality(question: str, answer: str, options: list[str]) -> None:
    """Refuse template leftovers and degenerate items: placeholders ("...", "<task name>", punctuation only), a
    question of fewer than MIN_QUESTION_WORDS words, an answer that repeats the question, bare-letter options."""
    for where, text in {"question": question, "answer": answer, **{f"option {o!r}": o for o in options}}.items():
        if PLACEHOLDER.search(text):
            raise schemas.OutputError(f"placeholder text in the {where}: {text!r}", "placeholder")
    if len(re.findall(r"\w+", question)) < MIN_QUESTION_WORDS:
        raise schemas.OutputError(f"question {question!r} is shorter than {MIN_QUESTION_WORDS} words", "short_question")
    if question_key(answer) == question_key(question):
        raise schemas.OutputError(f"the answer repeats the question {question!r}", "answer_is_question")
    if any(BARE_LETTER.match(option) for option in options):
        raise schemas.OutputError(f"an option is a bare letter: {options}", "letter_option")


def check_qa_item(item: dict, tasks: list[str], question_type: str, ctx: StageContext) -> dict:
    """A validated QA item: a task of the group, and for multiple choice 2+ distinct options with the answer
    among them (options relabelled "A. ...", the answer as its letter); timestamps per the task's policy."""
    task = normalize_task(item["task"])
    if task not in tasks:
        raise schemas.OutputError(f"task {item['task']!r} is not one of this prompt's tasks {tasks}", "wrong_task")
    question, answer = item["question"].strip(), item["answer"].strip()
    options: list[str] = []
    if question_type == MULTIPLE_CHOICE:
        options = [_strip_label(option) for option in item["options"]]
        if any(not option for option in options) or len({o.casefold() for o in options}) != len(options):
            raise schemas.OutputError(f"options are empty or not distinct: {options}", "options")
        index = answer_index(answer, options)
        check_quality(question, answer, options)
        wrong = [option for i, option in enumerate(options) if i != index]
        check_timestamps(task, question, options[index], wrong, ctx.prompts.timestamp_policy)
        return {
            "task": task,
            "question": question,
            "options": [f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(options)],
            "answer": chr(ord("A") + index),
        }
    check_quality(question, answer, [])
    check_timestamps(task, question, answer, options, ctx.prompts.timestamp_policy)
    return {"task": task, "question": question, "options": [], "answer": answer}


def check_qa(value: dict, tasks: list[str], question_type: str, ctx: StageContext, stage: str) -> list[dict]:
    """Keep the valid items of a QA answer (the others are counted by reason); OutputError when none is valid."""
    kept, seen = [], set()
    for item in value["qa"]:
        try:
            clean = check_qa_item(item, tasks, question_type, ctx)
        except (schemas.OutputError, ValueError) as error:
            ctx.log.rejected[getattr(error, "reason", "unknown_task")] += 1
            ctx.log.example(f"rejected:{stage}", str(error))
            continue
        if question_key(clean["question"]) in seen:
            ctx.log.rejected["duplicate_question"] += 1
            continue
        seen.add(question_key(clean["question"]))
        kept.append(clean)
    if not kept:
        raise schemas.OutputError(f"no valid QA item among {len(value['qa'])}", "no_valid_item")
    return kept


def group_key(group: tuple[str, str, str, list[str]]) -> str:
    topic, form, question_type, _ = group
    return f"{topic}|{form}|{QUESTION_TYPE_CODES[question_type]}"


def generate_qa(
    ctx: StageContext,
    groups: list[tuple[str, str, str, list[str]]],
    clips: list[dict],
    events: list[dict],
    caption: str | None,
) -> dict[str, list[dict] | None]:
    """QA for groups of one question type, one prompt per (topic, form) group, asked as one batch: the group's
    valid items, or None when it was skipped."""
    question_types = {group[2] for group in groups}
    if len(question_types) != 1:
        raise ValueError(f"generate_qa takes groups of one question type, got {sorted(question_types)}")
    question_type = question_types.pop()
    template = ctx.prompts.qa_multiple_choice if question_type == MULTIPLE_CHOICE else ctx.prompts.qa_open
    stage = f"qa:{QUESTION_TYPE_CODES[question_type]}"
    results: dict[str, list[dict] | None] = {}
    asked, prompts, checks, group_schemas = [], [], [], []
    for group in groups:
        topic, form, _, tasks = group
        context = qa_context(form, clips, events, caption)
        if not context.strip():
            ctx.log.skipped[f"{stage}:no captions"] += 1
            results[group_key(group)] = None
            continue
        prompts.append(
            template.format(
                topic=topic,
                context=context,
                tasks=ctx.prompts.task_lines(tasks),
                num_options=ctx.settings.num_options,
                timestamp_rules=ctx.prompts.timestamp_text(tasks),
            )
        )
        checks.append(lambda value, tasks=tasks: check_qa(value, tasks, question_type, ctx, stage))
        multiple_choice = question_type == MULTIPLE_CHOICE
        group_schemas.append(schemas.qa_schema(tasks, multiple_choice, max(2, ctx.settings.num_options)))
        asked.append(group)
    answers = ask(ctx, stage, prompts, group_schemas, checks) if prompts else []
    results.update({group_key(group): items for group, items in zip(asked, answers, strict=True)})
    return drop_repeated_questions(ctx, results)


def drop_repeated_questions(ctx: StageContext, results: dict[str, list[dict] | None]) -> dict[str, list[dict] | None]:
    """Keep the first item of each question (by `question_key`) across the groups of one question type of one
    video; later repeats are counted as rejected "duplicate_question"."""
    seen: set[str] = set()
    kept: dict[str, list[dict] | None] = {}
    for key, items in results.items():
        if items is None:
            kept[key] = None
            continue
        kept[key] = []
        for item in items:
            if question_key(item["question"]) in seen:
                ctx.log.rejected["duplicate_question"] += 1
                continue
            seen.add(question_key(item["question"]))
            kept[key].append(item)
    return kept
