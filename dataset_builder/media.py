"""Media paths and checks shared by the dataset builders: paths that may not leave their root, videos that must
exist and open, the report of what was excluded and why, and atomic JSON writes.

Every builder resolves a path from an annotation with `resolve_under_root`, checks the file with `check_media`,
and records each exclusion in an `ExclusionReport`; `ExclusionReport.write` puts it on disk atomically and
`raise_if_strict` turns it into one error that names the reasons, counts and first examples.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# How thoroughly a builder checks media files: "none" trusts the annotations, "exists" stats the file, "probe"
# also opens the container and reads the stream header (duration, frame count), which catches unreadable files.
CHECK_MODES = ("none", "exists", "probe")
# Exclusion reasons, stable strings: reports and tests compare against them.
MISSING = "missing_media"
UNREADABLE = "unreadable_media"
ESCAPES_ROOT = "path_escapes_root"
UNKNOWN_SOURCE = "unknown_source"
INVALID_FIELD = "invalid_annotation"
EXAMPLES_PER_REASON = 20


class MediaPathError(ValueError):
    """A path from an annotation that is absolute or points outside its root."""


def resolve_under_root(root: str | os.PathLike, relative: str, what: str = "path") -> str:
    """`root/relative` as an absolute path, refusing absolute paths and paths that leave `root` (`..`, symlinks).

    Raises MediaPathError naming the path and the root, so a bad annotation is found by its value.
    """
    if not relative or os.path.isabs(relative) or relative.startswith(("~", "\\")):
        raise MediaPathError(f"{what} {relative!r} must be a non-empty path relative to {os.fspath(root)!r}")
    real_root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, resolved]) != real_root:
        raise MediaPathError(f"{what} {relative!r} escapes its root {os.fspath(root)!r} (resolves to {resolved!r})")
    return resolved


def check_media(path: str, mode: str = "exists") -> tuple[str | None, str, float | None]:
    """Check a media file: (exclusion reason or None, human-readable detail, duration in seconds if probed)."""
    if mode not in CHECK_MODES:
        raise ValueError(f"check mode {mode!r}; expected one of {CHECK_MODES}")
    if mode == "none":
        return None, "", None
    if not os.path.isfile(path):
        return MISSING, f"{path}: no such file", None
    if os.path.getsize(path) == 0:
        return UNREADABLE, f"{path}: empty file", None
    if mode == "exists":
        return None, "", None
    from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError, probe_video  # imports transformers

    try:
        info = probe_video(path)
    except VideoDecodeError as error:
        return UNREADABLE, str(error), None
    return None, "", info.duration or None


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
