"""The memory-repository cache: SigLIP features of every video at 1 fps, pooled to the memory grid, one file per video.

    accelerate launch --num_processes 8 -m dataset_builder.extract_features \\
        --model work_dirs/stage2 --video-root data/VideoMarathon/videos --output-dir data/VideoMarathon/features

Each process takes every `num_processes`-th video of the sorted list (accelerate's `PartialState`), decodes it with
`HourLlavaVideoProcessor` (1 fps, at least `min_frames`, the reference's sampling), runs the vision tower
`--chunk-size` frames at a time, pools every frame to `memory_pool_size`^2 tokens and writes
`<output-dir>/<video path>.safetensors` with `save_feature_file` (atomic: a temporary file, then a rename). The
processor reads these files back as `video_features`, so training and evaluation skip decoding and the tower.

Every file records the extractor fingerprint: a hash of the tower's weights, of the configuration that shapes the
features (vision config, feature layer, pooling, normalisation, sampling, size, dtype) and the model revision. A
rerun skips files that are complete and carry the current fingerprint (so a killed run resumes where it stopped),
recomputes truncated or unreadable files, and for files of another fingerprint either refuses (`--on-stale refuse`,
the default: they may be expensive features of another model) or recomputes them (`--on-stale recompute`).
Every file also records its video's size and modification time: a video replaced under the same name (a rewritten
or re-downloaded file) has its features recomputed, not reused (`--video-changes ignore` trusts the files instead,
e.g. after copying videos without their times). Files written before this check existed are trusted.
Before a file is reused its content is verified too: the tensor must match the sha256 its file records
(`features_sha256`), hold only finite values and come from the same video (`source_video`): a file changed without
changing its size (flipped bytes, zeroed or NaN data, another video's file copied over it) is recomputed.
Identical inputs give byte-identical files.

Any file name works (names that are not UTF-8 are recorded with `\\xNN` escapes). Every video, from the scan or
from `--video-list`, must lie inside `--video-root` once symlinks are resolved: entries that are absolute, climb
out with `..` or link outside are skipped and counted (`path_escapes_root`, listed under `refused`), never read.
Videos that differ only in their suffix (`clip.mp4`, `clip.mkv`) would share one feature file: all of them are
refused and counted the same way (`ambiguous_feature_name`); the run goes on with the others.
Videos that cannot be decoded, or whose features come out NaN or infinite, are skipped and counted by reason. The
run ends with `extraction_report.json` (atomic) in the output folder (created if missing): per-process counts,
failures, videos/s and seconds of video per second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modeling_hour_llava.features_hour_llava import all_finite, metadata_text, read_feature_header, save_feature_file

from .media import MediaPathError, resolve_under_root, write_json_atomically

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
FEATURE_SUFFIX = ".safetensors"
EXTRACTOR = "dataset_builder.extract_features/1"
REPORT_NAME = "extraction_report.json"
PARTIAL_REPORTS = ".extraction_reports"
STALE_POLICIES = ("refuse", "recompute")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Config fields of the model that change the stored features (besides the vision config itself).
FEATURE_CONFIG_FIELDS = (
    "vision_feature_layer",
    "memory_pool_size",
    "memory_pool_mode",
    "vision_rescale_factor",
    "vision_image_mean",
    "vision_image_std",
)
VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")
VALID, MISSING, STALE, INVALID, CHANGED = "valid", "missing", "stale", "invalid", "changed"
AMBIGUOUS_FEATURE_NAME = "ambiguous_feature_name"  # two videos, one feature file: `clip.mp4` and `clip.mkv`


class StaleFeaturesError(RuntimeError):
    """Feature files from another model or configuration, with `--on-stale refuse`."""


@dataclass
class Fingerprint:
    """What a feature file must record to be reused: the weights' and the configuration's hashes."""

    model_revision: str
    config_hash: str
    weights_sha256: str

    @property
    def value(self) -> str:
        return hashlib.sha256(f"{self.config_hash}\0{self.weights_sha256}".encode()).hexdigest()

    def metadata(self) -> dict[str, str]:
        return {
            "extractor": EXTRACTOR,
            "fingerprint": self.value,
            "model_revision": self.model_revision,
            "config_hash": self.config_hash,
            "weights_sha256": self.weights_sha256,
        }


@dataclass
class Tally:
    """One process's counts, failures and throughput."""

    counts: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    video_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
            "video_seconds": round(self.video_seconds, 3),
        }


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def list_videos(video_root: str, video_list: str | None = None) -> list[str]:
    """Video paths relative to `video_root`, sorted: from `video_list` (one per line, any bytes but newline) or a
    recursive scan. Names that are not UTF-8 come as `os.fsdecode` gives them. `confine_videos` checks them."""
    if video_list:
        with open(video_list, "rb") as handle:
            videos = [os.fsdecode(line.strip()) for line in handle if line.strip()]
    else:
        videos = [
            os.path.relpath(os.path.join(folder, name), video_root)
            for folder, _, names in os.walk(video_root)
            for name in names
            if name.lower().endswith(VIDEO_SUFFIXES) and not name.startswith(".")
        ]
    return sorted(set(videos))


