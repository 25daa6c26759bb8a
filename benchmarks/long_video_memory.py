"""Long-video memory benchmark: Hour-LLaVA against LLaVA-OneVision, on CPU, with one tiny decoder.

What is measured
----------------
Videos of 2 min, 10 min, 1 h and 2 h sampled at 1 fps (120, 600, 3,600 and 7,200 frames) of random SigLIP-so400m
features (width 1152), each followed by a 32-token question after a 14-token prompt prefix:

* Hour-LLaVA: pooled 8 x 8 SigLIP features (T, 64, 1152) -> projector (`encode_video`) -> memory repository ->
  forgetting -> MemAug (4 blocks, the paper's depth) -> decoder prefill, one `forward` with `use_cache=False` and
  the LM head on the last position. The vision tower is never run: inputs are already features.
* LLaVA-OneVision (`transformers.LlavaOnevisionForConditionalGeneration`): 27 x 27 SigLIP patch features
  (F, 729, 1152) -> its own `multi_modal_projector` and `apply_pooling` (196 tokens per frame) -> its one
  `image_newline` -> `language_model(inputs_embeds=...)` prefill -> `lm_head` on the last position; exactly what
  `get_video_features` and `forward` do after the vision tower. Two settings: 64 uniformly sampled frames (its usual
  setting; only those frames' features exist, as its processor decodes only them) and every frame at 1 fps.

Both models share one Qwen2 decoder configuration (width 256, 2 layers, 4 heads, 2 key-value heads, MLP 512,
vocabulary 1024) and one SigLIP configuration (width 1152, 384 px, 14 px patches, a single small layer that is
built but never run). Weights are random and seeded; attention is SDPA; everything is float32.

For every row the table gives the memory tokens (Hour-LLaVA's memory repository, which MemAug reads), the LLM
tokens (the whole prompt the decoder prefills, and its visual part), the wall-clock seconds of the steps above
(after a warm-up call on a one-frame video in the same process) and the peak resident set size of the process.

Each measurement runs in a fresh child process, so its peak RSS (`ru_maxrss` of the child) belongs to that
measurement alone. It includes the Python interpreter, torch and transformers, the model (together about 0.8 GiB)
and the input features, which the child creates. `--start-method spawn` (the default) starts a new interpreter
per row, so the RSS is what a standalone process shows. `--quick` uses `forkserver` instead: the imports (about
7 s) happen once, in a server that runs nothing else, and every row is a fork of it; a fork only counts the
library pages it touches, about 0.3 GiB less.

LLaVA-OneVision at 1 fps runs only "where it fits". Before each such row its cost is projected from the
largest LLaVA-OneVision row measured so far in this run (L0 prompt tokens, t0 seconds, peak RSS r0, baseline b0):

    seconds <= t0 * (L / L0)^2        an upper bound (up to timing noise): prefill costs a + b*L + c*L^2 with
                                      nonnegative terms, and the attention term dominates at these lengths
    RSS     ~  b0 + (r0 - b0) * L/L0  features, activations and CPU flash attention are all linear in L

The row is skipped, with the reason in the table, when a projection exceeds `--max-seconds` (600 s by default:
longer single measurements are not useful here; 5 s with `--quick`, to keep the smoke test short) or
`--max-rss-gb` (90% of the machine's RAM).

Timings assume an otherwise idle machine: each row also records its CPU seconds and the CPU seconds other
processes used while it was timed, and the report says when those were more than 10% of the machine.

Results: a markdown table on stdout, and a JSON file (`benchmarks/results/long_video_memory.json` by default,
written atomically) with the rows, the machine, the configuration and two checks on Hour-LLaVA: whether its peak
RSS grows linearly with the video length (least-squares fit RSS = a + b*T, max relative residual) and whether one
hour fits in 4 GiB.

    python benchmarks/long_video_memory.py            # full run, about 10 minutes on 2 cores
    python benchmarks/long_video_memory.py --quick    # 2 and 10 minutes only, a smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "long_video_memory.json"

# Video lengths at 1 fps: label -> frames.
DURATIONS = {"2 min": 120, "10 min": 600, "1 h": 3600, "2 h": 7200}
QUICK_DURATIONS = ("2 min", "10 min")

# The one decoder both models use, and the SigLIP-so400m geometry both models see (its single layer never runs).
TEXT_CONFIG = dict(
    model_type="qwen2",
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_position_embeddings=2**21,  # above the 1.41M tokens of LLaVA-OneVision on 2 h at 1 fps
    tie_word_embeddings=False,
)
VISION_CONFIG = dict(
    model_type="siglip_vision_model",
    hidden_size=1152,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    vision_use_head=False,
)
MEMAUG_NUM_LAYERS = 4
# Hour-LLaVA fields that decide its token counts and cost (paper defaults except the depth), copied into the JSON.
HOUR_LLAVA_FIELDS = (
    "memory_pool_size",
    "memory_min_frames",
    "spatial_keep_ratio",
    "spatial_forgetting_mode",
    "temporal_keep_ratio",
    "temporal_min_frames",
    "temporal_max_frames",
    "temporal_forgetting_mode",
    "use_memaug",
    "memaug_num_layers",
    "memaug_mlp_ratio",
    "memaug_rotary_fraction",
    "image_token_index",
    "video_token_index",
)
IMAGE_TOKEN = TEXT_CONFIG["vocab_size"] - 2
VIDEO_TOKEN = TEXT_CONFIG["vocab_size"] - 1
PREFIX_TOKENS = 14  # system prompt and chat markup before the video
QUESTION_TOKENS = 32  # the question after the video; it is also MemAug's text query
HOUR_LLAVA_POOLED_PATCHES = 64  # 8 x 8 pooled SigLIP grid: the input features of Hour-LLaVA
OV_SAMPLED_FRAMES = 64

HOUR_LLAVA = "Hour-LLaVA"
OV_64 = "LLaVA-OneVision 64 frames"
OV_1FPS = "LLaVA-OneVision 1 fps"

ONE_HOUR_LIMIT_MIB = 4 * 1024  # "one hour must fit in 4 GB", read as 4 GiB
LINEARITY_TOLERANCE = 0.05  # max relative residual of the linear fit that still counts as linear


# ---------------------------------------------------------------------------------------------------------------
# Geometry that the parent needs without importing torch
# ---------------------------------------------------------------------------------------------------------------
def ov_patches_per_frame() -> int:
    side = VISION_CONFIG["image_size"] // VISION_CONFIG["patch_size"]
    return side * side


def ov_visual_tokens(num_frames: int) -> int:
    """LLaVA-OneVision video tokens: each 27 x 27 grid pooled to ceil(27/2)^2 = 196, plus one newline per video."""
    side = VISION_CONFIG["image_size"] // VISION_CONFIG["patch_size"]
    return num_frames * math.ceil(side / 2) ** 2 + 1


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (`ru_maxrss` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def machine_busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux `/proc/stat`); None elsewhere."""
    try:
        with open("/proc/stat") as file:
            fields = [int(value) for value in file.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def total_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------------
# Models and inputs (child side)
# ---------------------------------------------------------------------------------------------------------------
def hour_llava_config():
    from modeling_hour_llava import HourLlavaConfig

    return HourLlavaConfig(
        vision_config=dict(VISION_CONFIG),
        text_config=dict(TEXT_CONFIG),
        memaug_num_layers=MEMAUG_NUM_LAYERS,
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
    )


def llava_onevision_config():
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config=dict(VISION_CONFIG),
        text_config=dict(TEXT_CONFIG),
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
        vision_feature_select_strategy="full",  # SigLIP has no CLS token
        vision_feature_layer=-1,
    )


