"""GPU readiness check: the whole package on one device, at the paper's 7B shape, in one command.

    python benchmarks/gpu_check.py --device cuda              # on a GPU (about 6 minutes on an H100)
    python benchmarks/gpu_check.py --device cpu --tiny        # the CPU proof: every stage, tiny shapes

Stages (each in a child process of its own, with its own time limit; a failure, a timeout or a crash is recorded in
the JSON and the next stage runs; a stage whose extra is not installed is skipped with the reason):

parity          A tiny random Hour-LLaVA (`hour_llava_testing.tiny_model`), a batch of two videos of different
                lengths (left padding), in fp32 on the CPU (the reference) and on the device in fp32 and bf16, SDPA
                and eager: the largest logit difference (absolute and relative to the largest logit) and whether
                the 16 greedy tokens are equal, with the smallest top-1/top-2 logit margin of the reference (a bf16
                mismatch at a margin below bf16's resolution is rounding, not a bug).
hour_7b         The paper's 7B shape with random weights: Qwen2-7B decoder, SigLIP-so400m tower (26 layers, 384 px),
                MemAug depth 4, bf16, built directly on the device (`torch.device` context, no CPU copy). One hour
                of random frames at 1 fps (3,600 frames of 384 x 384, uint8, in pinned host memory) through
                `encode_video` (tower, pooling, projector: the `HourLlavaVideoMemory`), then `generate` with 32 new
                tokens (memory repository, forgetting, MemAug, decoder prefill, decoding). Then a second question
                from the same memory (the tower must not run). Seconds per stage, peak GPU memory, tokens/s.
                A warm-up on a 16-frame video comes first and is not timed.
hour_3b         The same at the Qwen2.5-3B shape (tied embeddings).
cross_attention MemAug's cross-attention alone at the one-hour shape (8,750 queries by 234,000 memory tokens, the
                7B block's 28 heads and 4 key-value heads, bf16), SDPA and eager (chunked): peak memory of the call
                beside the size of the query-by-memory score matrix it never builds.
train           `train.py --stage stage3 --tiny` for 20 steps with bf16 and gradient checkpointing, on 4 synthetic
                videos of which 2 have cached feature files (`--feature_dir`) and 2 are decoded: losses finite and
                falling (mean of the last 3 below the mean of the first 3).
train_fsdp      The same under `accelerate launch --num_processes 1 --config_file` the FSDP launch config
                (`hour_llava_training/configs/accelerate/fsdp.yaml`).
evaluate        `python -m hour_llava_testing.tiny_benchmarks`, then `evaluate.py` on the tiny Video-MME and
                LVBench copies with `--model-args device=<device>`.

`--tiny` runs the same code at tiny shapes (tiny widths, 160 frames of 140 px, a tiny cross-attention), so the
script is proven on a CPU (`tests/test_gpu_check.py`). The goals of issue 23 are reported as pass / fail / not-run
rows: 7B one-hour video end to end <= 60 s, second question <= 2 s, peak memory within one 80 GB card, bf16 greedy
answers equal to fp32 on the tiny model; and MemAug's cross-attention peak under a tenth of its score matrix.

Output: tables on stdout and a JSON file (`benchmarks/results/gpu_check.json`, or `--output`), written atomically.
The exit status is 1 when a stage failed or timed out (skips are not failures), else 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from hour_llava_testing.tiny_model import TINY_TEXT_CONFIG, TINY_VISION_CONFIG  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "gpu_check.json"
SCHEMA = "hour_llava_gpu_check/1"

# Decoder shapes of the paper's two sizes (the public Qwen2-7B and Qwen2.5-3B configs). The tower is SigLIP-so400m,
# `HourLlavaConfig`'s default vision config.
QWEN2_7B = dict(
    model_type="qwen2",
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    tie_word_embeddings=False,
)
QWEN25_3B = dict(
    model_type="qwen2",
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    tie_word_embeddings=True,
)
# `--tiny`: the widths of `hour_llava_testing.tiny_model`, the paper's token geometry (140 px = 10 x 10 patches,
# pooled to 8 x 8).
TINY_TEXT = dict(TINY_TEXT_CONFIG, vocab_size=1024)
TINY_VISION = TINY_VISION_CONFIG
MEMAUG_DEPTH = 4  # the paper's MemAug
HOUR_FRAMES = 3600  # one hour at 1 fps
TINY_FRAMES = 160  # above memory_min_frames (128), so no resampling, as for an hour
WARMUP_FRAMES = 16
PREFIX_TOKENS = 14  # system prompt and chat markup before the video
QUESTION_TOKENS = 32
NEW_TOKENS = 32
PARITY_NEW_TOKENS = 16
TRAIN_STEPS = 20
GPU_MEMORY_LIMIT_BYTES = 80 * 10**9  # "one 80 GB card"
END_TO_END_LIMIT_S = 60.0
SECOND_QUESTION_LIMIT_S = 2.0
SCORE_MATRIX_FRACTION = 0.1  # "far below": the cross-attention call's peak under a tenth of the score matrix
EVAL_BENCHMARKS = ("videomme", "lvbench")


@dataclass
class Stage:
    name: str
    needs: tuple[str, ...]  # importable modules (extras) the stage needs
    limit_gpu_s: int  # time limits; the GPU ones sum to under 8 minutes
    limit_cpu_s: int
    cuda_only_reason: str | None = None
    description: str = ""


# The package's model imports PyAV (`video_loading_hour_llava`), so every stage needs it.
STAGES = [
    Stage("parity", ("av",), 45, 240, description="tiny model: fp32/bf16 on the device vs fp32 CPU; eager vs SDPA"),
    Stage("hour_7b", ("av",), 110, 240, description="7B shape, bf16, 1 h at 1 fps, 32 tokens, second question"),
    Stage("cross_attention", ("av",), 45, 120, description="MemAug cross-attention at the 1 h shape alone"),
    Stage("hour_3b", ("av",), 70, 240, description="3B shape, the same as hour_7b"),
    Stage("train", ("av", "datasets", "trl"), 60, 420, description="train.py stage 3, 20 steps, bf16, checkpointing"),
    Stage("train_fsdp", ("av", "datasets", "trl"), 65, 420, description="the same under accelerate launch, FSDP"),
    Stage("evaluate", ("av", "datasets", "lmms_eval", "evaluate"), 75, 480, description="evaluate.py, tiny copies"),
]
STAGE_NAMES = [stage.name for stage in STAGES]
VERSIONED = (
    "torch", "transformers", "accelerate", "peft", "huggingface-hub", "tokenizers", "safetensors", "numpy", "pyarrow",
    "av", "datasets", "trl", "lmms_eval", "evaluate", "hour-llava-hf",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Child side: the stages
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    device: str
    tiny: bool
    workdir: Path
    result_path: Path
    result: dict = field(default_factory=dict)

    def record(self, **values) -> None:
        """Keep values in the stage's result file at once (atomically), so a timeout keeps what was measured."""
        self.result.update(values)
        write_json_atomic(self.result_path, self.result)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def memory_now(device: str) -> dict:
    """Allocated bytes now and the peaks since the last reset (CUDA), or this process's peak RSS (CPU)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return {
            "measure": "cuda",
            "allocated_bytes": torch.cuda.memory_allocated(),
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
        }
    return {"measure": "rss", "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


class CallTimer:
    """Forward hooks that time every call of some modules (synchronising the device around each call)."""

    def __init__(self, device: str, modules: dict):
        self.device = device
        self.seconds = {name: [] for name in modules}
        self.handles = []
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))
        self.started: dict[str, float] = {}

    def _start(self, name):
        def hook(module, args):
            sync(self.device)
            self.started[name] = time.perf_counter()

        return hook

    def _stop(self, name):
        def hook(module, args, output):
            sync(self.device)
            self.seconds[name].append(time.perf_counter() - self.started.pop(name))

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def tiny_checkpoint(folder: Path, **overrides) -> str:
    from hour_llava_testing.tiny_model import write_tiny_checkpoint

    if not (folder / "config.json").exists():
        write_tiny_checkpoint(folder, seed=0, video_min_frames=16, **overrides)
    return str(folder)


def greedy_margins(scores) -> list[float]:
    """Per sample, the smallest top-1 minus top-2 score over the generated steps."""
    import torch

    stacked = torch.stack([step.float() for step in scores], dim=1)  # (B, steps, V)
    top = stacked.topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1]).min(dim=1).values.tolist()


def stage_parity(ctx: Context) -> None:
    import torch

    from modeling_hour_llava import HourLlavaForConditionalGeneration, HourLlavaProcessor

    path = tiny_checkpoint(ctx.workdir / "parity-model")
    processor = HourLlavaProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    generator = torch.Generator().manual_seed(0)
    videos = [
        torch.randint(0, 256, (frames, 3, 140, 140), dtype=torch.uint8, generator=generator) for frames in (12, 20)
    ]
    questions = ["What happens in this video?", "Which colour appears first, and where does it go?"]
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
        )
        for question in questions
    ]
    inputs = processor(text=texts, videos=videos, return_tensors="pt", padding=True)
    prompt_length = inputs["input_ids"].shape[1]

    def run(device: str, dtype, attention: str) -> dict:
        model = HourLlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, attn_implementation=attention)
        model = model.to(device).eval()
        batch = inputs.to(device)
        with torch.inference_mode():
            logits = model(**batch).logits.float().cpu()
            generated = model.generate(
                **batch,
                max_new_tokens=PARITY_NEW_TOKENS,
                min_new_tokens=PARITY_NEW_TOKENS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        return {
            "logits": logits,
            "tokens": generated.sequences[:, prompt_length:].cpu(),
            "margins": greedy_margins(generated.scores),
        }

    def compare(name: str, got: dict, reference: dict) -> dict:
        mask = inputs["attention_mask"].bool()
        diff = (got["logits"] - reference["logits"]).abs()[mask]
        scale = reference["logits"].abs()[mask].max().item()
        equal = [bool(torch.equal(a, b)) for a, b in zip(got["tokens"], reference["tokens"], strict=True)]
        first = [
            None if same else int((a != b).nonzero()[0, 0])
            for same, a, b in zip(equal, got["tokens"], reference["tokens"], strict=True)
        ]
        return {
            "max_abs_logit_diff": diff.max().item(),
            "max_rel_logit_diff": diff.max().item() / scale if scale else None,
            "greedy_equal": all(equal),
            "greedy_equal_per_sample": equal,
            "first_differing_step": first,
            "reference_min_margin": reference["margins"],
            "tokens": got["tokens"].tolist(),
        }

    reference = run("cpu", torch.float32, "sdpa")
    ctx.record(reference_tokens=reference["tokens"].tolist(), reference_min_margin=reference["margins"])
    comparisons = {}
    runs = {}
    for name, dtype, attention in (
        ("fp32_sdpa", torch.float32, "sdpa"),
        ("bf16_sdpa", torch.bfloat16, "sdpa"),
        ("fp32_eager", torch.float32, "eager"),
        ("bf16_eager", torch.bfloat16, "eager"),
    ):
        runs[name] = run(ctx.device, dtype, attention)
        comparisons[f"{name}_vs_cpu_fp32"] = compare(name, runs[name], reference)
        ctx.record(comparisons=comparisons)
    comparisons["eager_vs_sdpa_fp32"] = compare("eager", runs["fp32_eager"], runs["fp32_sdpa"])
    comparisons["eager_vs_sdpa_bf16"] = compare("eager", runs["bf16_eager"], runs["bf16_sdpa"])
    ctx.record(
        comparisons=comparisons,
        prompt_tokens=prompt_length,
        video_frames=[v.shape[0] for v in videos],
        new_tokens=PARITY_NEW_TOKENS,
        bf16_greedy_equal=comparisons["bf16_sdpa_vs_cpu_fp32"]["greedy_equal"],
        fp32_greedy_equal=comparisons["fp32_sdpa_vs_cpu_fp32"]["greedy_equal"],
    )


def hour_config(shape: str, tiny: bool):
    """`HourLlavaConfig` of the 7B or 3B shape (tiny widths with `tiny`), MemAug depth 4, paper defaults otherwise."""
    from modeling_hour_llava import HourLlavaConfig

    if tiny:
        text = dict(TINY_TEXT, tie_word_embeddings=shape == "3b")
        vocab = text["vocab_size"]
        return HourLlavaConfig(
            vision_config=dict(TINY_VISION),
            text_config=text,
            memaug_num_layers=MEMAUG_DEPTH,
            image_token_index=vocab - 2,
            video_token_index=vocab - 1,
        )
    text = dict(QWEN2_7B if shape == "7b" else QWEN25_3B)
    return HourLlavaConfig(vision_config=None, text_config=text, memaug_num_layers=MEMAUG_DEPTH)


def random_frames(count: int, size: int, device: str, seed: int):
    """(count, 3, size, size) uint8 random frames on the host, pinned when the device is a GPU (the decoder's side)."""
    import numpy as np
    import torch

    data = np.random.default_rng(seed).bytes(count * 3 * size * size)
    frames = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(count, 3, size, size)
    return frames.pin_memory() if device.startswith("cuda") else frames


def question_prompt(config, num_frames: int, seed: int):
    """input_ids (1, L): 14 prefix tokens, the video's placeholders, 32 question tokens; random text ids."""
    import torch

    from modeling_hour_llava import num_video_tokens

    media = {config.image_token_index, config.video_token_index}
    high = min(media) if min(media) > 1000 else config.text_config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(0, high, (PREFIX_TOKENS + QUESTION_TOKENS,), generator=generator)
    assert not any(int(t) in media for t in text)
    placeholders = torch.full((num_video_tokens(num_frames, config),), config.video_token_index)
    return torch.cat([text[:PREFIX_TOKENS], placeholders, text[PREFIX_TOKENS:]]).unsqueeze(0)


def timed_answer(model, memory, input_ids, device: str) -> dict:
    """`generate` 32 new tokens from a video memory; seconds of its parts, read by hooks around the modules."""
    import torch

    inner = model.model
    timer = CallTimer(
        device,
        {
            "step": model,
            "memaug": inner.memaug,
            "decoder": inner.language_model,
        },
    )
    input_ids = input_ids.to(device)
    try:
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                memaug_query_mask=torch.ones_like(input_ids),
                video_memory=memory,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
            )
        sync(device)
        total = time.perf_counter() - start
    finally:
        timer.remove()
    steps, memaug, decoder = timer.seconds["step"], timer.seconds["memaug"], timer.seconds["decoder"]
    first = steps[0]
    new_tokens = output.shape[1] - input_ids.shape[1]
    decode = total - first
    return {
        "prompt_tokens": input_ids.shape[1],
        "new_tokens": new_tokens,
        "answer_seconds": total,
        "prefill_step_seconds": first,  # memory repository + forgetting + MemAug + decoder prefill + LM head
        "memaug_seconds": sum(memaug),
        "decoder_prefill_seconds": decoder[0],
        "memory_and_forgetting_seconds": max(0.0, first - sum(memaug) - decoder[0]),
        "decode_seconds": decode,
        "decode_tokens_per_second": (new_tokens - 1) / decode if decode > 0 else None,
        "tokens_per_second": new_tokens / total,
    }