def confine_videos(video_root: str, videos: list[str]) -> tuple[list[str], list[dict]]:
    """(videos that resolve inside `video_root`, normalised; refused ones as {"video", "reason", "detail"}):
    absolute paths, `..` out of the root, symlinks to outside it, empty names or NUL bytes are refused."""
    kept, refused = [], []
    for video in videos:
        try:
            resolve_under_root(video_root, video, what="video")
            if os.path.normpath(video).startswith(".."):  # its feature file would be written out of --output-dir
                raise MediaPathError(f"video {video!r} leaves {video_root!r} before coming back; name it directly")
        except MediaPathError as error:
            refused.append({"video": metadata_text(video), "reason": error.reason, "detail": metadata_text(error)})
            continue
        kept.append(os.path.normpath(video))
    kept, ambiguous = refuse_shared_feature_names(sorted(set(kept)))
    return kept, refused + ambiguous


def refuse_shared_feature_names(videos: list[str]) -> tuple[list[str], list[dict]]:
    """(videos with a feature file of their own, refused ones): videos that differ only in their suffix
    (`clip.mp4`, `clip.mkv`) would write the same `clip.safetensors`, and a reader could not tell whose features it
    got, so all of them are refused (`ambiguous_feature_name`)."""
    owners = Counter(feature_name(video) for video in videos)
    kept, refused = [], []
    for video in videos:
        name = feature_name(video)
        if owners[name] == 1:
            kept.append(video)
            continue
        detail = f"{owners[name]} videos would share the feature file {name!r}; rename all but one"
        refused.append({"video": metadata_text(video), "reason": AMBIGUOUS_FEATURE_NAME, "detail": detail})
    return kept, refused


def feature_name(video: str) -> str:
    """`panda/abc.mp4` -> `panda/abc.safetensors` (the reference's features mirror the videos' tree)."""
    return os.path.splitext(video)[0] + FEATURE_SUFFIX


def drop_features(output_dir: str, videos: list[str]) -> None:
    """Delete the features of `videos` (paths relative to the video root) from `output_dir`, e.g. after the videos
    were rewritten: a feature file is checked against the model, not against the video it came from."""
    for video in videos:
        path = os.path.join(output_dir, feature_name(video))
        if os.path.exists(path):
            os.remove(path)


