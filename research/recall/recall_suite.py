"""The long-video recall suite: 5- to 60-minute videos whose answers hang on a few seconds of content.

Each video is a run of long scenes (a solid background colour, 10 to 40 s each, about 140 cuts in an hour) with one
to three brief *flashes*: a coloured shape shown for 2 or 3 seconds at a random place. Every question is about the
flashes, which the forgetting mechanism is likely to drop: at the suite's token budget
(`research.recall.recall_model.RECALL_MODEL_CONFIG`, 64 kept frames) uniform or random frame sampling keeps a 2-3 s
flash of a 60-minute video 3 to 5 % of the time, and keyframe selection, which catches the flashes of 10-minute
videos, spends an hour's 64 frames on the scene cuts (`research/recall/tests/test_recall_suite.py` measures both).

    from research.recall.recall_suite import RecallSpec, write_recall_suite
    suite = write_recall_suite("recall/train", RecallSpec(num_videos=200, split="train", seed=1))
    suite.video_root, suite.hub_rows          # VideoMarathon builder inputs (qa config)

Five tasks, each asked open-ended and as four-option multiple choice (VideoMarathon's task in brackets):

| recall task | question | answer |
|---|---|---|
| colour | What colour was the last shape that flashed on screen? | yellow [Object Attribute] |
| shape | Which shape flashed on screen last? | circle [Object Recognition] |
| count | How many shapes flashed on screen? | two [Key Event Extraction] |
| order | Which shape flashed on screen first? | square [Temporal Order] |
| scene | What was the background colour when the last shape flashed? | teal [Scene Recognition] |

No question names a flash's shape or colour (an earlier version did, "What colour was the circle...?", and in the
grouped training samples one question then gave away another's answer), so the only way to an answer is the video.

The *needle* form (`NEEDLE`, `RecallSpec.flash_gap_seconds`) asks about content that is not the most salient change
in its video: flashes follow each other through the whole video (one every 5 to 12 s), all alike in size, length
and shapes, and exactly one of them, the needle, has a colour no other flash has. Its two questions name that
colour and ask for what only the needle's frames show; neither names the other's answer:

| recall task | question | answer |
|---|---|---|
| needle_shape | Which shape flashed on screen in pink? | triangle [Object Recognition] |
| needle_scene | What was the background colour when the pink shape flashed? | grey [Scene Recognition] |

A change detector (keyframe selection) sees dozens to hundreds of changes as large as the needle's and keeps a
budget's worth of them, and a fixed question-to-frame similarity cannot tell the needle from its distractors:
finding it takes reading the question and searching the whole memory, what MemAug is for.

Train and test sets are written by separate calls with different `split` names (so different videos) and seeds.
Rows follow the VideoMarathon Hub schema plus `recall_task`; `answers_from_frames` reads the answers back from decoded
pixels, so tests check that the videos say what the rows claim.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field

import datasets
import numpy as np

from dataset_builder.media import write_json_atomically, write_jsonl_atomically
from dataset_builder.synthetic_videomarathon import BACKGROUNDS, SHAPE_COLOURS, SHAPES, multiple_choice
from dataset_builder.videomarathon import MULTIPLE_CHOICE, OPEN_ENDED, TASK_TOPIC, VideoMarathon
from hour_llava_demo.world import (  # the needle form is the demo's world: its timelines, frames and questions
    NEEDLE_TASKS,
    SHAPE_SIDE,
    Flash,
    NeedleWorld,
    make_scenes,
    needle_flashes,
    needle_of,  # noqa: F401 (the suite's users read it here)
    needle_question,
    others,
    render_frame,  # noqa: F401 (the suite's users read it here)
    shape_mask,
    write_timeline_video,
)
from hour_llava_demo.world import Timeline as RecallTimeline

SOURCE = "recall"
COUNT_WORDS = ("one", "two", "three")
RECALL_TASKS = {
    "colour": "Object Attribute",
    "shape": "Object Recognition",
    "count": "Key Event Extraction",
    "order": "Temporal Order",
    "scene": "Scene Recognition",
}
TASK_OF = {**RECALL_TASKS, **NEEDLE_TASKS}  # recall task -> VideoMarathon task

# The suite's easiest form, the embedded model's world (`demo.py`, `research/recall/recall_curriculum.py`): one flash
# per video, shorter scenes, and the three open-ended questions about it (chance 23.6 %: 1/4, 1/3 and 1/8).
ONE_FLASH = {"min_scene_seconds": 5, "max_scene_seconds": 15, "max_flashes": 1, "question_types": (OPEN_ENDED,),
             "tasks": ("colour", "shape", "scene")}  # fmt: skip
# The needle form, the demo's world (`hour_llava_demo.world.NeedleWorld`, here with a needle of any colour unless a
# set names one): a flash every 5 to 12 s (2-3 s shown, 3-9 s of background between), one of a unique colour, and
# the two open-ended questions about it (chance 22.9 %: 1/3 and 1/8).
NEEDLE = {"min_scene_seconds": NeedleWorld.min_scene_seconds, "max_scene_seconds": NeedleWorld.max_scene_seconds,
          "flash_gap_seconds": NeedleWorld.flash_gap_seconds, "question_types": (OPEN_ENDED,),
          "tasks": tuple(NEEDLE_TASKS)}  # fmt: skip


@dataclass
class RecallSpec:
    """How many videos, their lengths (minutes, drawn uniformly, or log-uniformly: as many 5-10 as 30-60 minute
    videos, a curriculum for training; `stratified` spreads them evenly instead), frame
    size (square, pixels), scene and flash lengths (seconds), flashes per video, the split name (prefix of every
    video file, so train and test never share a video), seed, codec, question types and recall tasks.
    flash_start: every video's single flash (needs `max_flashes=1`) starts at this second instead of a random one,
    a curriculum stage: at second 0 the flash sits where uniform forgetting always looks.
    flash_gap_seconds: the needle form (`NEEDLE`): flashes one after another through the whole video, this many
    seconds of background between two, one of them the needle (`needle_of`); `max_flashes` is then unused.
    needle_colour: every needle has this colour (a curriculum stage: the question no longer varies) instead of a
    random one."""

    num_videos: int = 10
    min_minutes: float = 5.0
    max_minutes: float = 60.0
    stratified: bool = False
    log_uniform: bool = False
    size: int = 32
    min_scene_seconds: int = 10
    max_scene_seconds: int = 40
    flash_seconds: tuple[int, int] = (2, 3)
    max_flashes: int = 3
    split: str = "train"
    seed: int = 0
    codec: str = "libx264"
    question_types: tuple[str, ...] = (OPEN_ENDED, MULTIPLE_CHOICE)
    tasks: tuple[str, ...] = tuple(RECALL_TASKS)
    flash_start: int | None = None
    flash_gap_seconds: tuple[int, int] | None = None
    needle_colour: str | None = None


@dataclass
class RecallSuite:
    root: str
    video_root: str
    hub_rows: str
    timelines_path: str
    timelines: list[RecallTimeline]
    rows: list[dict]
    replaced: list[str] = field(default_factory=list)  # videos (under video_root) rewritten for a changed spec


# ---------------------------------------------------------------------------------------------------------------
# Timelines and frames
# ---------------------------------------------------------------------------------------------------------------
def make_timeline(video: str, duration: int, spec: RecallSpec, rng: random.Random) -> RecallTimeline:
    """Scenes of `min_scene_seconds`..`max_scene_seconds` (each a new background), then 1..`max_flashes` flashes
    with distinct shapes and colours, apart from each other, away from the first and last scene, each inside one
    scene."""
    scenes = make_scenes(duration, spec, rng)
    if spec.flash_gap_seconds is not None:
        return RecallTimeline(video, duration, scenes, needle_flashes(video, duration, scenes, spec, rng))
    count = rng.randint(1, spec.max_flashes)
    shapes, colours = rng.sample(SHAPES, count), rng.sample(list(SHAPE_COLOURS), count)
    margin, longest = spec.max_scene_seconds, spec.flash_seconds[1]
    slots = (duration - 2 * margin) // count  # one flash per equal slot, so flashes never overlap
    if slots <= 2 * longest:
        raise ValueError(f"{video}: {duration} s is too short for {count} flashes; use longer videos")
    flashes = []
    for k in range(count):
        begin = margin + k * slots + rng.randrange(0, slots - 2 * longest)
        length = rng.randint(*spec.flash_seconds)
        scene_end = next(end for start, end, _ in scenes if start <= begin < end)
        begin = min(begin, scene_end - length)  # within one scene: its background shows before and after
        side = rng.randint(round(spec.size * SHAPE_SIDE[0]), round(spec.size * SHAPE_SIDE[1]))
        x, y = rng.randint(0, spec.size - side), rng.randint(0, spec.size - side)
        flashes.append(Flash(begin, begin + length, shapes[k], colours[k], (x, y, x + side, y + side)))
    if spec.flash_start is not None:
        if spec.max_flashes != 1:
            raise ValueError(f"RecallSpec.flash_start={spec.flash_start} needs max_flashes=1, not {spec.max_flashes}")
        flash = flashes[0]
        flash.start, flash.end = spec.flash_start, spec.flash_start + (flash.end - flash.start)
    return RecallTimeline(video=video, duration=duration, scenes=scenes, flashes=flashes)


def nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    return min(palette, key=lambda name: float(np.sum((np.asarray(palette[name], np.float32) - colour) ** 2)))


def answers_from_frames(frames: np.ndarray, timeline: RecallTimeline) -> dict[str, str]:
    """Read the open-ended answers back from decoded frames at 1 fps, (T, H, W, 3) uint8, using only where flashes
    are (their boxes and times), not what they are: the colour inside each flash box, the shape that best matches
    the pixels that differ from the background (the neighbouring frame, before or after, that matches the flash's
    frame best outside the box: a flash may begin or end at a scene cut), the background next to the box."""
    found = []
    size = frames.shape[1]
    for flash in timeline.flashes:
        frame = frames[flash.start].astype(np.float32)
        masks = {shape: shape_mask(shape, flash.box, size) for shape in SHAPES}
        outside = ~masks["square"]
        neighbours = [frames[k].astype(np.float32) for k in (flash.start - 1, flash.end) if 0 <= k < len(frames)]
        background = min(neighbours, key=lambda other: float(np.abs(other - frame)[outside].mean()))
        changed = np.abs(frame - background).sum(-1) > 60
        x0, y0, x1, y1 = flash.box
        shape = max(masks, key=lambda s: float((masks[s] == changed).mean()))
        centre = frame[(y0 + y1) // 2 + (y1 - y0) // 6, (x0 + x1) // 2]
        found.append((shape, nearest(centre, SHAPE_COLOURS), nearest(frame[outside].mean(0), BACKGROUNDS)))
    return {
        "count": COUNT_WORDS[len(found) - 1] if len(found) <= len(COUNT_WORDS) else str(len(found)),
        "order": found[0][0],
        "shapes": ",".join(f"{shape}:{colour}:{scene}" for shape, colour, scene in found),
    }


# ---------------------------------------------------------------------------------------------------------------
# Questions: task -> (question, answer, wrong answers)
# ---------------------------------------------------------------------------------------------------------------
def recall_question(task: str, timeline: RecallTimeline, rng: random.Random) -> tuple[str, str, list[str]]:
    """One question about the flashes, naming none of their attributes: flashes are referred to by their order
    (`first`, `last`), so no question gives away another's answer (the grouped training samples put several
    questions about a video in one conversation). The needle tasks name the needle's colour, which neither asks for."""
    first, last = timeline.flashes[0], timeline.flashes[-1]
    if task == "colour":
        return "What colour was the last shape that flashed on screen?", last.colour, others(SHAPE_COLOURS, last.colour)
    if task == "shape":
        return "Which shape flashed on screen last?", last.shape, others(SHAPES, last.shape)
    if task == "count":
        answer = COUNT_WORDS[len(timeline.flashes) - 1]
        return "How many shapes flashed on screen?", answer, others(COUNT_WORDS, answer)
    if task == "order":
        return "Which shape flashed on screen first?", first.shape, others(SHAPES, first.shape)
    if task == "scene":
        background = timeline.background_at(last.start)
        return (
            "What was the background colour when the last shape flashed?",
            background,
            others(BACKGROUNDS, background),
        )
    if task in NEEDLE_TASKS:
        return needle_question(task, timeline)
    raise ValueError(f"unknown recall task {task!r}; expected one of {sorted(TASK_OF)}")


