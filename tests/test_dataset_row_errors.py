"""Malformed annotation rows and broken videos never stop a build: each is excluded and counted by reason.

Every kind of bad row found by trying the builders as a user (a NUL byte in a path, `null` and `42` lines, a
string or a null turn for `conversations`, an answer given as a dict, a line that is not JSON, empty texts,
NaN/negative/infinite/boolean durations, `options: "A. red"`, dicts and lists where text belongs) is checked one by
one (reason and the message's key words), then all of them scattered through a few hundred good rows with the
exact count per reason. `check_videos="probe"` decodes the end of each video: files cut short (mp4 with its index
in front, mkv, webm) and a header that claims 10 hours are excluded as truncated, and durations are the decoded
ones. `LlavaJson` applies the same row rules.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections import Counter
from pathlib import Path

import av
import pytest

from dataset_builder.media import check_media
from dataset_builder.mixtures import LlavaJson
from dataset_builder.synthetic_video import write_video
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from dataset_builder.videomarathon import VideoMarathon

SPEC = SyntheticSpec(num_videos=6, min_duration=5, max_duration=7, fps=4.0, width=48, height=32, seed=11)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_videomarathon(tmp_path_factory.mktemp("rows"), SPEC)


def build(tmp_path: Path, rows_or_lines: list, video_root: str, config: str = "qa", **kwargs):
    """Build from a JSONL file of `rows_or_lines` (dicts and other values are dumped, str lines written as they
    are, bytes written raw); returns (report, rows of every split)."""
    annotations = tmp_path / "rows.jsonl"
    with open(annotations, "wb") as handle:
        for line in rows_or_lines:
            if isinstance(line, bytes):
                handle.write(line + b"\n")
            elif isinstance(line, str):
                handle.write(line.encode() + b"\n")
            else:
                handle.write(json.dumps(line).encode() + b"\n")
    builder = VideoMarathon(
        config_name=config,
        annotations=str(annotations),
        video_root=video_root,
        cache_dir=str(tmp_path / "cache"),
        validation_fraction=0.0,
        **kwargs,
    )
    builder.download_and_prepare()
    report = json.loads(Path(builder.report_path).read_text())
    rows = builder.as_dataset("train").to_list() if report["kept_rows"].get("train") else []
    return report, rows


def llava_item(row: dict, **changes) -> dict:
    item = {
        "id": row["id"],
        "video": row["video"],
        "data_source": row["data_source"],
        "conversations": [{"from": "human", "value": "<image>\n" + row["question"]}, {"from": "gpt", "value": "a"}],
    }
    return {**item, **changes}


def bad_rows(good: dict) -> list[tuple[str, object, str]]:
    """(expected reason, the bad line, a key word of its message): every case of the issue, and more."""
    turns = llava_item(good)["conversations"]
    return [
        ("invalid_path", {**good, "video": "video_0000.mp4\x00.txt"}, "NUL byte"),
        ("invalid_path", {**good, "video": None}, "video must be a non-empty path"),
        ("invalid_path", {**good, "video": 42}, "video must be a non-empty path"),
        ("invalid_path", llava_item(good, video="a\x00b.mp4"), "NUL byte"),
        ("not_an_object", None, "expected a JSON object, got null"),
        ("not_an_object", 42, "expected a JSON object, got 42"),
        ("not_an_object", ["a", "b"], "expected a JSON object"),
        ("invalid_annotation", llava_item(good, conversations="Q: what? A: red"), "conversations must be a list"),
        ("invalid_annotation", llava_item(good, conversations=[turns[0], None]), "conversations[1] must be an"),
        (
            "invalid_annotation",
            llava_item(good, conversations=[turns[0], {"from": "gpt", "value": {"x": 1}}]),
            "must be text, got dict",
        ),  # fmt: skip
        ("invalid_annotation", {**good, "answer": {"text": "red"}}, "answer must be text, got dict"),
        ("invalid_annotation", {**good, "question": ["what", "colour"]}, "question must be text, got list"),
        ("invalid_annotation", {**good, "options": "A. red"}, "options must be a list of texts, got str"),
        ("invalid_annotation", {**good, "options": {"A": "red", "B": "blue"}}, "options must be a list"),
        ("invalid_annotation", {**good, "options": [["red"], "blue"]}, "options[0] must be text, got list"),
        ("invalid_annotation", {**good, "task": "Bogus Task"}, "Bogus Task"),
        ("invalid_annotation", {**good, "id": {"n": 1}}, "id must be a non-empty string or integer"),
        ("invalid_json", '{"id": "cut", "video": "video_0000.mp4", "question": "What', "not valid JSON"),
        ("invalid_json", b'{"id": "latin1", "question": "caf\xe9"}', "not valid JSON"),
        ("empty_text", {**good, "question": ""}, "question is empty"),
        ("empty_text", {**good, "answer": "   "}, "answer is empty"),
        ("empty_text", {key: value for key, value in good.items() if key != "answer"}, "answer is missing"),
        ("empty_text", {**good, "options": ["red", ""]}, "options[1] is empty"),
        (
            "empty_text",
            llava_item(good, conversations=[{"from": "human", "value": "<image>\n"}, turns[1]]),
            "(question) is empty",
        ),  # fmt: skip
        ("invalid_duration", {**good, "duration": float("nan")}, "finite and positive, got nan"),
        ("invalid_duration", {**good, "duration": -5}, "finite and positive, got -5"),
        ("invalid_duration", {**good, "duration": float("inf")}, "finite and positive, got inf"),
        ("invalid_duration", {**good, "duration": 0}, "finite and positive, got 0"),
        ("invalid_duration", {**good, "duration": True}, "number of seconds, got true"),
        ("invalid_duration", {**good, "duration": "12 s"}, "number of seconds"),
        ("path_escapes_root", {**good, "video": "../../outside.mp4"}, "escapes its root"),
        ("unknown_source", {**good, "data_source": "nowhere/../x"}, "no video root"),
        ("missing_media", {**good, "video": "gone.mp4"}, "no such file"),
    ]


def unique(reason_line_word: tuple[str, object, str], number: int) -> tuple[str, object, str]:
    """A bad row with an id of its own (so no case is also a duplicate of a good row)."""
    reason, line, word = reason_line_word
    if isinstance(line, dict) and not isinstance(line.get("id"), dict):
        line = {**line, "id": f"bad-{number}"}
    return reason, line, word


PLACEHOLDER = {"id": "x", "video": "v.mp4", "data_source": "s", "question": "q"}


@pytest.mark.parametrize("case", range(len(bad_rows(PLACEHOLDER))))
def test_each_bad_row_is_excluded_with_its_reason(tmp_path, synthetic, case):
    reason, line, word = unique(bad_rows(synthetic.rows[0])[case], case)
    report, rows = build(tmp_path, [synthetic.rows[0], line, synthetic.rows[1]], synthetic.video_root)
    assert report["excluded_rows"] == {reason: 1}
    example = report["examples"][reason][0]
    assert word in example["detail"], example
    assert [row["id"] for row in rows] == [synthetic.rows[0]["id"], synthetic.rows[1]["id"]]


def test_values_are_kept_as_given_not_stringified(tmp_path, synthetic):
    """Options stay a list of their texts, integer answers become their text, durations are floats."""
    good = synthetic.rows[0]
    report, rows = build(
        tmp_path,
        [{**good, "options": ["A. red", "B. blue"], "answer": "A"}, {**synthetic.rows[1], "answer": 3, "options": []}],
        synthetic.video_root,
    )
    assert report["excluded_rows"] == {}
    assert rows[0]["options"] == ["A. red", "B. blue"] and rows[1]["answer"] == "3"
    assert rows[0]["duration"] == good["duration"]


def test_hundreds_of_rows_with_every_bad_kind_scattered(tmp_path, synthetic):
    """One build over 264 good rows and every bad kind (each three times, plus duplicates), shuffled together:
    nothing aborts, the good rows are all kept, and the report has the exact count per reason."""
    good = synthetic.rows
    assert len(good) == 264
    bad = [unique(case, number) for number, case in enumerate(bad_rows(good[0]) * 3)]
    duplicates = [("duplicate_id", dict(good[index]), "duplicate id") for index in (5, 77, 200)]
    lines = [("", row, "") for row in good] + bad
    random.Random(0).shuffle(lines)
    # Duplicates come after their originals: the first row with an id stays.
    lines += duplicates
    report, rows = build(tmp_path, [line for _, line, _ in lines], synthetic.video_root)
    expected = Counter(reason for reason, _, _ in bad + duplicates)
    assert report["excluded_rows"] == dict(expected)
    assert sorted(row["id"] for row in rows) == sorted(row["id"] for row in good)
    assert report["kept_rows"] == {"train": len(good), "validation": 0}
    words = {reason: {word for kind, _, word in bad + duplicates if kind == reason} for reason in expected}
    for reason, examples in report["examples"].items():
        assert all(any(word in example["detail"] for word in words[reason]) for example in examples), reason


def test_grouped_config_survives_the_same_rows(tmp_path, synthetic):
    good = synthetic.rows[:20]
    bad = [unique(case, number) for number, case in enumerate(bad_rows(good[0]))]
    report, rows = build(tmp_path, [*good[:10], *[line for _, line, _ in bad], *good[10:]], synthetic.video_root,
                         config="grouped")  # fmt: skip
    assert sum(report["excluded_rows"].values()) == len(bad)
    assert sorted(pair["id"] for row in rows for pair in row["qa"]) == sorted(row["id"] for row in good)


def test_strict_mode_names_every_reason(tmp_path, synthetic):
    bad = [unique(case, number) for number, case in enumerate(bad_rows(synthetic.rows[0]))]
    with pytest.raises(ValueError) as error:
        build(tmp_path, [synthetic.rows[0], *[line for _, line, _ in bad]], synthetic.video_root, strict=True)
    for reason in {reason for reason, _, _ in bad}:
        assert reason in str(error.value)


# -----------------------------------------------------------------------------------------------------------------
# Probe: the end of every video is decoded
# -----------------------------------------------------------------------------------------------------------------
def index_in_front(source: str, target: str) -> str:
    """The mp4 remuxed with its index (moov) before the data, as web videos are: a truncated copy still opens."""
    with av.open(source) as inp, av.open(target, "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


def cut(path: str, fraction: float = 0.5) -> str:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return path


def claim_ten_hours(path: str) -> str:
    """Rewrite a Matroska file's segment duration (element 0x4489, float milliseconds) to 36,000 s."""
    data = bytearray(Path(path).read_bytes())
    at = data.find(b"\x44\x89")
    size = data[at + 2] & 0x7F
    data[at + 3 : at + 3 + size] = struct.pack(">d" if size == 8 else ">f", 36_000_000.0)
    Path(path).write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def broken_videos(synthetic, tmp_path_factory):
    """The synthetic videos plus broken ones in the same source folder: {name: expected reason}."""
    root = tmp_path_factory.mktemp("probe") / "videos"
    shutil.copytree(synthetic.video_root, root)
    folder = root / SPEC.source
    size = dict(width=48, height=32, fps=10, gop=10)
    cut(index_in_front(write_video(folder / "plain.mp4", 100, **size), str(folder / "cut_front_index.mp4")))
    cut(write_video(folder / "cut.mkv", 100, **size))
    cut(write_video(folder / "cut.webm", 100, codec="libvpx-vp9", **size))
    claim_ten_hours(write_video(folder / "ten_hours.mkv", 100, **size))
    write_video(folder / "whole.mkv", 100, **size)
    write_video(folder / "whole.ts", 100, **size)
    (folder / "header_only.mp4").write_bytes((folder / "plain.mp4").read_bytes()[:200])
    os.mkfifo(folder / "fifo.mp4")
    expected = {
        "cut_front_index.mp4": "truncated_media",
        "cut.mkv": "truncated_media",
        "cut.webm": "truncated_media",
        "ten_hours.mkv": "truncated_media",
        "header_only.mp4": "unreadable_media",
        "fifo.mp4": "unreadable_media",
        "whole.mkv": None,
        "whole.ts": None,
        "plain.mp4": None,
    }
    return str(root), expected