def shard(videos: list[str], index: int, count: int) -> list[str]:
    """Every `count`-th video from `index`: shards of similar size and similar mix of lengths."""
    return videos[index::count]


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints and file checks
# ---------------------------------------------------------------------------------------------------------------
def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over the module's parameters and buffers (names, dtypes, shapes and bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{data.dtype}\0{tuple(data.shape)}\0".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def feature_config(config, sampling: dict) -> dict:
    """Everything besides the weights that shapes the features: vision config, pooling, normalisation, sampling."""
    vision = {k: v for k, v in config.vision_config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    return {
        "vision_config": vision,
        **{name: getattr(config, name) for name in FEATURE_CONFIG_FIELDS},
        "sampling": sampling,
    }


def make_fingerprint(model, sampling: dict, revision: str | None) -> Fingerprint:
    config_hash = hashlib.sha256(json.dumps(feature_config(model.config, sampling), sort_keys=True).encode())
    weights = weights_sha256(model.vision_tower)
    return Fingerprint(revision or f"sha256:{weights[:16]}", config_hash.hexdigest(), weights)


def video_stamp(video_path: str) -> dict[str, str]:
    """What a feature file records of its video, to notice a video replaced under the same name: size and mtime."""
    stat = os.stat(video_path)
    return {"source_size": str(stat.st_size), "source_mtime_ns": str(stat.st_mtime_ns)}


def feature_file_state(
    path: str,
    fingerprint: Fingerprint,
    pooled_tokens: int,
    channels: int,
    video_path: str | None = None,
    video: str | None = None,
    verify_content: bool = True,
) -> tuple[str, str]:
    """(VALID | MISSING | STALE | INVALID | CHANGED, detail). From the header: the file must be complete, our
    format, one `features` tensor (T > 0, pooled_tokens, channels), and carry `fingerprint`; with `video_path`, a
    file that recorded another size or mtime of that video is CHANGED; with `video` (relative to the root), a file
    that records another video is INVALID. With `verify_content`, the tensor is read: a checksum that does not
    match or non-finite values are INVALID (files without a checksum are only checked for finite values)."""
    from modeling_hour_llava.features_hour_llava import FEATURE_FILE_FORMAT, load_feature_file
    from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError

    if not os.path.exists(path):
        return MISSING, ""
    try:
        header, expected_size = read_feature_header(path)
    except (ValueError, OSError, KeyError, TypeError) as error:
        return INVALID, f"unreadable header ({error})"
    size = os.path.getsize(path)
    if size != expected_size:
        return INVALID, f"truncated or padded: {size} bytes, header says {expected_size}"
    metadata = header.get("__metadata__") or {}
    tensor = header.get("features")
    if metadata.get("format") != FEATURE_FILE_FORMAT or tensor is None:
        return INVALID, f"not an Hour-LLaVA feature file (format {metadata.get('format')!r})"
    shape = tensor.get("shape", [])
    if len(shape) != 3 or shape[0] < 1 or shape[1:] != [pooled_tokens, channels]:
        return INVALID, f"features of shape {shape}, expected (T, {pooled_tokens}, {channels})"
    if metadata.get("fingerprint") != fingerprint.value:
        return STALE, (
            f"written by model revision {metadata.get('model_revision')!r} (fingerprint "
            f"{str(metadata.get('fingerprint'))[:12]}), current is {fingerprint.model_revision!r} "
            f"({fingerprint.value[:12]})"
        )
    if video_path is not None and "source_size" in metadata and os.path.exists(video_path):
        now = video_stamp(video_path)
        recorded = {key: metadata.get(key) for key in now}
        if recorded != now:
            return CHANGED, f"{video_path} changed since its features were written ({recorded} -> {now})"
    if video is not None and "source_video" in metadata and metadata["source_video"] != metadata_text(video):
        return INVALID, f"holds the features of {metadata['source_video']!r}, not of {metadata_text(video)!r}"
    if verify_content:
        try:
            load_feature_file(path)
        except VideoDecodeError as error:
            return INVALID, error.reason
    return VALID, ""


def remove_temporaries(path: str) -> None:
    """Delete `.tmp-<pid>-<name>` leftovers of this output file from a killed run (`save_feature_file`'s names)."""
    folder, name = os.path.split(path)
    if os.path.isdir(folder):
        for entry in os.listdir(folder):
            if entry.startswith(".tmp-") and entry.endswith(f"-{name}"):
                os.remove(os.path.join(folder, entry))


# ---------------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------------
TOWER_PREFIXES = ("model.vision_tower.", "vision_tower.")  # HourLlavaForConditionalGeneration / HourLlavaModel


def checkpoint_files(path: str) -> list[str]:
    """The safetensors files of a checkpoint folder (sharded through its index, or the single file)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as handle:
            return sorted({os.path.join(path, name) for name in json.load(handle)["weight_map"].values()})
    single = os.path.join(path, "model.safetensors")
    if not os.path.exists(single):
        raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
    return [single]


def tower_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The vision tower's tensors of a checkpoint, names relative to the tower; nothing else is read."""
    from safetensors import safe_open

    state = {}
    for file in checkpoint_files(path):
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():
                prefix = next((p for p in TOWER_PREFIXES if key.startswith(p)), None)
                if prefix is not None:
                    state[key[len(prefix) :]] = handle.get_tensor(key)
    if not state:
        raise ValueError(f"{path}: no vision tower tensors (keys starting with {TOWER_PREFIXES})")
    return state


def load_model(path: str, dtype: torch.dtype, device: torch.device | str = "cpu"):
    """An HourLlavaModel whose vision tower alone is loaded (on `device`, in `dtype`): the language model, projector
    and MemAug stay on the meta device, so extracting with a 7B checkpoint costs only the tower's memory."""
    from accelerate import init_empty_weights

    from modeling_hour_llava import HourLlavaConfig, HourLlavaForConditionalGeneration

    config = HourLlavaConfig.from_pretrained(path)
    with init_empty_weights():
        model = HourLlavaForConditionalGeneration(config).model
    model.vision_tower.load_state_dict(tower_state_dict(path), strict=True, assign=True)
    model.vision_tower.to(device=device, dtype=dtype)
    return model.eval()


def tower_device(model) -> torch.device:
    return next(model.vision_tower.parameters()).device


@torch.inference_mode()
def video_features(model, frames: torch.Tensor, chunk_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(T, 3, H, W) uint8 frames -> (T, G*G, C) pooled tower features, `chunk_size` frames per tower call."""
    from modeling_hour_llava.memory_hour_llava import pool_frame_features

    config = model.config
    out = None
    for start in range(0, frames.shape[0], chunk_size):
        chunk = frames[start : start + chunk_size].to(tower_device(model))
        pooled = pool_frame_features(model.vision_features(chunk), config.memory_pool_size, config.memory_pool_mode)
        if out is None:
            out = torch.empty((frames.shape[0], *pooled.shape[1:]), dtype=dtype)
        out[start : start + chunk.shape[0]] = pooled.to("cpu", dtype)
    return out


class Extractor:
    """Model, processor and fingerprint of one process; `run(videos)` does its shard."""

    def __init__(self, args: argparse.Namespace, device: torch.device | str = "cpu"):
        from modeling_hour_llava.video_processing_hour_llava import HourLlavaVideoProcessor

        self.args = args
        self.dtype = DTYPES[args.dtype]
        self.model = load_model(args.model, self.dtype, device)
        config = self.model.config
        size = args.size or config.vision_config.image_size
        self.processor = HourLlavaVideoProcessor(
            size={"height": size, "width": size}, fps=args.fps, min_frames=args.min_frames, max_frames=args.max_frames
        )
        sampling = {"fps": args.fps, "min_frames": args.min_frames, "max_frames": args.max_frames, "size": size}
        sampling["dtype"] = args.dtype
        self.fingerprint = make_fingerprint(self.model, sampling, args.revision)
        self.pooled_tokens = config.memory_pool_size**2
        self.channels = config.vision_config.hidden_size
        self.chunk_size = args.chunk_size or config.vision_chunk_size

    def check(self, path: str, video: str | None = None) -> str:
        """The action for the output file `path` of `video` (relative to the video root): 'skip', 'compute',
        'recompute_stale', 'recompute_invalid' or 'recompute_changed_video'."""
        watch = os.path.join(self.args.video_root, video) if video and self.args.video_changes == "recompute" else None
        state, detail = feature_file_state(path, self.fingerprint, self.pooled_tokens, self.channels, watch, video)
        if state == VALID:
            return "skip"
        if state == STALE:
            return "recompute_stale"
        if state == CHANGED:
            return "recompute_changed_video"
        return "compute" if state == MISSING else "recompute_invalid"

    def preflight(self, videos: list[str]) -> None:
        """With `--on-stale refuse`, fail before any work if any output file (of any process) is stale: every
        process checks every header (cheap), so they all stop together instead of one waiting for the others."""
        if self.args.on_stale != "refuse":
            return
        stale = []
        for video in videos:
            path = os.path.join(self.args.output_dir, feature_name(video))
            state, detail = feature_file_state(
                path, self.fingerprint, self.pooled_tokens, self.channels, verify_content=False
            )
            if state == STALE:
                stale.append(f"{path}: {detail}")
        if stale:
            raise StaleFeaturesError(
                f"{len(stale)} feature file(s) come from another model or configuration, e.g. {stale[0]}. "
                "Use another --output-dir, or --on-stale recompute to overwrite them."
            )

    def extract(self, video: str, output: str) -> float:
        """Decode, run the tower, pool and write one video's file; returns the video's duration in seconds.
        Features that are not all finite are a VideoDecodeError (nothing is written)."""
        from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError

        path = os.path.join(self.args.video_root, video)
        stamp = video_stamp(path) if os.path.exists(path) else {}  # taken before decoding: a later change shows
        frames, duration, _ = self.processor.load_video(path)
        features = video_features(self.model, frames, self.chunk_size, self.dtype)
        if not all_finite(features):
            bad = int((~torch.isfinite(features)).flatten(1).any(1).sum())
            frames_total = features.shape[0]
            reason = f"the vision tower gave NaN or infinite features for {bad} of {frames_total} frames"
            raise VideoDecodeError(path, f"{reason} ({self.args.dtype}); nothing was written")
        save_feature_file(
            output,
            features,
            duration,
            source_video=video,
            num_frames=str(features.shape[0]),
            **stamp,
            **self.fingerprint.metadata(),
        )
        return duration

    def run(self, videos: list[str], position: int = 0) -> Tally:
        from tqdm.auto import tqdm

        from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError

        tally, started = Tally(), time.perf_counter()
        bar = tqdm(videos, desc=f"features [process {position}]", unit="video", position=position, file=sys.stderr)
        for video in bar:
            output = os.path.join(self.args.output_dir, feature_name(video))
            remove_temporaries(output)
            action = self.check(output, video)
            if action == "skip":
                tally.counts["skipped_existing"] += 1
                continue
            try:
                tally.video_seconds += self.extract(video, output)
            except VideoDecodeError as error:
                tally.counts["failed"] += 1
                tally.failures.append({"video": metadata_text(video), "reason": metadata_text(error.reason)})
                continue
            tally.counts["computed"] += 1
            if action != "compute":
                tally.counts[action] += 1
            tally.seconds = time.perf_counter() - started
            bar.set_postfix(video_s_per_s=f"{tally.video_seconds / max(tally.seconds, 1e-9):.1f}")
        bar.close()
        tally.seconds = time.perf_counter() - started
        return tally


def merge_reports(
    output_dir: str, args: argparse.Namespace, fingerprint: Fingerprint, count: int, refused: list[dict] = ()
) -> dict:
    """Sum the per-process reports into `extraction_report.json` (atomically) and return it; `refused`: the
    videos `confine_videos` refused (counted by reason)."""
    folder = os.path.join(output_dir, PARTIAL_REPORTS)
    parts = [json.loads(Path(folder, f"process-{rank}.json").read_text()) for rank in range(count)]
    counts = Counter(entry["reason"] for entry in refused)
    for part in parts:
        counts.update(part["counts"])
    seconds = max((part["seconds"] for part in parts), default=0.0)
    computed, video_seconds = counts.get("computed", 0), sum(part["video_seconds"] for part in parts)
    report = {
        "extractor": EXTRACTOR,
        "model": args.model,
        **fingerprint.metadata(),
        "video_root": args.video_root,
        "output_dir": output_dir,
        "processes": count,
        "counts": dict(counts),
        "failures": [failure for part in parts for failure in part["failures"]],
        "refused": list(refused),
        "wall_seconds": seconds,
        "videos_per_second": computed / seconds if seconds else None,
        "video_seconds_per_second": video_seconds / seconds if seconds else None,
        "per_process": parts,
    }
    write_json_atomically(os.path.join(output_dir, REPORT_NAME), report)
    return report


def extract(args: argparse.Namespace) -> dict | None:
    """Run this process's shard; the main process writes and returns the merged report."""
    from accelerate import PartialState

    # On a machine without CUDA, `accelerate launch --multi_gpu --num_processes N` starts N CPU processes; cpu=True
    # makes them one gloo process group (MULTI_CPU) instead of N unrelated single processes.
    state = PartialState(cpu=args.cpu or not torch.cuda.is_available())
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // state.num_processes))
    if not os.path.isdir(args.video_root):
        raise FileNotFoundError(f"--video-root {args.video_root!r} is not a folder")
    videos, refused = confine_videos(args.video_root, list_videos(args.video_root, args.video_list))
    os.makedirs(args.output_dir, exist_ok=True)
    extractor = Extractor(args, state.device)
    extractor.preflight(videos)
    mine = shard(videos, state.process_index, state.num_processes)
    print(f"process {state.process_index} of {state.num_processes}: {len(mine)} videos", file=sys.stderr, flush=True)
    tally = extractor.run(mine, position=state.process_index)
    write_json_atomically(
        os.path.join(args.output_dir, PARTIAL_REPORTS, f"process-{state.process_index}.json"), tally.as_dict()
    )
    state.wait_for_everyone()
    if state.is_main_process:
        return merge_reports(args.output_dir, args, extractor.fingerprint, state.num_processes, refused)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hour-LLaVA checkpoint folder (its vision tower is used)")
    parser.add_argument("--video-root", required=True, help="folder of the videos (scanned recursively)")
    parser.add_argument("--output-dir", required=True, help="where <video path>.safetensors files go")
    parser.add_argument("--video-list", help="file with one video path (relative to --video-root) per line")
    parser.add_argument("--revision", help="model revision to record (default: sha256 of the tower's weights)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (default 1)")
    parser.add_argument("--min-frames", type=int, default=128, help="shorter videos give this many frames (128)")
    parser.add_argument("--max-frames", type=int, default=None, help="optional cap on frames per video")
    parser.add_argument("--size", type=int, default=None, help="frame size (default: the tower's image_size)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="model and stored dtype")
    parser.add_argument("--chunk-size", type=int, default=None, help="frames per tower call (vision_chunk_size)")
    parser.add_argument("--on-stale", choices=STALE_POLICIES, default="refuse", help="files of another model")
    parser.add_argument("--video-changes", choices=("recompute", "ignore"), default="recompute",
                        help="files whose video's size or modification time changed since they were written: "
                        "recompute them (default) or trust them (videos copied without their times)")  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="run on CPU even where CUDA is available")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (cores / processes)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        report = extract(parse_args(argv))
    except (StaleFeaturesError, FileNotFoundError, NotADirectoryError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report is not None:
        summary = {key: report[key] for key in ("counts", "videos_per_second", "video_seconds_per_second")}
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
