"""Tiny, offline stand-ins for tests, benchmarks and smoke runs: a random Hour-LLaVA checkpoint and local copies
of the benchmarks with their real column schemas and real (synthetic) videos.

    python -m hour_llava_testing.tiny_benchmarks OUT_DIR    # OUT_DIR/checkpoint and OUT_DIR/data/<benchmark>/
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dataset_builder.synthetic_video import write_video
from hour_llava_lmms.benchmarks import BENCHMARKS

LETTERS = "ABCD"


def save_tiny_checkpoint(folder: str, seed: int = 0, letters_only: bool = True) -> str:
    """A random tiny Hour-LLaVA (`hour_llava_testing.tiny_model`: paper geometry, tiny widths, 128-frame minimum) with
    its processor, saved with remote code.

    letters_only: zero every output row but those of "A".."D", so the random model writes option letters (which
    one still depends on the video and the question) instead of byte soup, and benchmark scores are not all zero.
    """
    from hour_llava_testing.tiny_model import write_tiny_checkpoint

    return write_tiny_checkpoint(folder, seed=seed, customize=_keep_letter_rows if letters_only else None)


def _keep_letter_rows(model, tokenizer) -> None:
    """Zero the output embedding rows of every token but the option letters."""
    keep = torch.tensor(tokenizer.convert_tokens_to_ids(list(LETTERS)))
    head = model.get_output_embeddings().weight
    rows = head[keep].clone()
    head.zero_()
    head[keep] = rows


def _video(path: str, seconds: float, fps: float = 4.0) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_video(path, num_frames=max(1, int(seconds * fps)), fps=fps, width=64, height=48)


def _corrupt(path: str) -> str:
    """A file with a video's name and garbage inside (a truncated download)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2048))
    return path


def _options(i: int) -> list[str]:
    return [f"{letter}. option {letter.lower()} {i}" for letter in LETTERS]


def _videomme_rows(n: int) -> list[dict]:
    durations = ("short", "medium", "long")
    return [
        {
            "video_id": f"{v:03d}",
            "duration": durations[v % 3],
            "domain": "Knowledge",
            "sub_category": "Humanity & History",
            "url": f"https://www.youtube.com/watch?v=vid{v}",
            "videoID": f"vid{v}",
            "question_id": f"{v:03d}-{q + 1}",
            "task_type": "Counting Problem",
            "question": f"How many squares appear in part {q}?",
            "options": _options(q),
            "answer": LETTERS[(v + q) % 4],
        }
        for v in range(n)
        for q in range(2)
    ]


def _lvbench_rows(n: int) -> list[dict]:
    return [
        {
            "uid": f"{v}-{q}",
            "video_path": f"lvb{v}.mp4",
            "question": f"What happens at minute {q}?\n" + "\n".join(f"({c}) event {c}" for c in LETTERS),
            "answer": LETTERS[(v + q) % 4],
            "question_type": ["event understanding"],
            "time_reference": "00:00-00:03",
        }
        for v in range(n)
        for q in range(2)
    ]


def _longvideobench_rows(n: int) -> list[dict]:
    return [
        {
            "video_id": f"lv{v}",
            "video_path": f"lv{v}.mp4",
            "subtitle_path": f"lv{v}_en.json",
            "duration": 3.0,
            "duration_group": 15,
            "starting_timestamp_for_subtitles": 0.0,
            "question": f"Which colour is the square in scene {q}?",
            "question_wo_referring_query": f"Which colour is the square in scene {q}?",
            "option0": "red",
            "option1": "green",
            "option2": "blue",
            "option3": "yellow",
            "option4": "N/A",
            "correct_choice": (v + q) % 4,
            "position": [0, 1],
            "question_category": "S2E",
            "topic_category": "NP-News-Programs",
            "level": "L1-Perception",
            "id": f"lv{v}_{q}",
        }
        for v in range(n)
        for q in range(2)
    ]