def stage_hour(ctx: Context, shape: str) -> None:
    import torch

    from modeling_hour_llava import HourLlavaForConditionalGeneration, video_token_budget

    device, dtype = ctx.device, torch.bfloat16
    config = hour_config(shape, ctx.tiny)
    num_frames = TINY_FRAMES if ctx.tiny else HOUR_FRAMES
    size = config.vision_config.image_size
    memory_tokens, decoder_tokens = video_token_budget(num_frames, config)
    ctx.record(
        shape=shape, frames=num_frames, frame_size=size, memory_tokens=memory_tokens, video_tokens=decoder_tokens
    )

    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # parameters are created on the device and initialised there: no CPU copy
        model = HourLlavaForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    sync(device)
    on_device = {str(p.device) for p in model.parameters()}
    ctx.record(
        build_seconds=time.perf_counter() - start,
        parameters=sum(p.numel() for p in model.parameters()),
        parameter_devices=sorted(on_device),
        parameter_dtypes=sorted({str(p.dtype) for p in model.parameters()}),
        weights=memory_now(device),
        attn_implementation=model.config._attn_implementation,
    )

    tower_calls = [0]
    model.model.vision_tower.embeddings.register_forward_hook(lambda *_: tower_calls.__setitem__(0, tower_calls[0] + 1))

    # Warm-up (kernel selection, cuBLAS handles), not timed.
    start = time.perf_counter()
    warm = random_frames(WARMUP_FRAMES, size, device, seed=1)
    with torch.inference_mode():
        warm_memory = model.encode_video(pixel_values_videos=warm, video_num_frames=[WARMUP_FRAMES])
    timed_answer(model, warm_memory, question_prompt(config, WARMUP_FRAMES, seed=1), device)
    del warm, warm_memory
    ctx.record(warmup_seconds=time.perf_counter() - start)

    start = time.perf_counter()
    frames = random_frames(num_frames, size, device, seed=0)
    ctx.record(frames_setup_seconds=time.perf_counter() - start, frames_bytes=frames.numel())

    reset_peak(device)
    tower_calls[0] = 0
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        memory = model.encode_video(pixel_values_videos=frames, video_num_frames=[num_frames])
    sync(device)
    encode = time.perf_counter() - start
    ctx.record(
        encode_seconds=encode,
        encode_frames_per_second=num_frames / encode,
        tower_calls_first=tower_calls[0],
        memory_frame_tokens_shape=list(memory.frame_tokens[0].shape),
    )
    first = timed_answer(model, memory, question_prompt(config, num_frames, seed=2), device)
    first["end_to_end_seconds"] = encode + first["answer_seconds"]
    ctx.record(first_question=first, peak_first=memory_now(device))

    tower_calls[0] = 0
    second = timed_answer(model, memory, question_prompt(config, num_frames, seed=3), device)
    second["tower_calls"] = tower_calls[0]
    ctx.record(second_question=second, peak=memory_now(device))