def test_probe_excludes_truncated_videos_and_measures_durations(tmp_path, synthetic, broken_videos):
    root, expected = broken_videos
    template = {key: value for key, value in synthetic.rows[0].items() if key != "duration"}
    rows = [{**template, "id": name, "video": name} for name in expected]
    rows += [{**row, "duration": None} for row in synthetic.rows[:4]]
    report, kept = build(tmp_path, rows, root, check_videos="probe")
    reasons = Counter(reason for reason in expected.values() if reason)
    assert report["excluded_rows"] == dict(reasons) and report["excluded_media"] == dict(reasons)
    details = {example["media"].split("/")[-1]: example["detail"] for e in report["examples"].values() for example in e}
    assert "frames end at" in details["cut.mkv"] and "claims 35999.90 s" in details["ten_hours.mkv"]
    assert "not a regular file" in details["fifo.mp4"]
    durations = {row["id"]: row["duration"] for row in kept}
    assert durations["whole.mkv"] == durations["whole.ts"] == durations["plain.mp4"] == 10.0
    for row in synthetic.rows[:4]:  # decoded durations equal the synthetic videos' lengths
        assert durations[row["id"]] == row["duration"]
    assert report["statistics"]["all"]["hours"] < 1


def test_check_media_reports_a_folder_and_a_permission_problem(tmp_path):
    """Own case: the reasons name the real cause (a folder is not a file; an unreadable file says so)."""
    assert check_media(str(tmp_path), "exists")[:2] == ("unreadable_media", f"{tmp_path}: not a regular file")
    locked = write_video(tmp_path / "locked.mp4", 10, width=32, height=32)
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        assert check_media(locked, "probe")[:2] == ("unreadable_media", f"{locked}: permission denied")
    finally:
        os.chmod(locked, 0o644)


