"""A synthetic VideoMarathon: videos with known content and QA rows, for every topic and both question types,
whose answers are right by construction. The whole data pipeline (builder, Hub, feature cache, training,
recall tests) runs on it without downloads.

Each video is a sequence of scenes with whole-second boundaries. A scene has its own background colour, one
shape of one colour moving in one direction (left to right, right to left, top to bottom, bottom to top) and a
word written in the top-left corner. Scene changes are the events; the timeline is saved next to the videos, and
`background_at` reads a scene's colour back from a decoded frame (bottom-left corner, which nothing else covers).

    from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
    data = write_synthetic_videomarathon("out", SyntheticSpec(num_videos=3, min_duration=6, max_duration=8))
    data.video_root, data.hub_rows, data.llava_json     # builder inputs: VideoMarathon(annotations=..., ...)

Every video gets, for each of the 22 tasks, one open-ended and one multiple-choice question (`question_types`).
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .media import write_json_atomically
from .synthetic_video import write_video
from .videomarathon import MULTIPLE_CHOICE, OPEN_ENDED, TASK_TOPIC, TASKS

BACKGROUNDS = {
    "red": (200, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 60, 200),
    "purple": (130, 40, 160),
    "orange": (230, 130, 20),
    "teal": (20, 150, 150),
    "grey": (120, 120, 120),
    "brown": (120, 70, 30),
}
SHAPE_COLOURS = {"white": (250, 250, 250), "black": (10, 10, 10), "yellow": (240, 220, 30), "pink": (250, 150, 200)}
SHAPES = ("square", "circle", "triangle")
# direction -> (start side, end side)
DIRECTIONS = {
    "left to right": ("on the left", "on the right"),
    "right to left": ("on the right", "on the left"),
    "top to bottom": ("at the top", "at the bottom"),
    "bottom to top": ("at the bottom", "at the top"),
}
SIDES = ("on the left", "on the right", "at the top", "at the bottom")
WORDS = (
    "apple",
    "river",
    "cloud",
    "stone",
    "tiger",
    "piano",
    "lemon",
    "rocket",
    "garden",
    "window",
    "candle",
    "bridge",
)
NUM_OPTIONS = 4
CORNER = 3  # background probe: a CORNER x CORNER block this many pixels from the bottom-left corner
SHAPE_FRACTION = 0.3  # shape size as a fraction of the frame height
TEXT_FRACTION = 0.2  # font size as a fraction of the frame height
SOURCE = "synthetic"


@dataclass
class SyntheticSpec:
    """num_videos, durations (whole seconds, drawn in [min_duration, max_duration]), fps, frame size, seed, the
    mean scene length (at most `len(BACKGROUNDS)` scenes per video, at least 2), text overlays, video codec,
    question types per task, the source name and the video container suffix."""

    num_videos: int = 3
    min_duration: int = 6
    max_duration: int = 10
    fps: float = 4.0
    width: int = 96
    height: int = 64
    seed: int = 0
    mean_scene_seconds: float = 2.5
    text_overlay: bool = True
    codec: str = "libx264"
    question_types: tuple[str, ...] = (OPEN_ENDED, MULTIPLE_CHOICE)
    source: str = SOURCE
    suffix: str = ".mp4"


@dataclass
class Scene:
    start: int
    end: int
    background: str
    shape: str
    shape_colour: str
    direction: str
    word: str

    @property
    def thing(self) -> str:
        return f"{self.shape_colour} {self.shape}"


@dataclass
class Timeline:
    video: str
    duration: int
    scenes: list[Scene] = field(default_factory=list)

    def scene_at(self, seconds: float) -> Scene:
        for scene in self.scenes:
            if scene.start <= seconds < scene.end:
                return scene
        return self.scenes[-1]


@dataclass
class SyntheticVideoMarathon:
    """Paths of a written synthetic set, its timelines and its Hub-format rows."""

    root: str
    video_root: str
    hub_rows: str
    llava_json: str
    timelines_path: str
    timelines: list[Timeline]
    rows: list[dict]


# ---------------------------------------------------------------------------------------------------------------
# Timelines and frames
# ---------------------------------------------------------------------------------------------------------------
def make_timeline(video: str, duration: int, spec: SyntheticSpec, rng: random.Random) -> Timeline:
    """Random whole-second scene cuts, each scene with distinct background and word, random shape and motion."""
    if duration < 2:
        raise ValueError(f"a synthetic video needs at least 2 seconds (two scenes), got {duration}")
    count = min(max(2, round(duration / spec.mean_scene_seconds)), len(BACKGROUNDS), duration, len(WORDS))
    cuts = sorted(rng.sample(range(1, duration), count - 1))
    bounds = [0, *cuts, duration]
    backgrounds = rng.sample(list(BACKGROUNDS), count)
    words = rng.sample(list(WORDS), count)
    scenes = [
        Scene(
            start=bounds[k],
            end=bounds[k + 1],
            background=backgrounds[k],
            shape=rng.choice(SHAPES),
            shape_colour=rng.choice(list(SHAPE_COLOURS)),
            direction=rng.choice(list(DIRECTIONS)),
            word=words[k],
        )
        for k in range(count)
    ]
    return Timeline(video=video, duration=duration, scenes=scenes)


def shape_box(scene: Scene, seconds: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The shape's bounding box at a time: it crosses the frame along the middle row or column during its scene."""
    size = max(2, int(height * SHAPE_FRACTION))
    progress = (seconds - scene.start) / (scene.end - scene.start)
    horizontal = scene.direction in ("left to right", "right to left")
    span = (width if horizontal else height) - size - 2 * CORNER
    offset = CORNER + int(
        round(span * (progress if scene.direction in ("left to right", "top to bottom") else 1 - progress))
    )
    if horizontal:
        x, y = offset, (height - size) // 2
    else:
        x, y = (width - size) // 2, offset
    return x, y, x + size, y + size


