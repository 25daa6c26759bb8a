"""The errors Hour-LLaVA raises for inputs it cannot use: one family, whichever way the code was loaded.

    HourLlavaError (ValueError)        every input Hour-LLaVA refuses
    ├── VideoDecodeError               a video or feature file that cannot be used: `.path`, `.reason`
    └── HourLlavaInputError            inputs or options that do not fit (dtypes, shapes, counts, option values)

A checkpoint loaded with `trust_remote_code=True` runs its own copy of this file (under `transformers_modules.`),
and so does the installed package; CPython's `except` matches classes by identity (its subclass check does not call
`__subclasscheck__`), so two copies would define two unrelated `VideoDecodeError`s. Every copy therefore registers
its classes once in the stable module `hour_llava_errors` in `sys.modules` and later copies reuse them: the error a
remote-code processor raises is caught by `except modeling_hour_llava.VideoDecodeError`, by
`except processor.VideoDecodeError` and by `except ValueError`. The classes also pickle by that stable name, so they
cross DataLoader worker processes whole.
"""

import os
import sys
import types

REGISTRY = "hour_llava_errors"


def _registry() -> types.ModuleType:
    """The module in `sys.modules` that holds the one copy of each error class (created by the first copy)."""
    module = sys.modules.get(REGISTRY)
    if module is None:
        module = types.ModuleType(REGISTRY, "Hour-LLaVA's error classes, shared by every copy of its code.")
        sys.modules[REGISTRY] = module
    return module


def _shared(cls: type) -> type:
    """Register `cls` under its name unless a copy already did; return the registered class."""
    registry = _registry()
    if not hasattr(registry, cls.__name__):
        cls.__module__ = REGISTRY
        setattr(registry, cls.__name__, cls)
    return getattr(registry, cls.__name__)


if not hasattr(_registry(), "HourLlavaError"):

    class HourLlavaError(ValueError):
        """Base of every error Hour-LLaVA raises for input it cannot use (a `ValueError`)."""

    _shared(HourLlavaError)
HourLlavaError = _registry().HourLlavaError

if not hasattr(_registry(), "VideoDecodeError"):

    class VideoDecodeError(HourLlavaError):
        """A video (or feature file) that cannot be used: `path` names the file, `reason` says why."""

        def __init__(self, path: str | os.PathLike, reason: str):
            self.path, self.reason = os.fspath(path), reason
            super().__init__(f"{self.path}: {reason}")

        def __reduce__(self):
            return type(self), (self.path, self.reason)

    _shared(VideoDecodeError)
VideoDecodeError = _registry().VideoDecodeError

if not hasattr(_registry(), "HourLlavaInputError"):

    class HourLlavaInputError(HourLlavaError):
        """Inputs or options that do not fit (dtypes, value ranges, shapes, counts, option values); the message names
        the field or file and what was expected."""

    _shared(HourLlavaInputError)
HourLlavaInputError = _registry().HourLlavaInputError


class HourLlavaErrors:
    """Mixin that exposes the family as class attributes (`processor.VideoDecodeError`, `model.HourLlavaError`), so
    code that only holds a loaded object can catch its errors without importing anything."""

    HourLlavaError = HourLlavaError
    VideoDecodeError = VideoDecodeError
    HourLlavaInputError = HourLlavaInputError


__all__ = ["HourLlavaError", "HourLlavaErrors", "HourLlavaInputError", "VideoDecodeError"]
