"""Run the construction stages over many videos: resumable per video, parallel across videos, with a progress bar,
a cost report, and output rows in the VideoMarathon Hub-row schema.

    from dataset_builder.construction import PipelineConfig, TextCaptioner, run_pipeline
    report = run_pipeline(jobs, llm=backend, captioner=TextCaptioner(backend), config=PipelineConfig("out"))
    VideoMarathon(config_name="qa", annotations=report["rows_path"], video_root=...)   # builds them directly

Layout under `out_dir`: `state/<source>/<video>.json` (one per video, rewritten atomically after every stage:
the stages done so far, the log of retries and skips, the cost, `done`, and the last `error` with its
`error_kind`),
`videomarathon_qa.jsonl` (rows of the finished videos) and `report.json` (totals and per-video costs). A rerun
skips finished videos and resumes the others at their first missing stage; together with the backends' disk
cache, nothing already answered is asked again. A state file that does not parse (a crash mid-write on a
filesystem without atomic rename, a hand edit) is moved aside to `<name>.corrupt` and the video is redone (from the
cache: nothing is lost). A backend failure (`BackendError`), a prompt over the model's context
(`ContextOverflowError`) or an unusable video (`JobError`: unreadable file, no duration) stops that video only; the
report counts failures by kind.

The video file of a job is `source_root(source)/video` (`video_root/<source>/<video>` or `video_roots[source]`,
as the VideoMarathon builder finds them); it is needed by the vision captioner and for jobs without a duration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace

from ..media import write_json_atomically, write_jsonl_atomically
from ..videomarathon import QUESTION_TYPES, TASK_TOPIC, TOPICS, source_root
from .backends import Backend, BackendError, ContextOverflowError, Cost
from .prompts import Prompts
from .stages import (
    QUESTION_TYPE_CODES,
    JobError,
    StageContext,
    StageLog,
    StageSettings,
    TextCaptioner,
    VideoJob,
    caption_events,
    caption_video,
    generate_qa,
    make_clips,
    qa_groups,
    split_events,
)

logger = logging.getLogger(__name__)
ROWS_FILE = "videomarathon_qa.jsonl"
STATE_KEYS = ("video", "source", "duration", "fingerprint", "stages", "log", "cost", "done")
REPORT_FILE = "report.json"


@dataclass
class PipelineConfig:
    """out_dir; clip length; the topics and question types to generate; videos processed at once; the
    generation settings; progress bar on/off; where the video files are (`video_root/<source>/...` or
    `video_roots[source]`: the vision captioner reads them and jobs without a duration are probed)."""

    out_dir: str
    clip_seconds: float = 10.0
    topics: tuple[str, ...] = TOPICS
    question_types: tuple[str, ...] = QUESTION_TYPES
    workers: int = 4
    settings: StageSettings = field(default_factory=StageSettings)
    progress: bool = True
    video_root: str | None = None
    video_roots: dict[str, str] | None = None

    def __post_init__(self):
        unknown = [t for t in self.topics if t not in TOPICS] + [
            q for q in self.question_types if q not in QUESTION_TYPES
        ]
        if unknown:
            raise ValueError(f"unknown topics or question types {unknown}; topics {TOPICS}, types {QUESTION_TYPES}")

    def fingerprint(self) -> str:
        """What a video's stages depend on: a state made under another fingerprint is not resumed."""
        data = {"clip_seconds": self.clip_seconds, "topics": list(self.topics), "types": list(self.question_types)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# State of one video
# ---------------------------------------------------------------------------------------------------------------
def state_path(out_dir: str, job: VideoJob) -> str:
    return os.path.join(out_dir, "state", job.source, f"{job.video}.json")


def new_state(job: VideoJob, fingerprint: str) -> dict:
    state = {key: value for key, value in asdict(job).items() if key != "path"}
    return {**state, "fingerprint": fingerprint, "stages": {}, "log": {}, "cost": {}, "done": False}


def load_state(path: str, job: VideoJob, fingerprint: str) -> dict:
    """The saved state of a video, or a new one. A state from another configuration is an error; a state that does
    not parse or lacks its keys is moved aside to `path.corrupt` and a new one is started (marked `recovered`)."""
    if not os.path.isfile(path):
        return new_state(job, fingerprint)
    try:
        with open(path) as handle:
            state = json.load(handle)
        missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
        if missing:
            raise ValueError(f"missing keys {missing}")
    except (ValueError, UnicodeDecodeError) as error:  # json.JSONDecodeError is a ValueError
        os.replace(path, path + ".corrupt")
        logger.warning("%s: unreadable state (%s); moved to %s.corrupt, redoing %s", path, error, path, job.key)
        return {**new_state(job, fingerprint), "recovered": f"{type(error).__name__}: {error}"}
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path} was made with another configuration (clip length, topics or question types); "
            "use a new out_dir or delete the state to start the video again"
        )
    return state