def qa_rows(timeline: RecallTimeline, spec: RecallSpec, rng: random.Random) -> list[dict]:
    """VideoMarathon Hub rows (plus `recall_task`) for one video: every recall task, every question type."""
    rows = []
    stem = os.path.splitext(timeline.video)[0]
    for recall_task in spec.tasks:
        task = TASK_OF[recall_task]
        for question_type in spec.question_types:
            question, answer, wrong = recall_question(recall_task, timeline, rng)
            options: list[str] = []
            if question_type == MULTIPLE_CHOICE:
                options, answer = multiple_choice(answer, wrong, rng)
            rows.append(
                {
                    "id": f"{stem}-{recall_task}-{question_type}",
                    "video": timeline.video,
                    "data_source": SOURCE,
                    "duration": float(timeline.duration),
                    "topic": TASK_TOPIC[task],
                    "task": task,
                    "recall_task": recall_task,
                    "question_type": question_type,
                    "question": question,
                    "options": options,
                    "answer": answer,
                }
            )
    return rows


def durations(spec: RecallSpec, rng: random.Random) -> list[int]:
    """Video lengths in whole seconds in [min, max) (exactly min when they are equal): uniform draws, or evenly
    spread (shuffled) when `stratified`."""
    low, high = spec.min_minutes * 60, spec.max_minutes * 60
    if spec.stratified:
        spread = [round(v) for v in np.linspace(low, high, spec.num_videos, endpoint=False)]
        rng.shuffle(spread)
        return spread
    last = max(round(low), math.ceil(high) - 1)  # [min, max) unless min == max
    if spec.log_uniform:
        return [min(round(math.exp(rng.uniform(math.log(low), math.log(high)))), last) for _ in range(spec.num_videos)]
    return [min(round(rng.uniform(low, high)), last) for _ in range(spec.num_videos)]