def prompt_ids(seed: int):
    """The text around the video: (prefix ids, question ids), drawn below the special token ids."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(0, IMAGE_TOKEN, (PREFIX_TOKENS + QUESTION_TOKENS,), generator=generator)
    return text[:PREFIX_TOKENS], text[PREFIX_TOKENS:]


def random_features(num_frames: int, patches: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randn(num_frames, patches, VISION_CONFIG["hidden_size"], generator=generator)


class StageClock:
    """Wall-clock seconds and peak RSS at the end of each named stage of one measurement; the last mark ends it.

    It also counts the CPU seconds of this process (all threads) and of every other process on the machine
    between the start and the last mark: other processes competing for the cores make the timing noisy.
    """

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.cpu_start = self.cpu_last = time.process_time()
        self.machine_start = self.machine_last = machine_busy_cpu_seconds()
        self.seconds: dict[str, float] = {}
        self.peak_rss_mib: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self.last, 4)
        self.peak_rss_mib[stage] = round(peak_rss_mib(), 1)
        self.last, self.cpu_last, self.machine_last = now, time.process_time(), machine_busy_cpu_seconds()

    def summary(self) -> dict:
        cpu = self.cpu_last - self.cpu_start
        other = None
        if self.machine_start is not None and self.machine_last is not None:
            other = round(max(0.0, self.machine_last - self.machine_start - cpu), 2)
        return dict(
            seconds=round(self.last - self.start, 3),
            cpu_seconds=round(cpu, 3),
            other_processes_cpu_seconds=other,
            stage_seconds=self.seconds,
            stage_peak_rss_mib=self.peak_rss_mib,
        )


def hour_llava_prompt(num_frames: int, config, seed: int):
    """(input_ids, memaug_query_mask), both (1, L): prefix, the video's placeholders, question (the query)."""
    import torch

    from modeling_hour_llava import num_video_tokens

    prefix, question = prompt_ids(seed)
    video = torch.full((num_video_tokens(num_frames, config),), config.video_token_index)
    ids = torch.cat([prefix, video, question]).unsqueeze(0)
    query_mask = torch.zeros_like(ids)
    query_mask[0, -len(question) :] = 1
    return ids, query_mask