def _tempcompass_rows(n: int) -> list[dict]:
    dims = ("speed", "direction", "action", "order", "attribute_change")
    rows = []
    for v in range(n):
        for q in range(2):
            words = ("fast", "slow", "left", "right")
            options = [f"{c}. moving {word}" for c, word in zip(LETTERS, words, strict=True)]
            answer = options[(v + q) % 4]
            rows.append(
                {
                    "video_id": f"tc{v}",
                    "dim": dims[(v + q) % len(dims)],
                    "question": "How is the bar moving?\n" + "\n".join(options),
                    "answer": answer,
                }
            )
    return rows


def _videomarathon_rows(n: int) -> list[dict]:
    return [
        {
            "id": f"vm{v}-{q}",
            "video": f"synthetic/vm{v}.mp4",
            "data_source": "synthetic",
            "duration": 3.0,
            "topic": "Event",
            "task": "Key Event Extraction",
            "question_type": "multiple_choice" if q < 2 else "open_ended",
            "question": f"What is the key event {q}?",
            "options": _options(q) if q < 2 else [],
            "answer": LETTERS[(v + q) % 4] if q < 2 else "a square moves",
        }
        for v in range(n)
        for q in range(3)
    ]


def _write_parquet(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _write_json(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(rows, handle)


# name -> (rows, annotation file, writer, the video file of a row relative to the benchmark's video folder)
LAYOUTS = {
    "videomme": (
        _videomme_rows, "videomme/test-00000-of-00001.parquet", _write_parquet, lambda r: r["videoID"] + ".mp4"
    ),
    "lvbench": (_lvbench_rows, "lvbench.parquet", _write_parquet, lambda r: r["video_path"]),
    "longvideobench": (_longvideobench_rows, "lvb_val.json", _write_json, lambda r: r["video_path"]),
    "tempcompass": (_tempcompass_rows, "multi-choice.json", _write_json, lambda r: r["video_id"] + ".mp4"),
    "videomarathon": (_videomarathon_rows, "validation.parquet", _write_parquet, lambda r: r["video"]),
}  # fmt: skip


def write_benchmark_copy(
    root: str, name: str, num_videos: int = 2, seconds: float = 3.0, missing: int = 0, corrupt: int = 0
) -> dict:
    """`root/<name>/`: the annotation file and the videos in the benchmark's layout. The last `missing` videos are
    not written, the `corrupt` ones before them are garbage. Returns {"folder", "rows", "missing", "corrupt"}."""
    make_rows, annotation, write_rows, video_of = LAYOUTS[name]
    folder = os.path.join(root, name)
    rows = make_rows(num_videos)
    write_rows(os.path.join(folder, annotation), rows)
    videos = list(dict.fromkeys(video_of(row) for row in rows))
    video_dir = os.path.join(folder, BENCHMARKS[name].video_subdir)
    broken = {"missing": videos[len(videos) - missing :] if missing else []}
    broken["corrupt"] = videos[len(videos) - missing - corrupt : len(videos) - missing] if corrupt else []
    for video in videos:
        if video in broken["missing"]:
            continue
        path = os.path.join(video_dir, video)
        _corrupt(path) if video in broken["corrupt"] else _video(path, seconds)
    return {"folder": folder, "rows": rows, **broken}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hour_llava_testing.tiny_benchmarks",
        description="Write a tiny random Hour-LLaVA checkpoint (OUT/checkpoint) and tiny local copies of the "
        "benchmarks with their real column schemas (OUT/data/<benchmark>), for smoke runs without downloads.",
    )
    parser.add_argument("out", help="output folder")
    out = parser.parse_args(argv).out
    save_tiny_checkpoint(os.path.join(out, "checkpoint"))
    for name in LAYOUTS:
        write_benchmark_copy(os.path.join(out, "data"), name)
    print(f"wrote {out}/checkpoint and {out}/data/<benchmark> for {', '.join(LAYOUTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
