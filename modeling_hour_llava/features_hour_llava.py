"""Memory-repository files: pre-extracted SigLIP features of one video, read instead of decoding it.

One `.safetensors` file per video holds the tensor `features` (T, P, C): T frames at 1 fps, P pooled tokens per
frame (the memory grid, 8 x 8 = 64 in the paper), C the tower's width; metadata `format`, `duration` (seconds) and
`features_sha256` (the sha256 of the tensor's bytes as stored), plus what the writer adds (the extractor records
its video and fingerprint). Files are written byte for byte the same for the same inputs (the header's keys are
sorted), atomically, and never with NaN or infinite values. Readers verify the checksum when the file has one
(files written before it existed are read as they are) and refuse non-finite values. Files are read with Python's
own `open` (safetensors' reader refuses file names that are not UTF-8); the format is plain safetensors.
`dataset_builder.extract_features` writes them, the video processor, training and the lmms-eval model read them.
"""

import hashlib
import json
import os
import struct

import numpy as np
import torch

from .errors_hour_llava import VideoDecodeError

FEATURE_FILE_FORMAT = "hour_llava_features/1"
FEATURE_SUFFIXES = (".safetensors",)
CHECKSUM_KEY = "features_sha256"
# torch dtype -> safetensors' name for it (the floating dtypes a tower's features come in).
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
HEADER_ALIGNMENT = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes
HEADER_LENGTH_BYTES = 8  # the little-endian u64 before the header
NON_FINITE_FEATURES_REASON = "the features hold NaN or infinite values"  # how readers refuse such a file


def features_checksum(features: torch.Tensor) -> str:
    """sha256 (hex) of the tensor's bytes in row-major order, as a feature file stores them."""
    data = features.detach().cpu().contiguous().view(torch.uint8).reshape(-1)
    return hashlib.sha256(memoryview(data.numpy())).hexdigest()


def all_finite(features: torch.Tensor) -> bool:
    """True when no value is NaN or infinite: one float64 sum (finite float32/16 values cannot overflow it; NaN
    and infinities survive it), confirmed element-wise only when the sum is not finite."""
    return bool(torch.isfinite(features.sum(dtype=torch.float64))) or bool(torch.isfinite(features).all())


def metadata_text(value) -> str:
    """A metadata value as valid UTF-8 text: file names that are not UTF-8 (Python's surrogate escapes) keep their
    bytes as `\\xNN` escapes, so every name can be recorded and compared."""
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _only_escapes(text) else text.encode("utf-8", "replace")
        return raw.decode("utf-8", "backslashreplace")


def _only_escapes(text: str) -> bool:
    """True when every surrogate in `text` is one of `os.fsdecode`'s escapes (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(char) <= 0xDFFF or 0xDC80 <= ord(char) <= 0xDCFF for char in text)


def read_feature_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The safetensors JSON header of a file and the file size it implies (ValueError for a file that is not a
    safetensors file). Read with Python's `open`, so any file name works (safetensors refuses non-UTF-8 paths)."""
    with open(path, "rb") as handle:
        prefix = handle.read(HEADER_LENGTH_BYTES)
        if len(prefix) < HEADER_LENGTH_BYTES:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > os.fstat(handle.fileno()).st_size - HEADER_LENGTH_BYTES:
            raise ValueError(f"header length {length} exceeds the file size")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return header, HEADER_LENGTH_BYTES + length + max(ends, default=0)


def _read_features(path: str) -> tuple[dict, torch.Tensor]:
    """(metadata, the `features` tensor) of a feature file; VideoDecodeError naming what is wrong."""
    try:
        header, size = read_feature_header(path)
        metadata, entry = header.get("__metadata__") or {}, header.get("features")
        if metadata.get("format") != FEATURE_FILE_FORMAT or not isinstance(entry, dict):
            raise VideoDecodeError(
                path, f"not an Hour-LLaVA feature file (format {metadata.get('format')!r}, want a 'features' tensor)"
            )
        dtype = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}.get(entry["dtype"])
        shape, (start, end) = [int(n) for n in entry["shape"]], entry["data_offsets"]
    except VideoDecodeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise VideoDecodeError(path, f"unreadable feature file ({error})") from error
    if dtype is None:
        raise VideoDecodeError(path, f"feature tensor has dtype {entry['dtype']!r}; expected a floating dtype")
    if len(shape) != 3 or shape[0] == 0:
        raise VideoDecodeError(path, f"feature tensor has shape {tuple(shape)}; expected (T > 0, P, C)")
    actual = os.path.getsize(path)
    if actual != size or end - start != int(np.prod(shape)) * dtype.itemsize:
        raise VideoDecodeError(path, f"truncated or padded feature file: {actual} bytes, its header says {size}")
    data = bytearray(end - start)
    with open(path, "rb") as handle:
        handle.seek(size - (end - start))
        handle.readinto(data)
    return metadata, torch.frombuffer(data, dtype=dtype).reshape(shape)