def measure_hour_llava(num_frames: int, seed: int) -> dict:
    import torch

    from modeling_hour_llava import HourLlavaForConditionalGeneration, video_token_budget

    config = hour_llava_config()
    torch.manual_seed(seed)
    model = HourLlavaForConditionalGeneration(config).eval()

    def run(features, ids, query_mask, clock=None):
        memory = model.encode_video(video_features=features.unsqueeze(0))
        if clock:
            clock.mark("encode (projector)")
        output = model(
            input_ids=ids, video_memory=memory, memaug_query_mask=query_mask, use_cache=False, logits_to_keep=1
        )
        return output.logits

    with torch.inference_mode():
        run(random_features(1, HOUR_LLAVA_POOLED_PATCHES, seed), *hour_llava_prompt(1, config, seed))  # warm-up
    baseline = peak_rss_mib()

    ids, query_mask = hour_llava_prompt(num_frames, config, seed)
    features = random_features(num_frames, HOUR_LLAVA_POOLED_PATCHES, seed)
    clock = StageClock()
    # Stage boundaries inside `forward`, from hooks on the public submodules.
    hooks = [
        model.model.memaug.register_forward_pre_hook(lambda *_: clock.mark("memory repository + forgetting")),
        model.model.memaug.register_forward_hook(lambda *_: clock.mark("MemAug")),
    ]
    with torch.inference_mode():
        logits = run(features, ids, query_mask, clock)
    clock.mark("decoder prefill + LM head")
    for hook in hooks:
        hook.remove()
    assert torch.isfinite(logits).all()

    memory_tokens, visual_tokens = video_token_budget(num_frames, config)
    return dict(
        memory_tokens=memory_tokens,
        llm_tokens=ids.shape[1],
        llm_visual_tokens=visual_tokens,
        **clock.summary(),
        peak_rss_mib=round(peak_rss_mib(), 1),
        baseline_rss_mib=round(baseline, 1),
        input_features_mib=round(features.numel() * features.element_size() / 2**20, 1),
        parameters=sum(p.numel() for p in model.parameters()),
        attn_implementation=config._attn_implementation,
        config={name: getattr(config, name) for name in HOUR_LLAVA_FIELDS},
    )


