"""Video-MME (`lmms-eval/Video-MME`, split test): upstream prompt and scoring, our video lookup."""

from __future__ import annotations

import os

from . import first_existing, video_root


def doc_to_visual(doc: dict) -> list[str]:
    """`<root>/<videoID>.mp4` (or .MP4 / .mkv, as upstream tries); root from HOUR_LLAVA_VIDEOMME_VIDEOS."""
    root = video_root("videomme", os.path.join("videomme", "data"))
    stem = os.path.join(root, doc["videoID"])
    return [first_existing([stem + ".mp4", stem + ".MP4", stem + ".mkv"])]