def locate(job: VideoJob, config: PipelineConfig) -> VideoJob:
    """The job with `path` set from the configuration's video roots (when it has none and a root is known)."""
    if job.path or not (config.video_root or config.video_roots):
        return job
    root = source_root(job.source, config.video_root, config.video_roots)
    return replace(job, path=os.path.join(root, job.video)) if root else job


def probe_duration(job: VideoJob) -> float:
    """The duration in seconds of the job's video file; JobError naming the job and file when it cannot be read."""
    if not job.path:
        raise JobError(f"{job.key}: no duration given and no video file to probe; give video_root(s) or a duration")
    from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError, probe_video  # imports transformers

    try:
        info = probe_video(job.path)
    except VideoDecodeError as error:
        raise JobError(f"{job.key}: cannot probe the duration: {error}", "video") from error
    if not info.duration > 0:
        raise JobError(f"{job.key}: {job.path} has no positive duration ({info.duration})", "video")
    return float(info.duration)


def _merged_cost(previous: dict, cost: Cost) -> dict:
    now = cost.as_dict()
    return {key: round(previous.get(key, 0) + now[key], 3) for key in now}


def process_video(job: VideoJob, llm: Backend, captioner, config: PipelineConfig, prompts: Prompts) -> dict:
    """Run the missing stages of one video, saving its state after each; returns the state."""
    path = state_path(config.out_dir, job)
    state = load_state(path, job, config.fingerprint())
    if state["done"]:
        return state
    ctx = StageContext(llm, prompts, config.settings, StageLog.from_dict(state["log"]), Cost())
    previous_cost, stages = dict(state["cost"]), state["stages"]

    def save() -> None:
        state["log"], state["cost"] = ctx.log.as_dict(), _merged_cost(previous_cost, ctx.cost)
        write_json_atomically(path, state)

    state["error"], state["error_kind"] = None, None
    try:
        job = locate(job, config)
        if state["duration"] is None:
            state["duration"] = probe_duration(job)
        job = replace(job, duration=float(state["duration"]))
        _run_stages(ctx, job, captioner, config, stages, save)
        state["done"] = True
    except (BackendError, JobError) as error:
        state["error"] = f"{type(error).__name__}: {error}"
        state["error_kind"] = error_kind(error)
        logger.warning("%s failed: %s", job.key, state["error"])
    save()
    return state


def error_kind(error: Exception) -> str:
    """ "context_overflow", "backend", or a JobError's kind ("video", "job")."""
    if isinstance(error, ContextOverflowError):
        return "context_overflow"
    return error.kind if isinstance(error, JobError) else "backend"


def _run_stages(ctx: StageContext, job: VideoJob, captioner, config: PipelineConfig, stages: dict, save) -> None:
    if "clip_captions" not in stages:
        stages["clip_captions"] = captioner.caption(ctx, job, make_clips(job.duration, config.clip_seconds))
        save()
    clips = [clip for clip in stages["clip_captions"] if clip is not None]
    if "events" not in stages:
        stages["events"] = split_events(ctx, clips) if clips else []
        save()
    if "event_captions" not in stages:
        stages["event_captions"] = caption_events(ctx, clips, stages["events"]) if clips else []
        save()
    events = [event for event in stages["event_captions"] if event is not None]
    if "global_caption" not in stages:
        stages["global_caption"] = caption_video(ctx, job, events) if events else None
        save()
    for question_type in config.question_types:
        key = f"qa:{QUESTION_TYPE_CODES[question_type]}"
        if key not in stages:
            groups = qa_groups(list(config.topics), [question_type])
            stages[key] = generate_qa(ctx, groups, clips, events, stages["global_caption"])
            save()