def measure_llava_onevision(num_frames: int, seed: int) -> dict:
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    config = llava_onevision_config()
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    inner = model.model
    embed = inner.get_input_embeddings()
    prefix, question = prompt_ids(seed)

    def run(features, clock=None):
        """`get_video_features` after the vision tower, then the prefill of `forward`, on one video."""
        visual = inner.apply_pooling(inner.multi_modal_projector(features)).flatten(0, 1)
        visual = torch.cat([visual, inner.image_newline[None, :]])
        if clock:
            clock.mark("projector + pooling")
        embeds = torch.cat([embed(prefix), visual, embed(question)]).unsqueeze(0)
        hidden = inner.language_model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        return model.lm_head(hidden[:, -1:]), embeds.shape[1], visual.shape[0]

    with torch.inference_mode():
        run(random_features(1, ov_patches_per_frame(), seed))  # warm-up
    baseline = peak_rss_mib()

    features = random_features(num_frames, ov_patches_per_frame(), seed)
    clock = StageClock()
    with torch.inference_mode():
        logits, llm_tokens, visual_tokens = run(features, clock)
    clock.mark("decoder prefill + LM head")
    assert torch.isfinite(logits).all()
    return dict(
        memory_tokens=None,
        llm_tokens=llm_tokens,
        llm_visual_tokens=visual_tokens,
        **clock.summary(),
        peak_rss_mib=round(peak_rss_mib(), 1),
        baseline_rss_mib=round(baseline, 1),
        input_features_mib=round(features.numel() * features.element_size() / 2**20, 1),
        parameters=sum(p.numel() for p in model.parameters()),
        attn_implementation=config.text_config._attn_implementation,
    )


def worker(method: str, num_frames: int, seed: int, threads: int, connection) -> None:
    """Child process entry: one measurement, its result (or traceback) sent back through `connection`."""
    try:
        import random

        import numpy as np
        import torch
        import transformers

        torch.set_num_threads(threads)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        measure = measure_hour_llava if method == HOUR_LLAVA else measure_llava_onevision
        result = measure(num_frames, seed)
        result.update(
            torch_version=torch.__version__,
            transformers_version=transformers.__version__,
            torch_threads=torch.get_num_threads(),
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
        )
        connection.send(("ok", result))
    except BaseException:  # report everything, including MemoryError, to the parent
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------------------------------
# Parent: plan, run each row in a child, decide what fits, report
# ---------------------------------------------------------------------------------------------------------------
def run_in_child(context, method: str, num_frames: int, args) -> dict:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=worker, args=(method, num_frames, args.seed, args.threads, sender))
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(
            f"{method} on {num_frames} frames: the child died with exit code {process.exitcode} (killed for memory?)"
        ) from None
    process.join()
    if status != "ok":
        raise RuntimeError(f"{method} on {num_frames} frames failed in the child:\n{payload}")
    return payload


def one_fps_projection(tokens: int, rows: list[dict]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) projected for a LLaVA-OneVision prompt of `tokens`, from its largest measured row."""
    measured = [row for row in rows if row["method"] in (OV_64, OV_1FPS) and row.get("seconds")]
    reference = max(measured, key=lambda row: row["llm_tokens"])
    scale = tokens / reference["llm_tokens"]
    seconds = reference["seconds"] * scale**2
    baseline = reference["baseline_rss_mib"]
    rss = baseline + (reference["peak_rss_mib"] - baseline) * scale
    return seconds, rss


def skip_reason(seconds: float, rss_mib: float, args) -> str | None:
    reasons = []
    if seconds > args.max_seconds:
        reasons.append(f"projected {seconds:,.0f} s > {args.max_seconds:,.0f} s budget")
    if rss_mib > args.max_rss_gb * 1024:
        reasons.append(f"projected {rss_mib / 1024:,.1f} GiB RSS > {args.max_rss_gb:,.1f} GiB")
    return "; ".join(reasons) or None


def base_row(method: str, label: str, video_frames: int, frames: int) -> dict:
    return dict(method=method, video=label, video_frames=video_frames, frames=frames)


def measure_row(context, method: str, label: str, video_frames: int, frames: int, args) -> dict:
    started = time.perf_counter()
    row = base_row(method, label, video_frames, frames)
    row.update(run_in_child(context, method, frames, args), skipped=None)
    print(
        f"  {method:<27} {label:>6}: {row['seconds']:8.2f} s, peak RSS {row['peak_rss_mib']:8.1f} MiB "
        f"({time.perf_counter() - started:.0f} s with process start)",
        file=sys.stderr,
        flush=True,
    )
    return row


def run_benchmark(context, labels: list[str], args) -> list[dict]:
    rows = []
    for label in labels:
        video_frames = DURATIONS[label]
        rows.append(measure_row(context, HOUR_LLAVA, label, video_frames, video_frames, args))
        rows.append(measure_row(context, OV_64, label, video_frames, min(OV_SAMPLED_FRAMES, video_frames), args))
        tokens = PREFIX_TOKENS + ov_visual_tokens(video_frames) + QUESTION_TOKENS
        seconds, rss = one_fps_projection(tokens, rows)
        reason = skip_reason(seconds, rss, args)
        if reason is None:
            row = measure_row(context, OV_1FPS, label, video_frames, video_frames, args)
        else:
            row = base_row(OV_1FPS, label, video_frames, video_frames)
            row.update(
                memory_tokens=None,
                llm_tokens=tokens,
                llm_visual_tokens=ov_visual_tokens(video_frames),
                seconds=None,
                peak_rss_mib=None,
                skipped=reason,
            )
            print(f"  {OV_1FPS:<27} {label:>6}: skipped ({reason})", file=sys.stderr, flush=True)
        row.update(projected_seconds=round(seconds, 1), projected_peak_rss_mib=round(rss, 1))
        rows.append(row)
    return rows


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = a + b*x."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def hour_llava_checks(rows: list[dict]) -> dict:
    """Is Hour-LLaVA's peak RSS linear in the video length, and does one hour fit in 4 GiB?"""
    ours = [row for row in rows if row["method"] == HOUR_LLAVA]
    checks: dict = {}
    if len(ours) >= 3:
        xs = [row["video_frames"] for row in ours]
        ys = [row["peak_rss_mib"] for row in ours]
        intercept, slope = linear_fit(xs, ys)
        residuals = [abs(y - (intercept + slope * x)) / y for x, y in zip(xs, ys, strict=True)]
        checks["rss_linear_in_frames"] = dict(
            intercept_mib=round(intercept, 1),
            slope_kib_per_frame=round(slope * 1024, 1),
            max_relative_residual=round(max(residuals), 4),
            tolerance=LINEARITY_TOLERANCE,
            linear=max(residuals) <= LINEARITY_TOLERANCE,
        )
    hour = [row for row in ours if row["video_frames"] == DURATIONS["1 h"]]
    if hour:
        checks["one_hour_under_4_gib"] = dict(
            peak_rss_mib=hour[0]["peak_rss_mib"],
            limit_mib=ONE_HOUR_LIMIT_MIB,
            fits=hour[0]["peak_rss_mib"] < ONE_HOUR_LIMIT_MIB,
        )
    return checks


