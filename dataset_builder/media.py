"""Rows, media paths and checks shared by the dataset builders: the value rules every annotation row must meet,
paths that may not leave their root, videos that must exist and decode to their end, the report of what was
excluded and why, and atomic JSON writes.

Every builder validates a row's fields with the `*_field` functions (a `RowError` carries the report reason),
resolves a path from an annotation with `resolve_under_root`, checks the file with `check_media`, and records each
exclusion in an `ExclusionReport`; `ExclusionReport.write` puts it on disk atomically and `raise_if_strict` turns
it into one error that names the reasons, counts and first examples. One bad row never stops a build.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# How thoroughly a builder checks media files: "none" trusts the annotations, "exists" stats the file, "probe"
# also opens the container, reads the stream header and decodes the video's last seconds, which catches unreadable
# and truncated files and measures the duration from what decodes.
CHECK_MODES = ("none", "exists", "probe")
# Exclusion reasons, stable strings: reports and tests compare against them.
MISSING = "missing_media"
UNREADABLE = "unreadable_media"
TRUNCATED = "truncated_media"
ESCAPES_ROOT = "path_escapes_root"
UNKNOWN_SOURCE = "unknown_source"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
INVALID_FIELD = "invalid_annotation"
EMPTY_TEXT = "empty_text"
INVALID_DURATION = "invalid_duration"
INVALID_PATH = "invalid_path"
DUPLICATE_ID = "duplicate_id"
EXAMPLES_PER_REASON = 20
# The probe decodes from this many seconds before the claimed end (then from further back, then the whole stream).
END_WINDOWS_SECONDS = (10.0, 60.0)
# The rate the probe checks coverage at: the loader's (`video_loading_hour_llava.truncation_slack` gives the slack).
PROBE_SAMPLE_FPS = 1.0


class RowError(ValueError):
    """An annotation row that cannot be used; `reason` is the report's key for it, the message names the field."""

    reason = INVALID_FIELD

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MediaPathError(RowError):
    """A path from an annotation that is absolute or points outside its root (reason `path_escapes_root`), or is
    not a usable path at all (`invalid_path`: empty, not text, a NUL byte)."""

    reason = ESCAPES_ROOT


# ---------------------------------------------------------------------------------------------------------------
# Row values
# ---------------------------------------------------------------------------------------------------------------
def shown(value) -> str:
    """A value as JSON, cut to 80 characters, for messages."""
    return json.dumps(value, default=str)[:80]


def object_item(item) -> dict:
    """An annotation item must be a JSON object (`null`, `42`, a string or a list are not rows)."""
    if not isinstance(item, dict):
        raise RowError(f"expected a JSON object, got {shown(item)}", NOT_AN_OBJECT)
    return item


def text_field(value, name: str, required: bool = True) -> str:
    """A text value, stripped: a string, or an integer (`"answer": 3`); dicts, lists, booleans and floats are
    refused rather than turned into strings. Missing or empty text is `empty_text` when `required`."""
    if value is None:
        if required:
            raise RowError(f"{name} is missing", EMPTY_TEXT)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError(f"{name} must be text, got {type(value).__name__} {shown(value)}")
    text = str(value).strip()
    if required and not text:
        raise RowError(f"{name} is empty", EMPTY_TEXT)
    return text


def id_field(value, default: int | str) -> str:
    """A row id: a non-empty string or an integer; absent means `default` (the item's position)."""
    if value is None:
        return str(default)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise RowError(f"id must be a non-empty string or integer, got {shown(value)}")
    return str(value)


def duration_field(value, name: str = "duration") -> float | None:
    """Seconds of video: a finite positive number, or None when absent (the probe can measure it). Booleans, text,
    NaN, infinities, zero and negative values are `invalid_duration`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(f"{name} must be a number of seconds, got {shown(value)}", INVALID_DURATION)
    if not math.isfinite(value) or value <= 0:
        raise RowError(f"{name} must be finite and positive, got {value!r}", INVALID_DURATION)
    return float(value)


def options_field(value, name: str = "options") -> list[str]:
    """Multiple-choice options: a list of non-empty texts; None is no options. A single string such as `"A. red"`
    is refused (it is not a list, and would split into characters), as are dicts."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{name} must be a list of texts, got {type(value).__name__} {shown(value)}")
    return [text_field(option, f"{name}[{index}]") for index, option in enumerate(value)]