def write_recall_suite(root: str | os.PathLike, spec: RecallSpec | None = None) -> RecallSuite:
    """Write the videos (`<root>/videos/recall/<split>_NNNN.mp4`, 1 fps), the Hub rows
    (`<root>/annotations/recall_qa.jsonl`) and the timelines; rows and timelines atomically. Videos already
    written by an earlier call with the same spec are kept (they are deterministic), so a killed run resumes; those
    of another spec are written again."""
    spec = spec or RecallSpec()
    root = os.fspath(root)
    video_root = os.path.join(root, "videos")
    os.makedirs(os.path.join(video_root, SOURCE), exist_ok=True)
    timelines_path = os.path.join(root, "annotations", "timelines.json")
    replaced = forget_videos_of_another_spec(timelines_path, spec, os.path.join(video_root, SOURCE))
    rng = random.Random(f"recall\0{spec.split}\0{spec.seed}")
    timelines, rows = [], []
    for index, duration in enumerate(durations(spec, rng)):
        video_rng = random.Random(f"recall\0{spec.split}\0{spec.seed}\0{index}")
        timeline = make_timeline(f"{spec.split}_{index:04d}.mp4", duration, spec, video_rng)
        write_timeline_video(os.path.join(video_root, SOURCE, timeline.video), timeline, spec.size, spec.codec)
        timelines.append(timeline)
        rows.extend(qa_rows(timeline, spec, video_rng))
    annotations = os.path.join(root, "annotations")
    os.makedirs(annotations, exist_ok=True)
    hub_rows = os.path.join(annotations, "recall_qa.jsonl")
    write_jsonl_atomically(hub_rows, rows)
    write_json_atomically(timelines_path, {"spec": asdict(spec), "timelines": [asdict(t) for t in timelines]})
    return RecallSuite(root, video_root, hub_rows, timelines_path, timelines, rows, replaced)