def stage_hour_7b(ctx: Context) -> None:
    stage_hour(ctx, "7b")


def stage_hour_3b(ctx: Context) -> None:
    stage_hour(ctx, "3b")


def stage_cross_attention(ctx: Context) -> None:
    import torch

    from modeling_hour_llava import video_token_budget
    from modeling_hour_llava.memaug_hour_llava import HourLlavaMemAugAttention, rotary_cos_sin

    device, dtype = ctx.device, torch.bfloat16
    config = hour_config("7b", ctx.tiny)
    num_frames = TINY_FRAMES if ctx.tiny else HOUR_FRAMES
    memory_tokens, video_tokens = video_token_budget(num_frames, config)
    queries = video_tokens + PREFIX_TOKENS + QUESTION_TOKENS
    heads, width = config.text_config.num_attention_heads, config.text_config.hidden_size
    score_elements = heads * queries * memory_tokens
    ctx.record(
        queries=queries,
        memory_tokens=memory_tokens,
        heads=heads,
        key_value_heads=config.memaug_num_key_value_heads,
        head_dim=config.memaug_head_dim,
        score_matrix_bytes_bf16=score_elements * 2,
        score_matrix_bytes_fp32=score_elements * 4,
    )
    torch.manual_seed(0)
    with torch.device(device):
        attention = HourLlavaMemAugAttention(config, is_cross_attention=True).to(dtype).eval()
        hidden = torch.randn(1, queries, width, dtype=dtype)
        memory = torch.randn(1, memory_tokens, width, dtype=dtype)
        query_rotary = rotary_cos_sin(torch.arange(queries), config.memaug_rotary_dim, config.memaug_theta, dtype)
        memory_rotary = rotary_cos_sin(
            torch.arange(memory_tokens), config.memaug_rotary_dim, config.memaug_theta, dtype
        )
    results = {}
    # SDPA as the model calls it; SDPA held to the flash kernel (says whether flash takes this GQA call, or why not);
    # eager (chunked). A failure of one (an out-of-memory included) is recorded and the next one runs.
    for name, implementation, backends in (
        ("sdpa", "sdpa", None),
        ("sdpa_flash_only", "sdpa", "FLASH_ATTENTION"),
        ("eager", "eager", None),
    ):
        config._attn_implementation = implementation
        reset_peak(device)
        before = memory_now(device)
        try:
            with torch.inference_mode(), sdpa_backends(backends):
                sync(device)
                start = time.perf_counter()
                output = attention(hidden, query_rotary, memory, memory_rotary)
                sync(device)
                seconds = time.perf_counter() - start
        except Exception as error:  # recorded per implementation; the stage fails below only for the default
            results[name] = {"error": f"{type(error).__name__}: {error}"[:1000]}
            output = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            ctx.record(implementations=results)
            continue
        after = memory_now(device)
        entry = {"seconds": seconds, "finite": bool(torch.isfinite(output).all()), "memory": after}
        if device.startswith("cuda"):
            entry["peak_above_inputs_bytes"] = after["peak_allocated_bytes"] - before["allocated_bytes"]
            entry["fraction_of_score_matrix_bf16"] = entry["peak_above_inputs_bytes"] / (score_elements * 2)
        results[name] = entry
        del output
        ctx.record(implementations=results)
    failed = {name: entry["error"] for name, entry in results.items() if "error" in entry and name != "sdpa_flash_only"}
    if failed:
        raise RuntimeError(f"MemAug cross-attention failed at the one-hour shape: {failed}")