def path_field(value, name: str) -> str:
    """A media path as given by an annotation: non-empty text without NUL bytes (`invalid_path` otherwise)."""
    if not isinstance(value, str) or not value.strip():
        raise MediaPathError(f"{name} must be a non-empty path, got {shown(value)}", INVALID_PATH)
    if "\0" in value:
        raise MediaPathError(f"{name} {value!r} contains a NUL byte", INVALID_PATH)
    return value


def resolve_under_root(root: str | os.PathLike, relative: str, what: str = "path") -> str:
    """`root/relative` as an absolute path, refusing absolute paths and paths that leave `root` (`..`, symlinks).

    Raises MediaPathError naming the path and the root, so a bad annotation is found by its value.
    """
    relative = path_field(relative, what)
    if os.path.isabs(relative) or relative.startswith(("~", "\\")):
        raise MediaPathError(f"{what} {relative!r} must be a non-empty path relative to {os.fspath(root)!r}")
    real_root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, resolved]) != real_root:
        raise MediaPathError(f"{what} {relative!r} escapes its root {os.fspath(root)!r} (resolves to {resolved!r})")
    return resolved


def check_media(path: str, mode: str = "exists") -> tuple[str | None, str, float | None]:
    """Check a media file: (exclusion reason or None, human-readable detail, duration in seconds if probed).

    "exists": a regular, readable, non-empty file. "probe": also a video the package's loader opens
    (`probe_video`) whose frames decode up to its last planned frame (`decoded_end`); the duration is then the
    decoded one, never the header's."""
    if mode not in CHECK_MODES:
        raise ValueError(f"check mode {mode!r}; expected one of {CHECK_MODES}")
    if mode == "none":
        return None, "", None
    problem = file_problem(path)
    if problem is not None:
        return problem
    if mode == "exists":
        return None, "", None
    from modeling_hour_llava.video_loading_hour_llava import (  # imports transformers
        VideoDecodeError,
        probe_video,
        truncation_slack,
    )

    try:
        info = probe_video(path)
        last = decoded_end(path, info)
    except VideoDecodeError as error:
        return UNREADABLE, str(error), None
    except Exception as error:  # noqa: BLE001 - one odd file must not stop a build of thousands; it is reported
        return UNREADABLE, f"{path}: {type(error).__name__}: {error}", None
    claimed = (info.num_frames - 1) / info.fps  # the loader's last planned frame
    if last is None:
        return UNREADABLE, f"{path}: no frame decodes", None
    if claimed - last > truncation_slack(info.fps, PROBE_SAMPLE_FPS):
        return TRUNCATED, f"{path}: truncated: frames end at {last:.2f} s, the container claims {claimed:.2f} s", None
    return None, "", last + 1.0 / info.fps


