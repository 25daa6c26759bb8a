"""Jobs for the synthetic VideoMarathon videos: their ground-truth timelines as the time-stamped descriptions a
`TextCaptioner` captions from (a stand-in for a VLM watching the frames, for tests and demos)."""

from __future__ import annotations

from ..synthetic_videomarathon import DIRECTIONS, SyntheticVideoMarathon, Timeline
from .stages import VideoJob


def timeline_descriptions(timeline: Timeline) -> list[dict]:
    """One description per scene: background, moving shape and its path, the word shown."""
    descriptions = []
    for scene in timeline.scenes:
        start_side, end_side = DIRECTIONS[scene.direction]
        text = (
            f"The background is {scene.background}. A {scene.thing} moves from {scene.direction}, starting "
            f"{start_side} and ending {end_side}. The word '{scene.word}' is written in the top-left corner."
        )
        descriptions.append({"start": float(scene.start), "end": float(scene.end), "text": text})
    return descriptions


def synthetic_jobs(data: SyntheticVideoMarathon, source: str = "synthetic") -> list[VideoJob]:
    """A VideoJob per synthetic video, described by its timeline."""
    return [
        VideoJob(video=t.video, source=source, duration=float(t.duration), descriptions=timeline_descriptions(t))
        for t in data.timelines
    ]
