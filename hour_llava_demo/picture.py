"""The demo's picture: the video on a time axis, the frames forgetting kept for the decoder, the moment each question
asks about, and where MemAug's cross-attention went, one panel per question. An SVG with a semantic structure
(groups with ids and classes, times in `data-*` attributes), so what it shows can be read back by a program.

    <svg>
      <g id="kept-frames" data-count="16"><line class="kept-frame" data-second="225"/>...</g>
      <g id="question-1" class="question" data-task="needle_shape" data-answer="circle" data-truth="circle">
        <rect class="moment" data-start="1422" data-end="1425"/>
        <polyline class="attention" data-peak-second="1423" points="..."/>
      </g>
      <g id="time-axis" data-duration="3600"><g class="tick" data-second="0">...</g>...</g>
    </svg>
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, LEFT, RIGHT = 1100, 70, 30
KEPT_TOP, KEPT_HEIGHT = 52, 26
PANEL_HEIGHT, PANEL_GAP = 96, 34
MOMENT_COLOUR, KEPT_COLOUR, CURVE_COLOUR = "#e8449a", "#3b6fb6", "#222222"


@dataclass
class QuestionPanel:
    """One question's row: its text, the model's answer and the truth, the moment (start, end) in seconds it asks
    about, and MemAug's attention over time (one value per second of the video)."""

    task: str
    question: str
    answer: str
    truth: str
    moment: tuple[int, int]
    attention: list[float]
    peak_second: int


def clock(seconds: float) -> str:
    """h:mm:ss or m:ss."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def tick_step(duration: int) -> int:
    """Seconds between axis ticks: about 6 to 12 of them."""
    for step in (30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 12:
            return step
    return 7200


def render_svg(title: str, duration: int, kept_seconds: list[int] | None, panels: list[QuestionPanel]) -> str:
    """The picture as SVG text."""
    plot = WIDTH - LEFT - RIGHT

    def x(second: float) -> float:
        return LEFT + plot * second / duration

    top = KEPT_TOP + KEPT_HEIGHT + PANEL_GAP
    axis_y = top + len(panels) * (PANEL_HEIGHT + PANEL_GAP)
    height = axis_y + 50
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text id="title" x="{LEFT}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    if kept_seconds is None:
        parts.append(f'<g id="kept-frames" data-count="unknown"><text x="{LEFT}" y="{KEPT_TOP + 18}">frames kept by '
                     "forgetting: unknown for this model's forgetting mode</text></g>")  # fmt: skip
    else:
        parts.append(f'<g id="kept-frames" data-count="{len(kept_seconds)}">')
        parts.append(f'<text x="{LEFT}" y="{KEPT_TOP - 6}">the {len(kept_seconds)} frames the decoder sees after '
                     "forgetting (MemAug reads every frame)</text>")  # fmt: skip
        for second in kept_seconds:
            parts.append(f'<line class="kept-frame" data-second="{second}" x1="{x(second + 0.5):.2f}" '
                         f'x2="{x(second + 0.5):.2f}" y1="{KEPT_TOP}" y2="{KEPT_TOP + KEPT_HEIGHT}" '
                         f'stroke="{KEPT_COLOUR}" stroke-width="2"/>')  # fmt: skip
        parts.append("</g>")
    for index, panel in enumerate(panels, start=1):
        y0 = top + (index - 1) * (PANEL_HEIGHT + PANEL_GAP)
        base = y0 + PANEL_HEIGHT
        verdict = "right" if panel.answer == panel.truth else "wrong"
        parts.append(f'<g id="question-{index}" class="question" data-task="{escape(panel.task)}" '
                     f'data-answer="{escape(panel.answer)}" data-truth="{escape(panel.truth)}">')  # fmt: skip
        parts.append(f'<text x="{LEFT}" y="{y0 - 8}">{escape(panel.question)}  answer: {escape(panel.answer)} '
                     f"(truth: {escape(panel.truth)}, {verdict}); attention peak at "
                     f"{clock(panel.peak_second)}</text>")  # fmt: skip
        parts.append(f'<rect class="panel" x="{LEFT}" y="{y0}" width="{plot}" height="{PANEL_HEIGHT}" fill="none" '
                     'stroke="#cccccc"/>')  # fmt: skip
        start, end = panel.moment
        width = max(x(end) - x(start), 2.0)
        parts.append(f'<rect class="moment" data-start="{start}" data-end="{end}" x="{x(start):.2f}" y="{y0}" '
                     f'width="{width:.2f}" height="{PANEL_HEIGHT}" fill="{MOMENT_COLOUR}" '
                     'fill-opacity="0.35"/>')  # fmt: skip
        label_x = min(max(x(start), LEFT + 40), LEFT + plot - 40)
        parts.append(f'<text class="moment-label" x="{label_x:.2f}" y="{y0 + 12}" text-anchor="middle" '
                     f'fill="{MOMENT_COLOUR}">asked about: {clock(start)}</text>')  # fmt: skip
        top_value = max(panel.attention) or 1.0
        points = " ".join(f"{x(second + 0.5):.2f},{base - (PANEL_HEIGHT - 6) * value / top_value:.2f}"
                          for second, value in enumerate(panel.attention))  # fmt: skip
        parts.append(f'<polyline class="attention" data-peak-second="{panel.peak_second}" points="{points}" '
                     f'fill="none" stroke="{CURVE_COLOUR}" stroke-width="1"/>')  # fmt: skip
        parts.append(f'<text class="curve-label" x="{LEFT - 6}" y="{y0 + 12}" text-anchor="end">MemAug</text>')
        parts.append(f'<text class="curve-label" x="{LEFT - 6}" y="{y0 + 26}" text-anchor="end">attention</text>')
        parts.append("</g>")
    parts.append(f'<g id="time-axis" data-duration="{duration}">')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot}" y1="{axis_y}" y2="{axis_y}" stroke="black"/>')
    step = tick_step(duration)
    for second in range(0, duration + 1, step):
        parts.append(f'<g class="tick" data-second="{second}"><line x1="{x(second):.2f}" x2="{x(second):.2f}" '
                     f'y1="{axis_y}" y2="{axis_y + 6}" stroke="black"/><text x="{x(second):.2f}" y="{axis_y + 20}" '
                     f'text-anchor="middle">{clock(second)}</text></g>')  # fmt: skip
    parts.append(f'<text x="{LEFT + plot / 2}" y="{axis_y + 40}" text-anchor="middle">time in the video '
                 f"(1 frame per second; pink: the moment asked about)</text>")  # fmt: skip
    parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_picture(path: str | os.PathLike, title: str, duration: int, kept_seconds: list[int] | None,
                  panels: list[QuestionPanel]) -> str:  # fmt: skip
    """Write the picture to `path` (SVG), atomically; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w") as handle:
        handle.write(render_svg(title, duration, kept_seconds, panels))
    os.replace(partial, path)
    return path


__all__ = ["QuestionPanel", "clock", "render_svg", "write_picture"]