def file_problem(path: str) -> tuple[str, str, None] | None:
    """(reason, detail, None) for a path that is not a regular, readable, non-empty file; None for one that is."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return MISSING, f"{path}: no such file", None
    except OSError as error:  # permission denied on a folder, a symlink loop, a name too long
        return UNREADABLE, f"{path}: {error.strerror or error}", None
    if not stat.S_ISREG(info.st_mode):
        return UNREADABLE, f"{path}: not a regular file", None
    if info.st_size == 0:
        return UNREADABLE, f"{path}: empty file", None
    if not os.access(path, os.R_OK):
        return UNREADABLE, f"{path}: permission denied", None
    return None


def decoded_end(path: str, info) -> float | None:
    """When the last decodable frame of `path`'s first video stream is shown, in seconds from the stream's start
    (`info` from `probe_video`); None if no frame decodes.

    The package's loader has no primitive for "the last frames", so this decodes with PyAV (as the loader does)
    from the keyframe before `claimed end - w` for each w of `END_WINDOWS_SECONDS` until some frame decodes (a
    truncated file has no data there; an MPEG-TS seek may land after its last keyframe), and as a last resort
    reads the whole stream. Frames are decoded, never converted."""
    import av

    claimed = (info.num_frames - 1) / info.fps
    for window in (*END_WINDOWS_SECONDS, None):
        start = None if window is None or claimed <= window else claimed - window
        last = _last_frame_time(av, path, info, start)
        if last is not None or start is None:
            return last
    return None


def _last_frame_time(av, path: str, info, start: float | None) -> float | None:
    """The latest frame time (stream seconds from its start) decoded from `start` (None: the beginning) to the end
    of the file; a damaged tail ends the decoding, keeping what came before."""
    last = None
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        try:
            if start is not None:
                target = int((start + info.start_time) / stream.time_base)
                container.seek(max(0, target), stream=stream, backward=True, any_frame=False)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.time is not None:
                        time = float(frame.time) - info.start_time
                        last = time if last is None else max(last, time)
        except av.FFmpegError:
            pass  # the frames decoded before the damage are what the file holds
    return last


@dataclass
class ExclusionReport:
    """Counts of excluded rows and media by reason, with examples; what a builder writes next to its output."""

    name: str
    rows: Counter = field(default_factory=Counter)
    media: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    statistics: dict = field(default_factory=dict)

    def exclude_media(self, reason: str, media: str, detail: str, num_rows: int) -> None:
        """Record one media file (and the `num_rows` annotation rows that use it) as excluded."""
        self.media[reason] += 1
        self.rows[reason] += num_rows
        self._example(reason, {"media": media, "rows": num_rows, "detail": detail})

    def exclude_row(self, reason: str, row_id: str, detail: str) -> None:
        """Record one annotation row as excluded for a reason of its own (a bad field, a bad path)."""
        self.rows[reason] += 1
        self._example(reason, {"id": row_id, "detail": detail})

    def _example(self, reason: str, example: dict) -> None:
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(example)

    @property
    def num_excluded_rows(self) -> int:
        return sum(self.rows.values())

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "excluded_rows": dict(sorted(self.rows.items())),
            "excluded_media": dict(sorted(self.media.items())),
            "examples": self.examples,
            "kept_rows": self.kept,
            "statistics": self.statistics,
        }

    def write(self, path: str | os.PathLike) -> str:
        """Write the report as JSON, atomically; returns the path."""
        write_json_atomically(path, self.as_dict())
        return os.fspath(path)

    def raise_if_strict(self, strict: bool, report_path: str | None) -> None:
        """With `strict`, any exclusion is an error that lists the reasons, counts and first examples."""
        if not strict or not self.num_excluded_rows:
            return
        lines = [f"{self.name}: {self.num_excluded_rows} annotation rows would be excluded (strict=True):"]
        for reason, count in sorted(self.rows.items()):
            first = self.examples.get(reason, [{}])[0]
            lines.append(f"  {reason}: {count} rows, e.g. {first}")
        if report_path:
            lines.append(f"Full report: {report_path}. Fix the annotations or media, or build with strict=False.")
        raise ValueError("\n".join(lines))


def files_fingerprint(paths) -> str:
    """sha256 of each file's path, size and modification time: part of a builder's cache key, so editing an
    annotation file builds anew instead of reusing the cached Arrow files (videos are not covered: after changing
    videos, build with `download_mode="force_redownload"`)."""
    if not paths:
        return ""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path) if os.path.exists(path) else None
        digest.update(
            f"{os.path.abspath(path)}\0{stat.st_size if stat else -1}\0{stat.st_mtime_ns if stat else -1}\n".encode()
        )
    return digest.hexdigest()


def write_jsonl_atomically(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write one JSON object per line to a temporary file in the same folder, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomically(path: str | os.PathLike, data) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over `path` (readers never see half)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=2, sort_keys=False)
            file.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; reports are for everyone
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
