"""Prompts of every stage and the definitions of the 22 tasks, written for this package after the VideoMarathon
paper's description of its pipeline (section 3: six-aspect clip captions, event splitting and captions, a global
caption, then open-ended and multiple-choice QA per topic; short-form tasks from clip captions, long-form tasks
from event and global captions).

Everything is data: `Prompts` holds `str.format` templates and `Prompts.from_file(path)` overrides any of them from
a JSON file (`{"clip_caption": "...", "task_definitions": {"Temporal Order": "..."}}`), so a domain (lectures,
surgery, driving) rewrites the wording without touching code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace

from ..videomarathon import LONG_FORM_TASKS, TASKS

TASK_DEFINITIONS: dict[str, str] = {
    "Temporal Perception": "when something visible happens, answered with a time in the video",
    "Duration Perception": "how long an activity, state or scene lasts",
    "Temporal Reasoning": "what happens before or after an event, and why that order matters",
    "Temporal Gap Estimation": "how much time passes between two events",
    "Temporal Order": "the order in which several events happen",
    "Spatial Perception": "where an object is in the frame at one moment",
    "Spatial Reasoning": "how positions and layouts change over the video",
    "Object Recognition": "which object is visible at one moment",
    "Object Attribute": "the colour, shape, size or text of an object",
    "Object Interaction": "how a person or object acts on another object",
    "Object Reasoning": "why an object is used, moved or changed over the video",
    "Object Existence": "whether an object appears anywhere in the video",
    "Object Permanence": "where an object is or was after it leaves view",
    "Action Recognition": "which action is performed at one moment",
    "Action Localization": "when in the video an action takes place",
    "Action Sequence": "the order of the actions over the video",
    "Action Reasoning": "why an action happens, from what came before",
    "Scene Recognition": "what the scene or place is at one moment",
    "Scene Transition": "how the scene changes from one place or setting to another",
    "Event Sequence": "the order of the main events",
    "Key Event Extraction": "which events are the important ones and what happens in them",
    "Overall Summarization": "a summary of the whole video",
}
assert set(TASK_DEFINITIONS) == set(TASKS), "every VideoMarathon task needs a definition"

# Where a task may mention times ("12 seconds", "00:12"): "free" anywhere; "answer" only in the answer (the
# question must not give away a temporal answer); "none" nowhere (order and summary tasks: times in the question
# or options give the order away, and they are copied caption metadata).
TIMESTAMP_POLICY: dict[str, str] = {task: "free" for task in TASKS} | {
    "Temporal Perception": "answer",
    "Duration Perception": "answer",
    "Temporal Gap Estimation": "answer",
    "Action Localization": "answer",
    "Temporal Order": "none",
    "Action Sequence": "none",
    "Event Sequence": "none",
    "Overall Summarization": "none",
}

JSON_RULE = "Reply with one JSON object only, no other text, matching: {shape}"

ASPECT_CAPTIONS = (
    "Write a caption for each aspect: temporality (what changes over the clip and when), spatiality (where things "
    "are), object (the objects and their attributes), action (who does what), scene (the place and setting), "
    "summary (one or two sentences).\n"
    + JSON_RULE.format(
        shape='{{"temporality": "...", "spatiality": "...", '
        '"object": "...", "action": "...", "scene": "...", "summary": "..."}}'
    )
)
CLIP_CAPTION = (
    "You describe one short clip ({start:g}s to {end:g}s) of a longer video.\n"
    "What the clip shows:\n{content}\n\n" + ASPECT_CAPTIONS
)
CLIP_CAPTION_FRAMES = (
    "You describe one short clip ({start:g}s to {end:g}s) of a longer video. The {num_frames} images above are "
    "frames of the clip, in order, taken at {times}.\n\n" + ASPECT_CAPTIONS
)
EVENT_SPLIT = (
    "Below are captions of consecutive clips of one video, numbered from 0. Group consecutive clips that show the "
    "same event; every clip belongs to exactly one event, in order.\n{clips}\n\n"
    + JSON_RULE.format(shape='{{"events": [{{"start_clip": 0, "end_clip": 1}}, ...]}}')
)
EVENT_CAPTION = (
    "These are captions of consecutive clips that make up one event ({start:g}s to {end:g}s) of a video:\n{clips}\n\n"
    "Describe the event in a few sentences: what happens, in what order, with which objects and where.\n"
    + JSON_RULE.format(shape='{{"caption": "..."}}')
)
GLOBAL_CAPTION = (
    "These are the events of a video of {duration:g} seconds, in order:\n{events}\n\n"
    "Write a description of the whole video: its setting, its main events in order, and how it develops.\n"
    + JSON_RULE.format(shape='{{"caption": "..."}}')
)
QA_OPEN = (
    "You write questions about a video for the topic {topic}. The video, as described by captions:\n{context}\n\n"
    "Write one question with its answer for each task:\n{tasks}\n"
    "Use only what the captions state. {timestamp_rules}\n"
    + JSON_RULE.format(shape='{{"qa": [{{"task": "<task name>", "question": "...", "answer": "..."}}, ...]}}')
)
QA_MULTIPLE_CHOICE = (
    "You write multiple-choice questions about a video for the topic {topic}. The video, as described by "
    "captions:\n{context}\n\n"
    "Write one question for each task, with {num_options} distinct options of which exactly one is right, and the "
    "right option's letter as the answer:\n{tasks}\n"
    "Use only what the captions state; wrong options must be plausible. {timestamp_rules}\n"
    + JSON_RULE.format(
        shape='{{"qa": [{{"task": "<task name>", "question": "...", "options": ["...", "..."], "answer": "A"}}, ...]}}'
    )
)
TIMESTAMP_RULES = {
    "answer": "For {tasks}: do not put times in the question or the wrong options; the answer may be a time.",
    "none": "For {tasks}: write no times or timestamps at all.",
}


@dataclass
class Prompts:
    """The templates of every stage, the task definitions and the timestamp policy; override from JSON."""

    clip_caption: str = CLIP_CAPTION
    clip_caption_frames: str = CLIP_CAPTION_FRAMES
    event_split: str = EVENT_SPLIT
    event_caption: str = EVENT_CAPTION
    global_caption: str = GLOBAL_CAPTION
    qa_open: str = QA_OPEN
    qa_multiple_choice: str = QA_MULTIPLE_CHOICE
    timestamp_rules: dict[str, str] = field(default_factory=lambda: dict(TIMESTAMP_RULES))
    task_definitions: dict[str, str] = field(default_factory=lambda: dict(TASK_DEFINITIONS))
    timestamp_policy: dict[str, str] = field(default_factory=lambda: dict(TIMESTAMP_POLICY))

    @classmethod
    def from_file(cls, path: str | os.PathLike | None) -> Prompts:
        """Defaults, with the keys of a JSON file replacing templates (and merging into the dicts)."""
        prompts = cls()
        if path is None:
            return prompts
        with open(path) as handle:
            overrides = json.load(handle)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"{path}: unknown prompt keys {unknown}; known: {sorted(known)}")
        merged = {
            key: (getattr(prompts, key) | value if isinstance(getattr(prompts, key), dict) else value)
            for key, value in overrides.items()
        }
        return replace(prompts, **merged)

    def task_lines(self, tasks: list[str]) -> str:
        return "\n".join(f'- "{task}": {self.task_definitions[task]}' for task in tasks)

    def timestamp_text(self, tasks: list[str]) -> str:
        """The timestamp rules that apply to these tasks, one sentence per policy."""
        sentences = []
        for policy, template in self.timestamp_rules.items():
            named = [task for task in tasks if self.timestamp_policy.get(task) == policy]
            if named:
                sentences.append(template.format(tasks=", ".join(named)))
        return " ".join(sentences)


def is_long_form(task: str) -> bool:
    return task in LONG_FORM_TASKS