def format_table(rows: list[dict]) -> str:
    header = "| method | video | frames | memory tokens | LLM tokens (visual) | seconds | peak RSS (MiB) |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        memory = f"{row['memory_tokens']:,}" if row["memory_tokens"] is not None else "-"
        llm = f"{row['llm_tokens']:,} ({row['llm_visual_tokens']:,})"
        if row.get("skipped"):
            seconds, rss = f"skipped: {row['skipped']}", "-"
        else:
            seconds, rss = f"{row['seconds']:.2f}", f"{row['peak_rss_mib']:,.0f}"
        lines.append(f"| {row['method']} | {row['video']} | {row['frames']:,} | {memory} | {llm} | {seconds} | {rss} |")
    return "\n".join(lines)


def format_checks(checks: dict) -> str:
    lines = []
    linear = checks.get("rss_linear_in_frames")
    if linear:
        lines.append(
            f"Hour-LLaVA peak RSS ~ {linear['intercept_mib']:,.0f} MiB + {linear['slope_kib_per_frame']:,.1f} KiB "
            f"x frames; max relative residual {linear['max_relative_residual']:.1%} -> "
            f"{'linear' if linear['linear'] else 'NOT linear'} (tolerance {linear['tolerance']:.0%})"
        )
    else:
        lines.append("Hour-LLaVA RSS linearity: needs at least 3 video lengths (run without --quick)")
    hour = checks.get("one_hour_under_4_gib")
    if hour:
        verdict = "fits" if hour["fits"] else "does NOT fit"
        lines.append(
            f"Hour-LLaVA, 1 h at 1 fps: peak RSS {hour['peak_rss_mib']:,.0f} MiB {verdict} in "
            f"{hour['limit_mib']:,} MiB (4 GiB)"
        )
    return "\n".join(lines)


