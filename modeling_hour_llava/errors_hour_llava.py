"""The errors Hour-LLaVA raises for inputs it cannot use: every one is a `ValueError` that names the file or
field and the reason."""

import os


class VideoDecodeError(ValueError):
    """A video that cannot be used: `path` names the file, `reason` says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{self.path}: {reason}")


class HourLlavaInputError(ValueError):
    """Inputs that do not fit together (placeholder counts, videos per sample, shapes)."""


__all__ = ["HourLlavaInputError", "VideoDecodeError"]