# ---------------------------------------------------------------------------------------------------------------
# Rows and report
# ---------------------------------------------------------------------------------------------------------------
def state_rows(state: dict) -> list[dict]:
    """Hub rows (`dataset_builder.videomarathon.HUB_FIELD_ALIASES` names) of a video's valid QA items."""
    stem = os.path.splitext(state["video"])[0].replace("/", "_")
    rows, counter = [], Counter()
    for key in sorted(k for k in state["stages"] if k.startswith("qa:")):
        for group, items in sorted(state["stages"][key].items()):
            code = group.split("|")[-1]
            for item in items or []:
                slug = item["task"].lower().replace(" ", "_")
                counter[(slug, code)] += 1
                rows.append(
                    {
                        "id": f"{state['source']}-{stem}-{slug}-{code}-{counter[(slug, code)]}",
                        "video": state["video"],
                        "data_source": state["source"],
                        "duration": float(state["duration"]),
                        "topic": TASK_TOPIC[item["task"]],
                        "task": item["task"],
                        "question_type": next(q for q, c in QUESTION_TYPE_CODES.items() if c == code),
                        "question": item["question"],
                        "options": item["options"],
                        "answer": item["answer"],
                    }
                )
    return rows


def summarize(states: list[dict], rows_path: str, backends: list[Backend]) -> dict:
    """Totals over the videos: done/failed, rows, log counters, per-video cost, and each backend's counters."""
    totals: dict[str, Counter] = {}
    for state in states:
        for name, counts in state["log"].items():
            if name != "examples":
                totals.setdefault(name, Counter()).update(counts)
    return {
        "videos": len(states),
        "done": sum(state["done"] for state in states),
        "failed": {f"{s['source']}/{s['video']}": s["error"] for s in states if not s["done"]},
        "failed_by_kind": dict(Counter(s.get("error_kind") or "backend" for s in states if not s["done"])),
        "recovered_states": sorted(f"{s['source']}/{s['video']}" for s in states if s.get("recovered")),
        "rows": sum(len(state_rows(state)) for state in states if state["done"]),
        "rows_path": rows_path,
        "log": {name: dict(counts) for name, counts in totals.items()},
        "cost_per_video": {f"{s['source']}/{s['video']}": s["cost"] for s in states},
        "backends": {f"{b.backend_id}:{b.model}": b.cost.as_dict() for b in dict.fromkeys(backends)},
    }


def run_pipeline(
    jobs: list[VideoJob],
    llm: Backend,
    config: PipelineConfig,
    captioner=None,
    prompts: Prompts | None = None,
) -> dict:
    """Process every video (`config.workers` at a time), then write the rows of the finished ones and the
    report; returns the report. Videos whose backend failed are listed under "failed": run again to resume."""
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate videos in the jobs: {[k for k, n in Counter(keys).items() if n > 1]}")
    captioner = captioner or TextCaptioner(llm)
    prompts = prompts or Prompts()
    states: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=max(1, config.workers)) as pool:
        futures = {pool.submit(process_video, job, llm, captioner, config, prompts): job for job in jobs}
        for future in _progress(as_completed(futures), len(futures), config.progress):
            states[futures[future].key] = future.result()
    ordered = [states[key] for key in keys]
    rows_path = os.path.join(config.out_dir, ROWS_FILE)
    write_jsonl_atomically(rows_path, [row for state in ordered if state["done"] for row in state_rows(state)])
    report = summarize(ordered, rows_path, [llm, getattr(captioner, "backend", llm)])
    write_json_atomically(os.path.join(config.out_dir, REPORT_FILE), report)
    return report


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc="videos", unit="video")