# -----------------------------------------------------------------------------------------------------------------
# LlavaJson: the same rules
# -----------------------------------------------------------------------------------------------------------------
def test_llava_json_excludes_bad_items_by_reason(tmp_path, synthetic):
    video = synthetic.timelines[0].video
    turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Shapes."}]
    good = {"id": "ok", "video": video, "data_source": SPEC.source, "conversations": turns}
    cases = [
        ("not_an_object", None),
        ("not_an_object", 42),
        ("invalid_annotation", {**good, "conversations": "What? Shapes."}),
        ("invalid_annotation", {**good, "conversations": [turns[0], None]}),
        ("invalid_annotation", {**good, "conversations": [turns[0], {"from": "gpt", "value": {"a": 1}}]}),
        ("invalid_annotation", {**good, "conversations": [turns[0], {"from": "robot", "value": "x"}]}),
        ("invalid_annotation", {"id": "imgdict", "image": {"path": "x.png"}, "conversations": turns}),
        ("empty_text", {**good, "conversations": [turns[0], {"from": "gpt", "value": ""}]}),
        ("empty_text", {**good, "conversations": [{"from": "human", "value": "  "}, turns[1]], "video": None}),
        ("invalid_path", {**good, "video": "x\x00.mp4"}),
        ("invalid_path", {"id": "img", "image": ["ok.png", 7], "conversations": turns}),
        ("path_escapes_root", {**good, "video": "../../x.mp4"}),
    ]
    path = tmp_path / "items.jsonl"
    lines = [json.dumps(line) for line in [good, *[item for _, item in cases]]]
    lines.insert(3, '{"id": "broken", ')
    path.write_text("\n".join(lines) + "\n")
    builder = LlavaJson(config_name="llava_video_178k", annotations=str(path), media_root=synthetic.video_root,
                        cache_dir=str(tmp_path / "cache"), modality=None)  # fmt: skip
    builder.download_and_prepare()
    report = json.loads(Path(builder.report_path).read_text())
    expected = Counter(reason for reason, _ in cases) + Counter({"invalid_json": 1})
    assert report["excluded_rows"] == dict(expected)
    assert builder.as_dataset("train")["id"] == ["ok"]


def test_an_unreadable_annotation_file_is_one_error_naming_it(tmp_path, synthetic):
    """Own case: a damaged Parquet file or a .json that is not JSON is a file-level error that names the file
    (not pyarrow's or json's own exception)."""
    for name, data in (("rows.parquet", b"PAR1 not really parquet"), ("rows.json", b'[{"id": 1},')):
        path = tmp_path / name
        path.write_bytes(data)
        builder = VideoMarathon(config_name="qa", annotations=str(path), video_root=synthetic.video_root,
                                cache_dir=str(tmp_path / "cache"))  # fmt: skip
        with pytest.raises(ValueError, match=rf"{path}: not a (readable Parquet|valid JSON) file"):
            builder.download_and_prepare()