def sdpa_backends(name: str | None):
    """A context that holds SDPA to one backend (`torch.nn.attention.SDPBackend.<name>`), or does nothing."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    return contextlib.nullcontext() if name is None else sdpa_kernel([getattr(SDPBackend, name)])


def synthetic_training_data(root: Path, feature_width: int) -> dict:
    """4 short videos and chat rows about them; videos 0 and 2 also get a cached feature file (8 x 8 pooled SigLIP
    features of the tiny tower's width), so a training batch mixes cached features and decoded videos."""
    import datasets
    import torch

    from dataset_builder.chat import media_block, text_block, turn
    from dataset_builder.extract_features import feature_name
    from dataset_builder.synthetic_video import write_video
    from modeling_hour_llava.features_hour_llava import save_feature_file

    videos, features, rows = root / "videos", root / "features", []
    videos.mkdir(parents=True, exist_ok=True)
    answers = ["red", "green", "blue", "yellow"]
    for index, answer in enumerate(answers):
        name = f"clip_{index}.mp4"
        seconds = 6 + index
        write_video(videos / name, num_frames=seconds * 4, fps=4, width=96, height=64)
        if index % 2 == 0:
            generator = torch.Generator().manual_seed(index)
            save_feature_file(
                features / feature_name(name), torch.randn(seconds, 64, feature_width, generator=generator), seconds
            )
        question = turn("user", [media_block("video", name), text_block("Which colour dominates the video?")])
        rows.append({"messages": [question, turn("assistant", [text_block(answer)])]})
    datasets.Dataset.from_list(rows).to_parquet(str(root / "chat" / "train.parquet"))
    return {"dataset": str(root / "chat"), "media_root": str(videos), "feature_dir": str(features)}


def train_arguments(data: dict, output: Path) -> list[str]:
    return [
        "--stage", "stage3", "--tiny", "--tiny_min_frames", "8", "--dataset", data["dataset"],
        "--media_root", data["media_root"], "--feature_dir", data["feature_dir"], "--output_dir", str(output),
        "--max_steps", str(TRAIN_STEPS), "--per_device_train_batch_size", "2", "--max_train_samples", "4",
        "--bf16", "true", "--gradient_checkpointing", "true", "--lr_mode", "released", "--learning_rate", "1e-3",
        "--warmup_steps", "0", "--lr_scheduler_type", "constant", "--save_strategy", "no", "--logging_steps", "1",
        "--seed", "0", "--dataloader_num_workers", "0",
    ]  # fmt: skip


# Written as `sitecustomize.py` into a folder put first on the PYTHONPATH of the training and evaluation runs: at
# exit each Python process writes what it ran under: accelerate's state (distributed type, FSDP version, mixed
# precision, device) where it was created, and its peak CUDA memory where CUDA was used; so the JSON shows that
# FSDP was really on and that the evaluation model really ran on the GPU. It then loads the next `sitecustomize` on
# the path, if the image has one.
PROBE = """
import atexit, importlib.machinery, importlib.util, json, os, sys

def _hour_llava_probe():
    info = {"argv0": os.path.basename(sys.argv[0]) if sys.argv else ""}
    try:
        if "accelerate.state" in sys.modules:
            state = sys.modules["accelerate.state"].AcceleratorState._shared_state
            for key, name in (("distributed_type", "distributed_type"), ("mixed_precision", "_mixed_precision"),
                              ("device", "device"), ("num_processes", "num_processes")):
                if name in state:
                    info[key] = str(state[name])
            info["fsdp_version"] = getattr(state.get("fsdp_plugin"), "fsdp_version", None)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            info["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        with open(os.path.join(os.environ["HOUR_LLAVA_PROBE_DIR"], f"process-{os.getpid()}.json"), "w") as out:
            json.dump(info, out)
    except Exception as error:
        print(f"gpu_check probe: {error!r}", file=sys.stderr)

if os.environ.get("HOUR_LLAVA_PROBE_DIR"):
    atexit.register(_hour_llava_probe)
_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
"""


def probe_environment(folder: Path) -> dict:
    """The child environment with the probe first on the PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("process-*.json"):
        old.unlink()
    (folder / "sitecustomize.py").write_text(PROBE)
    env = child_environment()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env["PYTHONPATH"]])
    return env | {"HOUR_LLAVA_PROBE_DIR": str(folder)}


def probe_results(folder: Path) -> list[dict]:
    """What the probe wrote, one entry per Python process of the run (launchers too)."""
    return [json.loads(path.read_text()) for path in sorted(folder.glob("process-*.json"))]


def child_environment() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


def run_logged(command: list[str], log: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in the repository root, its output into `log`; raise with the log's tail when it fails."""
    with open(log, "w") as handle:
        process = subprocess.run(
            command, cwd=REPO_ROOT, env=env or child_environment(), stdout=handle, stderr=subprocess.STDOUT
        )
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... exited with {process.returncode}; log {log}:\n{tail}")
    return process


def training_result(ctx: Context, output: Path, seconds: float, probe: Path, fsdp: bool) -> None:
    """Record the run's summary and the accelerate state it trained under; on a GPU, refuse a run that was not on
    the GPU in bf16 (and under FSDP when `fsdp`)."""
    summary = json.loads((output / "training_summary.json").read_text())
    states = [state for state in probe_results(probe) if state.get("distributed_type") not in (None, "None")]
    losses = summary["losses"]
    head, tail = losses[:3], losses[-3:]
    ctx.record(
        seconds=seconds,
        steps=summary["steps"],
        losses=losses,
        losses_finite=all(math.isfinite(x) for x in losses),
        loss_falling=bool(losses) and sum(tail) / len(tail) < sum(head) / len(head),
        cached_features_used=summary.get("cached_features_used"),
        samples_seen=summary["steps"] * 2,
        skipped_samples=summary.get("skipped_samples"),
        peak_gpu_memory_mb=summary.get("peak_gpu_memory_mb"),
        train_tokens_per_second=summary.get("train_tokens_per_second"),
        accelerate_state=states,
        fsdp_active=any(state["distributed_type"] == "DistributedType.FSDP" for state in states),
    )
    if not (ctx.result["losses_finite"] and ctx.result["loss_falling"]):
        hint = " (all exactly 0: no token was trained on, every label masked?)" if not any(losses) else ""
        raise RuntimeError(f"losses not finite and falling over {len(losses)} steps{hint}: {losses}")
    if ctx.device.startswith("cuda"):
        wrong = [
            state
            for state in states
            if not state["device"].startswith("cuda")
            or state["mixed_precision"] != "bf16"
            or fsdp != (state["distributed_type"] == "DistributedType.FSDP")
        ]
        if wrong or not states:
            raise RuntimeError(f"training ran under {states or 'no recorded accelerate state'}; expected cuda, bf16"
                               f"{', FSDP' if fsdp else ''}")  # fmt: skip


def training_data(ctx: Context) -> dict:
    data_root = ctx.workdir / "train-data"
    marker = data_root / "ready.json"
    if marker.exists():
        return json.loads(marker.read_text())
    data = synthetic_training_data(data_root, TINY_VISION["hidden_size"])
    write_json_atomic(marker, data)
    return data


def stage_train(ctx: Context) -> None:
    data = training_data(ctx)
    output = ctx.workdir / "train-run"
    shutil.rmtree(output, ignore_errors=True)
    probe = ctx.workdir / "probe-train"
    env = probe_environment(probe)
    start = time.perf_counter()
    command = [sys.executable, "train.py", *train_arguments(data, output), *device_flags(ctx)]
    run_logged(command, ctx.workdir / "train.log", env)
    training_result(ctx, output, time.perf_counter() - start, probe, fsdp=False)


def device_flags(ctx: Context) -> list[str]:
    return [] if ctx.device.startswith("cuda") else ["--use_cpu", "true"]


def stage_train_fsdp(ctx: Context) -> None:
    data = training_data(ctx)
    output = ctx.workdir / "train-fsdp-run"
    shutil.rmtree(output, ignore_errors=True)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", "hour_llava_training/configs/accelerate/fsdp.yaml",
        "--num_processes", "1", "--main_process_port", str(free_port()),
    ]  # fmt: skip
    probe = ctx.workdir / "probe-train-fsdp"
    env = probe_environment(probe)
    start = time.perf_counter()
    # On a CPU, accelerate runs the FSDP config as plain CPU processes (no FSDP there; the JSON's accelerate_state
    # shows it): the CPU proof covers the launcher and the script, a GPU run covers FSDP itself.
    command = [*launch, "train.py", *train_arguments(data, output), *device_flags(ctx)]
    run_logged(command, ctx.workdir / "train_fsdp.log", env)
    training_result(ctx, output, time.perf_counter() - start, probe, fsdp=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_evaluate(ctx: Context) -> None:
    copies = ctx.workdir / "tiny-benchmarks"
    if not (copies / "checkpoint" / "config.json").exists():
        run_logged([sys.executable, "-m", "hour_llava_testing.tiny_benchmarks", str(copies)], ctx.workdir / "bench.log")
    output = ctx.workdir / "evaluate-run"
    shutil.rmtree(output, ignore_errors=True)
    command = [
        sys.executable, "evaluate.py", "--model", str(copies / "checkpoint"), "--output", str(output),
        "--benchmarks", ",".join(EVAL_BENCHMARKS), "--batch-size", "2", "--model-args", f"device={ctx.device}",
        "--no-cache",
    ]  # fmt: skip
    for name in EVAL_BENCHMARKS:
        command += ["--data", f"{name}={copies / 'data' / name}"]
    probe = ctx.workdir / "probe-evaluate"
    env = probe_environment(probe) | {"HF_HOME": str(ctx.workdir / "hf_home"), "OPENAI_API_KEY": ""}
    start = time.perf_counter()
    run_logged(command, ctx.workdir / "evaluate.log", env)
    summary = json.loads((output / "summary.json").read_text())
    # evaluate.py runs lmms-eval once per benchmark: one results file each, all with this run's model arguments.
    results = [json.loads(p.read_text()) for p in sorted((output / "lmms_eval").rglob("*_results.json"))]
    if len(results) != len(EVAL_BENCHMARKS):
        raise RuntimeError(f"evaluate.py wrote {len(results)} lmms-eval results for {len(EVAL_BENCHMARKS)} benchmarks")
    processes = probe_results(probe)
    cuda_peaks = [p["cuda_peak_allocated_bytes"] for p in processes if p.get("cuda_peak_allocated_bytes")]
    ctx.record(
        seconds=time.perf_counter() - start,
        benchmarks={
            name: {key: entry.get(key) for key in ("accuracy", "n", "skipped")}
            for name, entry in summary["benchmarks"].items()
        },
        skipped_total=summary.get("skipped_total"),
        model_args=sorted({str(r["config"]["model_args"]) for r in results}),
        model_backend=sorted({r["config"]["model_backend"] for r in results}),
        probed_processes=processes,
        cuda_peak_allocated_bytes=max(cuda_peaks, default=None),
    )
    if ctx.device.startswith("cuda") and not cuda_peaks:
        raise RuntimeError(f"evaluate.py ran, but no process of it allocated CUDA memory (probes: {processes})")


STAGE_FUNCTIONS = {
    "parity": stage_parity,
    "hour_7b": stage_hour_7b,
    "hour_3b": stage_hour_3b,
    "cross_attention": stage_cross_attention,
    "train": stage_train,
    "train_fsdp": stage_train_fsdp,
    "evaluate": stage_evaluate,
}


def run_stage_in_child(args: argparse.Namespace) -> int:
    ctx = Context(args.device, args.tiny, Path(args.workdir), Path(args.stage_result))
    try:
        STAGE_FUNCTIONS[args.run_stage](ctx)
    except BaseException as error:  # recorded for the parent, then re-raised for the exit status
        ctx.record(error=f"{type(error).__name__}: {error}"[-4000:], traceback=traceback.format_exc()[-6000:])
        raise
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Parent side: run the stages, judge the goals, print and write
# ---------------------------------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=2, default=str)
    os.replace(tmp, path)


def package_versions() -> dict:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info(device: str) -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name,
            "gpu_memory_bytes": props.total_memory,
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_multiprocessors": props.multi_processor_count,
        }
    return info