def load_feature_file(path: str | os.PathLike, verify: bool = True) -> tuple[torch.Tensor, float]:
    """A memory-repository file: tensor `features` (T, P, C) and metadata `duration` (seconds) and `format`.

    verify: check the tensor against the file's `features_sha256` (when it has one). Any problem (missing, not our
    format, damaged, modified after writing, NaN or infinite values) is a `VideoDecodeError` naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoDecodeError(path, "feature file not found")
    metadata, features = _read_features(path)
    recorded = metadata.get(CHECKSUM_KEY)
    if verify and recorded is not None and features_checksum(features) != recorded:
        raise VideoDecodeError(
            path, "content checksum mismatch: the features were changed or damaged after writing; recompute the file"
        )
    if not all_finite(features):
        raise VideoDecodeError(path, f"{NON_FINITE_FEATURES_REASON}; recompute the file")
    try:
        duration = float(metadata.get("duration", features.shape[0]))
    except ValueError as error:
        raise VideoDecodeError(path, f"metadata duration {metadata.get('duration')!r} is not a number") from error
    if not 0 <= duration < float("inf"):
        raise VideoDecodeError(path, f"metadata duration {duration!r} is not a finite number of seconds")
    return features, duration


def feature_file_header(features: torch.Tensor, duration: float, metadata: dict) -> bytes:
    """The safetensors header (length prefix and padded JSON) of a feature file, keys sorted: the same inputs give
    the same bytes in every process."""
    info = {k: metadata_text(v) for k, v in metadata.items()}
    info.update(format=FEATURE_FILE_FORMAT, duration=f"{duration:.6f}", **{CHECKSUM_KEY: features_checksum(features)})
    size = features.numel() * features.element_size()
    header = {
        "__metadata__": dict(sorted(info.items())),
        "features": {"dtype": SAFETENSORS_DTYPES[features.dtype], "shape": list(features.shape),
                     "data_offsets": [0, size]},
    }  # fmt: skip
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text


def save_feature_file(path: str | os.PathLike, features: torch.Tensor, duration: float, **metadata: str) -> None:
    """Write a memory-repository file atomically (temporary file in the same folder, then rename).

    features: (T > 0, P, C) floating point, all finite (anything else is a ValueError: such a file is never
    written). metadata: extra text values (the extractor's video and fingerprint)."""
    if not isinstance(features, torch.Tensor) or features.dim() != 3 or features.shape[0] == 0:
        raise ValueError(f"features must be a (T > 0, P, C) tensor, got {getattr(features, 'shape', type(features))}")
    if features.dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"features have dtype {features.dtype}; expected one of {list(SAFETENSORS_DTYPES)}")
    if not all_finite(features):
        raise ValueError(f"{os.fspath(path)}: the features hold NaN or infinite values; refusing to write them")
    if isinstance(duration, bool) or not (isinstance(duration, (int, float)) and 0 < duration < float("inf")):
        raise ValueError(f"duration must be a finite positive number of seconds, got {duration!r}")
    path = os.fspath(path)
    features = features.detach().cpu().contiguous()
    header = feature_file_header(features, duration, metadata)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(header)
            handle.write(memoryview(features.view(torch.uint8).reshape(-1).numpy()))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sample_feature_frames(num_stored: int, duration: float) -> np.ndarray:
    """The reference keeps `min(T_stored, int(duration))` stored frames, spread evenly (all of them if the duration
    rounds to zero, where the reference crashed)."""
    keep = min(num_stored, int(duration)) or num_stored
    return np.linspace(0, num_stored - 1, keep, dtype=np.int64)


__all__ = [
    "CHECKSUM_KEY",
    "all_finite",
    "FEATURE_FILE_FORMAT",
    "NON_FINITE_FEATURES_REASON",
    "FEATURE_SUFFIXES",
    "features_checksum",
    "load_feature_file",
    "metadata_text",
    "read_feature_header",
    "sample_feature_frames",
    "save_feature_file",
]