def forget_videos_of_another_spec(timelines_path: str, spec: RecallSpec, folder: str) -> list[str]:
    """Delete the videos an earlier call wrote under a different spec (their names are reused); returns their
    paths relative to the suite's video root, so callers can drop what they derived from them (features)."""
    if not os.path.exists(timelines_path):
        return []
    with open(timelines_path) as handle:
        earlier = json.load(handle)
    if earlier.get("spec") == json.loads(json.dumps(asdict(spec))):
        return []
    removed = []
    for timeline in earlier.get("timelines", []):
        path = os.path.join(folder, timeline["video"])
        if os.path.exists(path):
            os.remove(path)
            removed.append(f"{SOURCE}/{timeline['video']}")
    return removed


def recall_corpus() -> list[str]:
    """Text a recall-suite tokenizer is trained on: the chat frame, every question and every answer."""
    from dataset_builder.videomarathon import MC_PROMPT

    words = [*BACKGROUNDS, *SHAPE_COLOURS, *SHAPES, *COUNT_WORDS]
    questions = [
        f"What colour was the {s} that flashed on screen? Which shape flashed on screen in {c}? "
        f"What was the background colour when the {s} flashed? How many shapes flashed on screen? "
        "Which shape flashed first?"
        for s in SHAPES
        for c in SHAPE_COLOURS
    ]
    chat = "system You are a helpful assistant. user assistant The video lasts for 12.50 seconds, and 128 frames "
    chat += "are uniformly sampled from it. Please answer the following questions related to this video."
    options = " ".join(f"{chr(ord('A') + i)}. {word}" for i, word in enumerate(words))
    return [*questions, chat, options, MC_PROMPT, " ".join(words)] * 20


