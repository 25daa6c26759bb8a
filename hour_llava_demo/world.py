"""The demo's world: a long video with a needle in it, and the questions whose answers only the needle shows.

A video of solid-colour scenes (5 to 15 s each, a new background every time) at 1 fps, 32 x 32 px, with a coloured
shape flashed for 2 or 3 seconds every 5 to 12 seconds from its first scene to its last: an hour holds about 400
flashes. Every flash colour but one is shown at least twice; exactly one flash, the *needle*, is the only one of its
colour (pink in the demo). Two questions name that colour and ask what only the needle's frames show:

| task | question | answer |
|---|---|---|
| needle_shape | Which shape flashed on screen in pink? | triangle |
| needle_scene | What was the background colour when the pink shape flashed? | grey |

Temporal forgetting keeps a few frames of the hour for the decoder (16 for the demo's model: one every 225 s), so
the needle is almost never among them; the answer has to come from MemAug's cross-attention into the full memory.
A change detector does not find it either: every flash changes its frames as much as the needle does.

    from hour_llava_demo.world import demo_timeline, demo_questions, write_timeline_video
    timeline = demo_timeline(minutes=60, seed=0)
    write_timeline_video("hour.mp4", timeline)
    [(q.question, q.answer, q.moment) for q in demo_questions(timeline)]

The research recall suite (`research/recall/recall_suite.py`, its needle form) writes its training and test videos
with these functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw

from dataset_builder.synthetic_video import write_video
from dataset_builder.synthetic_videomarathon import BACKGROUNDS, SHAPE_COLOURS, SHAPES

SHAPE_SIDE = (0.7, 0.9)  # a flashed shape's side, as a fraction of the frame: it dominates the frame's features
DEMO_NEEDLE_COLOUR = "pink"
NEEDLE_TASKS = {"needle_shape": "Object Recognition", "needle_scene": "Scene Recognition"}  # -> VideoMarathon task
# What the demo asks: the needle's shape. Its model, trained on both tasks, names the shape of the needle it finds in
# an hour of video but not the background it flashed on (research/recall/README.md).
DEMO_TASKS = ("needle_shape",)


class WorldSpec(Protocol):
    """What a needle video's timeline is drawn from (`NeedleWorld`, or the research suite's `RecallSpec`)."""

    size: int
    min_scene_seconds: int
    max_scene_seconds: int
    flash_seconds: tuple[int, int]
    flash_gap_seconds: tuple[int, int] | None
    needle_colour: str | None


@dataclass(frozen=True)
class NeedleWorld:
    """The demo's world: frame size (square, px), scene lengths, flash lengths and gaps (seconds), the needle's
    colour (None: a random one per video) and the shapes a needle may have (None: any of SHAPES, as distractors).

    The demo's needles are circles and squares: a pink triangle fills half of its box, and in the 2 x 2 memory grid
    of the demo's tiny model its tokens carry too little pink for MemAug to find it among the 400 flashes of an
    hour; the model then answers "triangle" by default, right without looking (research/recall/README.md)."""

    size: int = 32
    min_scene_seconds: int = 5
    max_scene_seconds: int = 15
    flash_seconds: tuple[int, int] = (2, 3)
    flash_gap_seconds: tuple[int, int] = (3, 9)
    needle_colour: str | None = DEMO_NEEDLE_COLOUR
    needle_shapes: tuple[str, ...] | None = ("circle", "square")


@dataclass
class Flash:
    """A shape of one colour shown from `start` to `end` (seconds, end exclusive) inside `box` (x0, y0, x1, y1)."""

    start: int
    end: int
    shape: str
    colour: str
    box: tuple[int, int, int, int]


@dataclass
class Timeline:
    """What a video shows, second by second: scenes (start, end, background colour) and flashes."""

    video: str
    duration: int
    scenes: list[tuple[int, int, str]] = field(default_factory=list)
    flashes: list[Flash] = field(default_factory=list)

    def background_at(self, second: int) -> str:
        for start, end, colour in self.scenes:
            if start <= second < end:
                return colour
        return self.scenes[-1][2]

    def flash_at(self, second: int) -> Flash | None:
        return next((f for f in self.flashes if f.start <= second < f.end), None)


# ---------------------------------------------------------------------------------------------------------------
# Timelines
# ---------------------------------------------------------------------------------------------------------------
def make_scenes(duration: int, world: WorldSpec, rng: random.Random) -> list[tuple[int, int, str]]:
    """Scenes of `min_scene_seconds`..`max_scene_seconds` covering `duration` seconds, each a new background."""
    scenes, start, previous = [], 0, None
    while start < duration:
        end = min(duration, start + rng.randint(world.min_scene_seconds, world.max_scene_seconds))
        colour = rng.choice([c for c in BACKGROUNDS if c != previous])
        scenes.append((start, end, colour))
        start, previous = end, colour
    return scenes


def needle_flashes(
    video: str, duration: int, scenes: list[tuple[int, int, str]], world: WorldSpec, rng: random.Random
) -> list[Flash]:
    """Flashes from the end of the first scene to the start of the last, each after a gap of `flash_gap_seconds`
    and inside one scene (pushed to the next scene's start when it would cross a cut), placed and shaped at random;
    one at a random place, the needle, gets a colour that every other flash lacks. (A unique *shape* would not do:
    with the suite's tower a square changes a frame's summary more than a triangle, so keyframe selection would find
    square needles among triangles for free.)"""
    spans, second, stop = [], scenes[0][1], scenes[-1][0]
    while True:
        length = rng.randint(*world.flash_seconds)
        second += rng.randint(*world.flash_gap_seconds)
        if second + length > stop:
            break
        scene_end = next(end for start, end, _ in scenes if start <= second < end)
        if second + length > scene_end:  # scenes outlast flashes, so the next one holds it
            second = scene_end
            if second + length > stop:
                break
        spans.append((second, second + length))
        second += length
    if len(spans) < 3:
        raise ValueError(f"{video}: {duration} s holds {len(spans)} flashes of the needle form; use longer videos")
    needle, unique = rng.randrange(len(spans)), rng.choice(list(SHAPE_COLOURS))
    if world.needle_colour is not None:
        if world.needle_colour not in SHAPE_COLOURS:
            raise ValueError(f"needle_colour={world.needle_colour!r}; expected one of {list(SHAPE_COLOURS)}")
        unique = world.needle_colour
    colours = distractor_colours(len(spans) - 1, [colour for colour in SHAPE_COLOURS if colour != unique], rng)
    colours.insert(needle, unique)
    flashes = []
    for (start, end), colour in zip(spans, colours, strict=True):
        side = rng.randint(round(world.size * SHAPE_SIDE[0]), round(world.size * SHAPE_SIDE[1]))
        x, y = rng.randint(0, world.size - side), rng.randint(0, world.size - side)
        flashes.append(Flash(start, end, rng.choice(SHAPES), colour, (x, y, x + side, y + side)))
    allowed = getattr(world, "needle_shapes", None)  # the research suite's specs: any shape
    if allowed and flashes[needle].shape not in allowed:
        flashes[needle].shape = rng.choice(list(allowed))
    return flashes


def distractor_colours(count: int, colours: list[str], rng: random.Random) -> list[str]:
    """`count` (>= 2) colours drawn from `colours` in pairs (a triple when three are left), shuffled: every colour
    used is used at least twice, so the needle's stays the only colour shown once."""
    picked: list[str] = []
    while len(picked) < count:
        picked += [rng.choice(colours)] * (3 if count - len(picked) == 3 else 2)
    rng.shuffle(picked)
    return picked


def needle_timeline(video: str, duration: int, world: WorldSpec, rng: random.Random) -> Timeline:
    """A needle video of `duration` seconds: its scenes, then its flashes, drawn from `rng`."""
    scenes = make_scenes(duration, world, rng)
    return Timeline(video, duration, scenes, needle_flashes(video, duration, scenes, world, rng))


def needle_of(timeline: Timeline) -> Flash:
    """The needle: the one flash whose colour no other flash has."""
    colours = [flash.colour for flash in timeline.flashes]
    unique = [flash for flash in timeline.flashes if colours.count(flash.colour) == 1]
    if len(unique) != 1 or len(colours) < 3:
        raise ValueError(f"{timeline.video} is not a needle-form video: no one flash is the only one of its colour")
    return unique[0]


def demo_timeline(minutes: float, seed: int, world: NeedleWorld | None = None) -> Timeline:
    """The demo's video of `minutes` (whole seconds), its content drawn from `seed` (a stream of its own: no
    training or test set of the research suite draws the same video); its file name ends in a digest of the
    content."""
    duration, world = round(minutes * 60), world or NeedleWorld()
    timeline = needle_timeline(f"demo-{duration}s-seed{seed}.mp4", duration, world,
                               random.Random(f"hour-llava-demo\0{duration}\0{seed}"))  # fmt: skip
    # The file name carries a digest of what the video shows, so a cached video of another world is never reused.
    content = json.dumps([asdict(world), timeline.scenes, [asdict(f) for f in timeline.flashes]], default=list)
    timeline.video = f"demo-{duration}s-seed{seed}-{hashlib.sha256(content.encode()).hexdigest()[:10]}.mp4"
    return timeline


# ---------------------------------------------------------------------------------------------------------------
# Frames and videos
# ---------------------------------------------------------------------------------------------------------------
def shape_mask(shape: str, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """(size, size) bool mask of a square, circle or triangle (apex up) filling `box`."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)
    elif shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=255)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return np.asarray(image) > 127


def render_frame(timeline: Timeline, second: int, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the scene's background, and the flash shown at that second, if any."""
    frame = np.empty((size, size, 3), np.uint8)
    frame[...] = BACKGROUNDS[timeline.background_at(second)]
    flash = timeline.flash_at(second)
    if flash is not None:
        frame[shape_mask(flash.shape, flash.box, size)] = SHAPE_COLOURS[flash.colour]
    return frame


def write_timeline_video(path: str | os.PathLike, timeline: Timeline, size: int = 32, codec: str = "libx264") -> str:
    """Write the timeline as a 1 fps video of `size` x `size` px to `path`, atomically (a temporary file, then a
    rename); an existing file is kept (the content is deterministic). Returns the path."""
    path = os.fspath(path)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        partial = path + ".partial.mp4"
        write_video(partial, num_frames=timeline.duration, fps=1.0, width=size, height=size, codec=codec,
                    frame_fn=lambda i, w, h: render_frame(timeline, i, size))  # fmt: skip
        os.replace(partial, path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------------------------
def others(pool, answer: str) -> list[str]:
    return [item for item in pool if item != answer]


def needle_question(task: str, timeline: Timeline, shapes: tuple[str, ...] = SHAPES) -> tuple[str, str, list[str]]:
    """(question, answer, wrong answers) of a needle task: the question names the needle's colour, never what it
    asks for. `shapes`: the shapes a needle may have."""
    needle = needle_of(timeline)
    if task == "needle_shape":
        return f"Which shape flashed on screen in {needle.colour}?", needle.shape, others(shapes, needle.shape)
    if task == "needle_scene":
        background = timeline.background_at(needle.start)
        question = f"What was the background colour when the {needle.colour} shape flashed?"
        return question, background, others(BACKGROUNDS, background)
    raise ValueError(f"unknown needle task {task!r}; expected one of {sorted(NEEDLE_TASKS)}")


@dataclass
class DemoQuestion:
    """A question the demo asks, its true answer, the moment (start, end) in seconds it is about, and the chance of
    guessing it (one over the number of possible answers)."""

    task: str
    question: str
    answer: str
    moment: tuple[int, int]
    chance: float


def demo_questions(
    timeline: Timeline, tasks: tuple[str, ...] = DEMO_TASKS, world: NeedleWorld | None = None
) -> list[DemoQuestion]:
    """The demo's questions about a needle video of `world` (default: the demo's), with their truths; a question's
    chance is one over the answers the world allows."""
    needle, world = needle_of(timeline), world or NeedleWorld()
    questions = []
    for task in tasks:
        question, answer, wrong = needle_question(task, timeline, world.needle_shapes or SHAPES)
        questions.append(DemoQuestion(task, question, answer, (needle.start, needle.end), 1 / (1 + len(wrong))))
    return questions


__all__ = [
    "DEMO_NEEDLE_COLOUR",
    "DEMO_TASKS",
    "NEEDLE_TASKS",
    "DemoQuestion",
    "Flash",
    "NeedleWorld",
    "Timeline",
    "demo_questions",
    "demo_timeline",
    "needle_of",
    "needle_question",
    "needle_timeline",
    "render_frame",
    "shape_mask",
    "write_timeline_video",
]