def _font(height: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(6, int(height * TEXT_FRACTION)))
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_frame(timeline: Timeline, seconds: float, width: int, height: int, text: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 frame of a timeline at a time."""
    scene = timeline.scene_at(seconds)
    image = Image.new("RGB", (width, height), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    box = shape_box(scene, seconds, width, height)
    colour = SHAPE_COLOURS[scene.shape_colour]
    if scene.shape == "square":
        draw.rectangle(box, fill=colour)
    elif scene.shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        x0, y0, x1, y1 = box
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    if text:
        draw.text((CORNER, 1), scene.word, fill=(255, 255, 255), font=_font(height))
    return np.asarray(image)


def background_at(frame: np.ndarray) -> str:
    """Name of the background colour of a decoded frame (H, W, 3) or (3, H, W): nearest palette colour."""
    if frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = frame.transpose(1, 2, 0)
    height = frame.shape[0]
    patch = frame[height - 2 * CORNER : height - CORNER, CORNER : 2 * CORNER].reshape(-1, 3).astype(np.float32)
    colour = patch.mean(axis=0)
    return min(BACKGROUNDS, key=lambda name: float(np.sum((np.array(BACKGROUNDS[name]) - colour) ** 2)))


# ---------------------------------------------------------------------------------------------------------------
# Questions: task -> (question, answer, wrong answers of the same kind)
# ---------------------------------------------------------------------------------------------------------------
def _seconds(value: float) -> str:
    return f"{value:g} second" if value == 1 else f"{value:g} seconds"


def _others(pool, answer) -> list[str]:
    return [item for item in dict.fromkeys(pool) if item != answer]


def _orders(items: list[str]) -> list[str]:
    """Other orders of a list (permutations, or other palette items substituted when there are too few)."""
    answer = ", ".join(items)
    options = {", ".join(order) for order in itertools.islice(itertools.permutations(items), 24)} - {answer}
    return sorted(options) or [f"{answer}, {items[0]}"]


def _scene(timeline: Timeline, rng: random.Random, first: int = 0, last_offset: int = 0) -> tuple[int, Scene]:
    index = rng.randrange(first, len(timeline.scenes) - last_offset)
    return index, timeline.scenes[index]


def q_temporal_perception(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    return (
        f"At what second does the {s.background} scene begin?",
        _seconds(s.start),
        [_seconds(v) for v in range(t.duration) if v != s.start],
    )


def q_duration_perception(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    length = s.end - s.start
    return (
        f"How many seconds does the {s.background} scene last?",
        _seconds(length),
        [_seconds(v) for v in range(1, t.duration + 1) if v != length],
    )


def q_temporal_reasoning(t: Timeline, rng: random.Random):
    k, s = _scene(t, rng, first=1)
    before = t.scenes[k - 1].background
    return (
        f"Which background colour is shown right before the {s.background} scene?",
        before,
        _others([x.background for x in t.scenes if x is not s] + list(BACKGROUNDS), before),
    )


def q_temporal_gap(t: Timeline, rng: random.Random):
    a, b = sorted(rng.sample(range(len(t.scenes)), 2))
    first, second = t.scenes[a], t.scenes[b]
    gap = second.start - first.start
    question = (
        f"How many seconds pass between the start of the {first.background} scene and the start of the "
        f"{second.background} scene?"
    )
    return question, _seconds(gap), [_seconds(v) for v in range(1, t.duration + 1) if v != gap]


def q_temporal_order(t: Timeline, rng: random.Random):
    colours = [s.background for s in t.scenes]
    return "In what order do the background colours appear?", ", ".join(colours), _orders(colours)


def q_spatial_perception(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    side = DIRECTIONS[s.direction][0]
    return f"Where is the {s.thing} when the {s.background} scene begins?", side, _others(SIDES, side)


def q_spatial_reasoning(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    side = DIRECTIONS[s.direction][1]
    return f"Where is the {s.thing} at the end of the {s.background} scene?", side, _others(SIDES, side)


def q_object_recognition(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    return (
        f"Which shape appears in the {s.background} scene?",
        f"a {s.shape}",
        _others([f"a {x}" for x in SHAPES], f"a {s.shape}"),
    )


def q_object_attribute(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    return (
        f"What colour is the {s.shape} in the {s.background} scene?",
        s.shape_colour,
        _others(SHAPE_COLOURS, s.shape_colour),
    )


def q_object_interaction(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    return (
        f"Which word is shown while the {s.thing} crosses the {s.background} scene?",
        s.word,
        _others([x.word for x in t.scenes] + list(WORDS), s.word),
    )


def q_object_reasoning(t: Timeline, rng: random.Random):
    count = str(len({s.shape for s in t.scenes}))
    return (
        "How many different kinds of shape appear in the video?",
        count,
        _others([str(v) for v in range(1, len(SHAPES) + 2)], count),
    )


def q_object_existence(t: Timeline, rng: random.Random):
    present = {s.thing for s in t.scenes}
    candidates = [f"{colour} {shape}" for colour in SHAPE_COLOURS for shape in SHAPES]
    thing = rng.choice(candidates)
    answer = "yes" if thing in present else "no"
    return f"Does a {thing} appear anywhere in the video?", answer, _others(["yes", "no"], answer)


def q_object_permanence(t: Timeline, rng: random.Random):
    k, s = _scene(t, rng, last_offset=1)
    later = [x for x in t.scenes[k + 1 :] if x.shape == s.shape]
    never = f"no {s.shape} appears again"
    answer = f"in the {later[0].background} scene" if later else never
    question = f"After the {s.shape} of the {s.background} scene leaves, in which later scene does a {s.shape} appear?"
    return question, answer, _others([f"in the {x.background} scene" for x in t.scenes if x is not s] + [never], answer)


def q_action_recognition(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    answer = f"it moves from {s.direction}"
    return (
        f"How does the {s.shape} move in the {s.background} scene?",
        answer,
        _others([f"it moves from {d}" for d in DIRECTIONS], answer),
    )


def q_action_localization(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    answer = f"from {s.start} to {s.end} seconds"
    question = f"When does the {s.thing} move from {s.direction} while the word '{s.word}' is shown?"
    return (
        question,
        answer,
        _others([f"from {x.start} to {x.end} seconds" for x in t.scenes], answer)
        + [f"from {v} to {v + 1} seconds" for v in range(t.duration)],
    )


def q_action_sequence(t: Timeline, rng: random.Random):
    shapes = [s.thing for s in t.scenes]
    return "In what order do the shapes cross the screen?", ", ".join(shapes), _orders(shapes)


def q_action_reasoning(t: Timeline, rng: random.Random):
    k, s = _scene(t, rng, last_offset=1)
    following = t.scenes[k + 1]

    def because(a: Scene, b: Scene) -> str:
        return f"because the {a.background} scene ends and the {b.background} scene begins"

    answer = because(s, following)
    pool = [because(a, b) for a, b in itertools.permutations(t.scenes, 2)]
    return f"Why does the {s.thing} disappear at {s.end} seconds?", answer, _others(pool, answer)


def q_scene_recognition(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng)
    middle = (s.start + s.end) / 2
    return f"What is the background colour at {middle:g} seconds?", s.background, _others(BACKGROUNDS, s.background)


def q_scene_transition(t: Timeline, rng: random.Random):
    k, s = _scene(t, rng, last_offset=1)
    after = t.scenes[k + 1].background
    return f"What does the background change to after the {s.background} scene?", after, _others(BACKGROUNDS, after)


def q_event_sequence(t: Timeline, rng: random.Random):
    words = [s.word for s in t.scenes]
    return "In what order are the words shown?", ", ".join(words), _orders(words)


def _event(s: Scene) -> str:
    return f"the background turns {s.background} and a {s.thing} appears with the word '{s.word}'"


def q_key_event(t: Timeline, rng: random.Random):
    _, s = _scene(t, rng, first=1)
    return f"What happens at {s.start} seconds?", _event(s), _others([_event(x) for x in t.scenes], _event(s))


def _summary(scenes: list[Scene]) -> str:
    parts = [
        f"a {s.background} scene where a {s.thing} moves from {s.direction} under the word '{s.word}'" for s in scenes
    ]
    return f"The video has {len(scenes)} scenes: " + "; then ".join(parts) + "."


def q_summary(t: Timeline, rng: random.Random):
    answer = _summary(t.scenes)
    wrong = [_summary(list(order)) for order in itertools.islice(itertools.permutations(t.scenes), 1, 8)]
    wrong.append(_summary(t.scenes[:-1]))
    return "Summarize the video.", answer, _others(wrong, answer)


QUESTION_MAKERS: dict[str, Callable] = {
    "Temporal Perception": q_temporal_perception,
    "Duration Perception": q_duration_perception,
    "Temporal Reasoning": q_temporal_reasoning,
    "Temporal Gap Estimation": q_temporal_gap,
    "Temporal Order": q_temporal_order,
    "Spatial Perception": q_spatial_perception,
    "Spatial Reasoning": q_spatial_reasoning,
    "Object Recognition": q_object_recognition,
    "Object Attribute": q_object_attribute,
    "Object Interaction": q_object_interaction,
    "Object Reasoning": q_object_reasoning,
    "Object Existence": q_object_existence,
    "Object Permanence": q_object_permanence,
    "Action Recognition": q_action_recognition,
    "Action Localization": q_action_localization,
    "Action Sequence": q_action_sequence,
    "Action Reasoning": q_action_reasoning,
    "Scene Recognition": q_scene_recognition,
    "Scene Transition": q_scene_transition,
    "Event Sequence": q_event_sequence,
    "Key Event Extraction": q_key_event,
    "Overall Summarization": q_summary,
}
assert set(QUESTION_MAKERS) == set(TASKS), "every VideoMarathon task needs a question maker"


def multiple_choice(answer: str, wrong: list[str], rng: random.Random) -> tuple[list[str], str]:
    """Options 'A. ...' (the answer and up to NUM_OPTIONS - 1 wrong ones, shuffled) and the answer's letter."""
    choices = [answer, *rng.sample(wrong, min(len(wrong), NUM_OPTIONS - 1))]
    rng.shuffle(choices)
    letter = chr(ord("A") + choices.index(answer))
    return [f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(choices)], letter


def qa_rows(timeline: Timeline, spec: SyntheticSpec, rng: random.Random) -> list[dict]:
    """Hub-format rows for one video: every task, every requested question type."""
    rows = []
    for task in TASKS:
        for question_type in spec.question_types:
            question, answer, wrong = QUESTION_MAKERS[task](timeline, rng)
            options: list[str] = []
            if question_type == MULTIPLE_CHOICE:
                options, answer = multiple_choice(answer, wrong, rng)
            rows.append(
                {
                    "id": f"{os.path.splitext(timeline.video)[0]}-{task.lower().replace(' ', '_')}-{question_type}",
                    "video": timeline.video,
                    "data_source": spec.source,
                    "duration": float(timeline.duration),
                    "topic": TASK_TOPIC[task],
                    "task": task,
                    "question_type": question_type,
                    "question": question,
                    "options": options,
                    "answer": answer,
                }
            )
    return rows


def llava_items(rows: list[dict], group_size: int = 5) -> list[dict]:
    """The grouped LLaVA training format of the same rows: up to `group_size` QA pairs per video per item."""
    from .videomarathon import format_question

    items, by_video = [], {}
    for row in rows:
        by_video.setdefault(row["video"], []).append(row)
    for video, video_rows in by_video.items():
        for start in range(0, len(video_rows), group_size):
            group = video_rows[start : start + group_size]
            conversations = []
            for index, row in enumerate(group):
                question = format_question(row["question"], row["options"])
                conversations.append({"from": "human", "value": ("<image>\n" if index == 0 else "") + question})
                conversations.append({"from": "gpt", "value": row["answer"]})
            items.append(
                {
                    "id": f"{os.path.splitext(video)[0]}-g{start // group_size}",
                    "video": video,
                    "data_source": group[0]["data_source"],
                    "conversations": conversations,
                }
            )
    return items


# ---------------------------------------------------------------------------------------------------------------
# Writing a set
# ---------------------------------------------------------------------------------------------------------------
def write_timeline_video(path: str, timeline: Timeline, spec: SyntheticSpec) -> str:
    """Encode a timeline at `spec.fps` and `spec.width` x `spec.height`."""

    def frame(index: int, width: int, height: int) -> np.ndarray:
        return render_frame(timeline, index / spec.fps, width, height, spec.text_overlay)

    return write_video(
        path,
        num_frames=int(round(timeline.duration * spec.fps)),
        fps=spec.fps,
        width=spec.width,
        height=spec.height,
        codec=spec.codec,
        frame_fn=frame,
    )


def write_synthetic_videomarathon(root: str | os.PathLike, spec: SyntheticSpec | None = None) -> SyntheticVideoMarathon:
    """Write videos, Hub rows (.jsonl), the grouped LLaVA json and the timelines under `root`."""
    spec = spec or SyntheticSpec()
    root = os.fspath(root)
    video_root = os.path.join(root, "videos")
    os.makedirs(os.path.join(video_root, spec.source), exist_ok=True)
    timelines, rows = [], []
    for index in range(spec.num_videos):
        rng = random.Random(f"{spec.seed}\0{index}")
        video = f"video_{index:04d}{spec.suffix}"
        timeline = make_timeline(video, rng.randint(spec.min_duration, spec.max_duration), spec, rng)
        write_timeline_video(os.path.join(video_root, spec.source, video), timeline, spec)
        timelines.append(timeline)
        rows.extend(qa_rows(timeline, spec, rng))
    annotations = os.path.join(root, "annotations")
    os.makedirs(annotations, exist_ok=True)
    hub_rows = os.path.join(annotations, "videomarathon_qa.jsonl")
    with open(hub_rows, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    llava_json = os.path.join(annotations, "videomarathon.json")
    write_json_atomically(llava_json, llava_items(rows))
    timelines_path = os.path.join(annotations, "timelines.json")
    write_json_atomically(timelines_path, {"spec": asdict(spec), "timelines": [asdict(t) for t in timelines]})
    return SyntheticVideoMarathon(root, video_root, hub_rows, llava_json, timelines_path, timelines, rows)