def grouped_chat(suite: RecallSuite, path: str | os.PathLike, group_size: int) -> datasets.Dataset:
    """The suite's rows as grouped training conversations (VideoMarathon's `grouped` config: up to `group_size`
    questions about one video per sample), written to the Parquet file `path` and returned as a `datasets.Dataset`.
    Rebuilt only when the suite's rows or `group_size` change (their digest is kept under `<suite>/.grouped_chat/`,
    not next to `path`, whose folder a trainer may load whole), so a changed question template never trains on
    stale conversations; the file is replaced atomically."""
    path = os.path.abspath(path)
    with open(suite.hub_rows, "rb") as handle:
        digest = hashlib.sha256(handle.read() + f"\0{group_size}".encode()).hexdigest()
    state = os.path.join(suite.root, ".grouped_chat")
    stamp = os.path.join(state, hashlib.sha256(path.encode()).hexdigest()[:16] + ".json")
    if os.path.exists(path) and os.path.exists(stamp):
        with open(stamp) as handle:
            if json.load(handle) == {"path": path, "rows": digest}:
                return datasets.Dataset.from_parquet(path)
    builder = VideoMarathon(config_name="grouped", cache_dir=os.path.join(state, f"builder-{digest[:16]}"),
                            group_size=group_size, annotations=suite.hub_rows, video_root=suite.video_root,
                            validation_fraction=0.0)  # fmt: skip
    builder.download_and_prepare()
    rows = builder.as_dataset(split="train")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows.to_parquet(path + ".partial")
    os.replace(path + ".partial", path)
    write_json_atomically(stamp, {"path": path, "rows": digest})
    return rows