def format_noise(rows: list[dict], cores: int) -> str:
    """How much CPU other processes took while the rows were timed (the timings assume an idle machine)."""
    measured = [row for row in rows if row.get("other_processes_cpu_seconds") is not None]
    if not measured:
        return ""
    other = sum(row["other_processes_cpu_seconds"] for row in measured)
    capacity = sum(row["seconds"] for row in measured) * cores
    share = other / capacity if capacity else 0.0
    verdict = "timings are noisy" if share > 0.1 else "the machine was mostly idle"
    return (
        f"Other processes used {other:,.1f} of the {capacity:,.1f} CPU seconds available while rows were timed "
        f"({share:.0%}): {verdict}"
    )


def machine_info(rows: list[dict]) -> dict:
    measured = next(row for row in rows if row.get("torch_version"))
    return dict(
        platform=platform.platform(),
        machine=platform.machine(),
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        cores_available=available_cores(),
        ram_gib=round(total_ram_bytes() / 2**30, 1),
        torch=measured["torch_version"],
        transformers=measured["transformers_version"],
        torch_threads=measured["torch_threads"],
        cpu_capability=measured["cpu_capability"],
    )


def code_version() -> dict:
    """The commit of this checkout, whether the model files differ from it, and a hash of their contents."""

    def git(*command: str) -> str:
        return subprocess.run(["git", *command], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout

    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "modeling_hour_llava").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        commit = git("rev-parse", "HEAD").strip()
        modified = bool(git("status", "--porcelain", "--", "modeling_hour_llava").strip())
    except (OSError, subprocess.CalledProcessError):
        commit = modified = None
    return dict(commit=commit, model_files_modified=modified, model_files_sha256=digest.hexdigest())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the 2 and 10 minute rows (a smoke test)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="skip LLaVA-OneVision 1 fps rows projected to take longer (default 600; 5 with --quick)",
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=round(0.9 * total_ram_bytes() / 2**30, 1),
        help="skip LLaVA-OneVision 1 fps rows projected to need more GiB (default: 90%% of RAM)",
    )
    parser.add_argument(
        "--start-method",
        choices=("spawn", "forkserver"),
        default=None,
        help="how each measurement's process starts (default spawn; forkserver with --quick)",
    )
    args = parser.parse_args(argv)
    if args.max_seconds is None:
        args.max_seconds = 5.0 if args.quick else 600.0
    if args.start_method is None:
        args.start_method = "forkserver" if args.quick else "spawn"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    context = multiprocessing.get_context(args.start_method)
    if args.start_method == "forkserver":
        context.set_forkserver_preload(["torch", "transformers", "modeling_hour_llava"])
    labels = list(QUICK_DURATIONS if args.quick else DURATIONS)
    print(
        f"Measuring {', '.join(labels)} on {args.threads} thread(s), one {args.start_method} process per row",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    code = code_version()
    rows = run_benchmark(context, labels, args)
    code["model_files_changed_during_run"] = code_version()["model_files_sha256"] != code["model_files_sha256"]
    hour_llava_fields = [row.pop("config") for row in rows if row["method"] == HOUR_LLAVA][0]
    checks = hour_llava_checks(rows)
    result = dict(
        benchmark="long_video_memory",
        description=__doc__.split("\n\n")[0],
        machine=machine_info(rows),
        code=code,
        settings=dict(
            quick=args.quick,
            seed=args.seed,
            threads=args.threads,
            start_method=args.start_method,
            max_seconds=args.max_seconds,
            max_rss_gb=args.max_rss_gb,
            durations={label: DURATIONS[label] for label in labels},
        ),
        config=dict(
            text_config=TEXT_CONFIG,
            vision_config=VISION_CONFIG,
            hour_llava=hour_llava_fields,
            prefix_tokens=PREFIX_TOKENS,
            question_tokens=QUESTION_TOKENS,
            hour_llava_input_patches_per_frame=HOUR_LLAVA_POOLED_PATCHES,
            llava_onevision_input_patches_per_frame=ov_patches_per_frame(),
            llava_onevision_sampled_frames=OV_SAMPLED_FRAMES,
            dtype="float32",
        ),
        rows=rows,
        checks=checks,
        total_seconds=round(time.perf_counter() - started, 1),
    )
    from dataset_builder.media import write_json_atomically

    write_json_atomically(args.output, result)
    print(format_table(rows))
    print()
    print(format_checks(checks))
    print(format_noise(rows, available_cores()))
    if code["model_files_changed_during_run"]:
        print("WARNING: modeling_hour_llava/ changed during the run; rows may come from different versions")
    print(f"\nWrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