def missing_extras(stage: Stage) -> list[str]:
    return [name for name in stage.needs if importlib.util.find_spec(name) is None]


class Interrupted(Exception):
    """The check itself was stopped (SIGTERM from an outer `timeout`, or Ctrl-C) while a stage ran."""


def raise_interrupted(signum, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def kill_group(pid: int) -> None:
    """Kill a stage's process session (its train.py, accelerate and lmms-eval children too)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_stage(stage: Stage, args: argparse.Namespace, workdir: Path) -> dict:
    limit = (stage.limit_cpu_s if args.tiny else stage.limit_gpu_s) * args.time_scale
    entry = {"description": stage.description, "limit_seconds": limit}
    missing = missing_extras(stage)
    if missing:
        return entry | {"status": "skipped", "reason": f"not installed here: {', '.join(missing)}", "result": {}}
    result_path = workdir / f"{stage.name}.json"
    log_path = workdir / f"stage-{stage.name}.log"
    result_path.unlink(missing_ok=True)
    command = [
        sys.executable, str(Path(__file__).resolve()), "--run-stage", stage.name, "--stage-result", str(result_path),
        "--device", args.device, "--workdir", str(workdir),
    ] + (["--tiny"] if args.tiny else [])  # fmt: skip
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        entry["pid"] = process.pid  # also the id of its process group (its own session)
        stopped = None
        try:
            returncode = process.wait(timeout=limit)
            status = "ok" if returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            returncode, status = None, "timeout"
        except (Interrupted, KeyboardInterrupt) as error:
            returncode, status, stopped = None, "interrupted", str(error) or type(error).__name__
        if returncode is None:  # a stage in a session of its own would outlive the check: end it with its children
            kill_group(process.pid)
            process.wait()
    entry |= {"status": status, "seconds": round(time.perf_counter() - start, 2), "returncode": returncode}
    entry["result"] = json.loads(result_path.read_text()) if result_path.exists() else {}
    if status != "ok":
        tail = log_path.read_text(errors="replace")[-2500:]
        entry["reason"] = (
            f"the check was stopped ({stopped}) during this stage"
            if stopped
            else entry["result"].get("error")
            or (f"no result within {limit:.0f} s" if status == "timeout" else f"exit {returncode}")
        )
        entry["log_tail"] = tail
    return entry


def goal(name: str, threshold: str, measured, unit: str, passed: bool | None, why: str = "") -> dict:
    status = "not-run" if passed is None else ("pass" if passed else "fail")
    return {"goal": name, "threshold": threshold, "measured": measured, "unit": unit, "status": status, "why": why}


def judge_goals(stages: dict, device: str, tiny: bool) -> list[dict]:
    """The "Done when" of issue 23, from the stages' results. Shape goals need the real shapes on a GPU."""
    real = device.startswith("cuda") and not tiny
    not_real = "tiny shapes on the CPU: this goal is for the 7B shape on a GPU" if not real else ""

    def stage_result(name: str) -> tuple[dict, str]:
        entry = stages.get(name, {})
        if entry.get("status") != "ok":
            return {}, f"stage {name} {entry.get('status', 'not selected')}: {entry.get('reason', '')}".strip(": ")
        return entry["result"], ""

    hour, why = stage_result("hour_7b")
    goals = []
    first = hour.get("first_question", {})
    second = hour.get("second_question", {})
    peak = hour.get("peak", {}).get("peak_reserved_bytes")
    end_to_end = first.get("end_to_end_seconds")
    goals.append(goal(
        "7B shape, one hour at 1 fps, end to end (encode + 32 tokens)", f"<= {END_TO_END_LIMIT_S:.0f} s",
        end_to_end, "s", None if not real or end_to_end is None else end_to_end <= END_TO_END_LIMIT_S, why or not_real,
    ))  # fmt: skip
    answer = second.get("answer_seconds")
    reused = second.get("tower_calls") == 0
    goals.append(goal(
        "7B shape, second question from the same HourLlavaVideoMemory (tower skipped)",
        f"<= {SECOND_QUESTION_LIMIT_S:.0f} s and 0 tower calls", answer, "s",
        None if not real or answer is None else answer <= SECOND_QUESTION_LIMIT_S and reused,
        why or not_real or ("" if reused else f"the tower ran {second.get('tower_calls')} times"),
    ))  # fmt: skip
    goals.append(goal(
        "7B shape, peak GPU memory (reserved) of the one-hour run", f"<= {GPU_MEMORY_LIMIT_BYTES / 1e9:.0f} GB",
        None if peak is None else round(peak / 1e9, 2), "GB",
        None if not real or peak is None else peak <= GPU_MEMORY_LIMIT_BYTES, why or not_real,
    ))  # fmt: skip
    parity, why = stage_result("parity")
    bf16 = parity.get("comparisons", {}).get("bf16_sdpa_vs_cpu_fp32", {})
    equal = bf16.get("greedy_equal")
    goals.append(goal(
        f"tiny model, bf16 greedy answers on {device} equal to fp32 on the CPU", "equal", equal, "bool",
        equal, why or ("" if equal in (True, None) else
                       f"first differing step {bf16.get('first_differing_step')}, fp32 min top-2 margin "
                       f"{bf16.get('reference_min_margin')}, max rel. logit diff {bf16.get('max_rel_logit_diff')}"),
    ))  # fmt: skip
    cross, why = stage_result("cross_attention")
    fraction = cross.get("implementations", {}).get("sdpa", {}).get("fraction_of_score_matrix_bf16")
    goals.append(goal(
        "MemAug cross-attention (SDPA) at the one-hour shape: call's peak above its inputs vs the bf16 score matrix",
        f"< {SCORE_MATRIX_FRACTION} of {cross.get('score_matrix_bytes_bf16', 0) / 1e9:.1f} GB", fraction, "fraction",
        None if not real or fraction is None else fraction < SCORE_MATRIX_FRACTION, why or not_real,
    ))  # fmt: skip
    return goals


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def gigabytes(value) -> str:
    return "-" if value is None else f"{value / 1e9:.2f}"


def stage_summary(name: str, entry: dict) -> str:
    """One line of the most telling numbers of a finished stage."""
    result = entry.get("result", {})
    if entry.get("status") == "skipped":
        return entry["reason"]
    if entry.get("status") != "ok":
        return (entry.get("reason") or "").splitlines()[0][:150] if entry.get("reason") else ""
    if name == "parity":
        c = result["comparisons"]
        fp32, bf16 = c["fp32_sdpa_vs_cpu_fp32"], c["bf16_sdpa_vs_cpu_fp32"]
        return (
            f"fp32 greedy equal {fp32['greedy_equal']} (max abs dlogit {fp32['max_abs_logit_diff']:.2e}); "
            f"bf16 greedy equal {bf16['greedy_equal']} (rel {bf16['max_rel_logit_diff']:.2e}); "
            f"eager=sdpa {c['eager_vs_sdpa_fp32']['greedy_equal']}"
        )
    if name.startswith("hour_"):
        first, second = result["first_question"], result["second_question"]
        peak = result["peak"].get("peak_reserved_bytes") or result["peak"].get("peak_rss_bytes")
        return (
            f"{result['frames']} frames: encode {first['end_to_end_seconds'] - first['answer_seconds']:.2f} s, "
            f"answer {first['answer_seconds']:.2f} s (MemAug {first['memaug_seconds']:.2f}, prefill "
            f"{first['decoder_prefill_seconds']:.2f}, {fmt(first['decode_tokens_per_second'], 1)} tok/s), end to end "
            f"{first['end_to_end_seconds']:.2f} s; 2nd question {second['answer_seconds']:.2f} s, tower calls "
            f"{second['tower_calls']}; peak {peak / 1e9:.2f} GB ({result['peak']['measure']})"
        )
    if name == "cross_attention":
        parts = [
            f"{impl} {e['error'][:80]}"
            if "error" in e
            else f"{impl} {e['seconds']:.2f} s, peak above inputs {gigabytes(e.get('peak_above_inputs_bytes'))} GB"
            for impl, e in result["implementations"].items()
        ]
        matrix = gigabytes(result["score_matrix_bytes_bf16"])
        return f"{result['queries']} x {result['memory_tokens']}: score matrix {matrix} GB bf16; " + "; ".join(parts)
    if name.startswith("train"):
        losses = result["losses"]
        return (
            f"{result['steps']} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, finite {result['losses_finite']}, "
            f"falling {result['loss_falling']}, cached features {result['cached_features_used']}/"
            f"{result['samples_seen']} samples"
        )
    if name == "evaluate":
        return "; ".join(f"{b}: acc {fmt(e['accuracy'])} n={e['n']} skipped={e['skipped']}"
                         for b, e in result["benchmarks"].items())  # fmt: skip
    return ""


def print_tables(report: dict) -> None:
    machine = report["machine"]
    print(f"\nHour-LLaVA GPU check on {machine.get('gpu', report['settings']['device'])}"
          f" ({'tiny shapes' if report['settings']['tiny'] else 'paper shapes'})\n")  # fmt: skip
    print("| stage | status | seconds | limit | result |")
    print("|---|---|---|---|---|")
    for name, entry in report["stages"].items():
        print(f"| {name} | {entry['status']} | {fmt(entry.get('seconds'), 1)} | {entry['limit_seconds']:.0f} | "
              f"{stage_summary(name, entry)} |")  # fmt: skip
    print("\n| goal | threshold | measured | status | why |")
    print("|---|---|---|---|---|")
    for row in report["goals"]:
        measured = fmt(row["measured"], 3) + ("" if row["measured"] is None else f" {row['unit']}")
        print(f"| {row['goal']} | {row['threshold']} | {measured} | {row['status']} | {row['why']} |")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (the CPU proof)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON file")
    parser.add_argument("--stages", default=",".join(STAGE_NAMES), help=f"comma list of {STAGE_NAMES}")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one, deleted at the end)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every stage's time limit")
    parser.add_argument("--run-stage", choices=STAGE_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--stage-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [s for s in args.stages.split(",") if s not in STAGE_NAMES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; expected some of {STAGE_NAMES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.run_stage:
        return run_stage_in_child(args)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda but torch sees no GPU; use --device cpu --tiny for the CPU proof", file=sys.stderr)
        return 2
    selected = [stage for stage in STAGES if stage.name in args.stages.split(",")]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = {
        "schema": SCHEMA,
        "settings": {
            "device": args.device,
            "tiny": args.tiny,
            "stages": [s.name for s in selected],
            "time_scale": args.time_scale,
            "argv": sys.argv[1:] if argv is None else argv,
        },  # fmt: skip
        "machine": machine_info(args.device),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stages": {},
        "goals": [],
    }
    signal.signal(signal.SIGTERM, raise_interrupted)
    for stage in selected:
        print(f"[gpu_check] {stage.name}: {stage.description}", flush=True)
        entry = run_stage(stage, args, workdir)
        report["stages"][stage.name] = entry
        if entry["status"] == "interrupted":
            report["goals"] = judge_goals(report["stages"], args.device, args.tiny)
            write_json_atomic(Path(args.output), report)
            print(f"[gpu_check] stopped during {stage.name}; wrote {args.output}", flush=True)
            return 1
        print(f"[gpu_check] {stage.name}: {entry['status']} {fmt(entry.get('seconds'), 1)} s "
              f"{stage_summary(stage.name, entry)}", flush=True)  # fmt: skip
        if entry["status"] in ("failed", "timeout"):
            print(entry.get("log_tail", ""), flush=True)
        report["goals"] = judge_goals(report["stages"], args.device, args.tiny)
        write_json_atomic(Path(args.output), report)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(Path(args.output), report)
    print_tables(report)
    print(f"\nwrote {args.output}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(e["status"] in ("failed", "timeout", "interrupted") for e in report["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
