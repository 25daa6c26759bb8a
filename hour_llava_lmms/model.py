"""Hour-LLaVA as an lmms-eval model: `lmms-eval --model hour_llava --model_args pretrained=<checkpoint>`.

Any Hour-LLaVA checkpoint (a folder or a Hub id) loads through `AutoModelForImageTextToText` and `AutoProcessor`
with `trust_remote_code=True`. Videos are decoded at 1 fps by the checkpoint's own video processor and encoded once
per video per run: requests are grouped by video, each video's memory (`HourLlavaVideoMemory`) comes from an LRU
(`memory_cache_size` videos) or from a feature file (`features_dir`), and every question about it is answered from
that memory, `batch_size` questions per `generate` call. Letter questions get bare letters (`answer_format`).

A video that cannot be read (missing, corrupt, unsupported: `VideoDecodeError`; a path outside its benchmark's video
folder; a task whose `doc_to_visual` exits or asserts on a missing file) never aborts the run: its requests get an
empty answer (scored wrong), are counted and reported at the end with their reason, and are listed in the journal.
`journal_dir` makes the run resumable question by question (one file per rank).

Under several processes (`accelerate launch`; on CPU with ACCELERATE_USE_CPU=true) each video is encoded by one
rank: the ranks share their questions out by video (`hour_llava_lmms.ranks`).

Model args (all optional except `pretrained`): dtype (auto|bfloat16|float16|float32), device, batch_size,
max_new_tokens (64), fps (1.0), min_frames, max_frames, video_backend (auto|pyav|torchcodec), answer_format
(auto|letter|text), memory_cache_size (2 videos; 0 re-encodes for every batch, for measurements), features_dir,
video_root, journal_dir, trust_remote_code (True), attn_implementation.
"""

from __future__ import annotations

import functools
import operator
import os
import time
import traceback
from collections import Counter
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.utils import simple_parse_args_string
from loguru import logger as eval_logger
from tqdm import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor

from modeling_hour_llava.processing_hour_llava import end_of_turn_token_ids
from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError

from .answers import format_answer, truncate_at_stop
from .journal import OK, SKIPPED, STATS, AnswerJournal, request_key
from .memory_cache import EncodedVideo, VideoMemoryCache, fingerprint
from .ranks import distributed_ready, gather_answers, process_rank_and_count, response_cache_requested, share_work
from .tasks import VideoPathOutsideRoot

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
GENERATE_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpeg", ".mpg", ".flv", ".ts")
# What task code raises instead of returning a readable path: upstream's sys.exit / assert for a missing video, ours
# for a path outside the video folder.
VISUAL_ERRORS = (SystemExit, AssertionError, OSError, KeyError, VideoPathOutsideRoot)


@dataclass
class Query:
    """One request, in the model's terms."""

    index: int
    task: str
    doc_id: int
    messages: list[dict]
    prompt: str
    videos: list[str]
    gen_kwargs: dict
    error: str | None = None
    key: str = ""
    origin: int = 0  # the rank lmms-eval gave the request to

    @property
    def slot(self) -> tuple[int, int]:
        return self.origin, self.index


def _as_int_or_none(value) -> int | None:
    return None if value in (None, "", "none", "None") else int(value)


def failure_reason(stage: str, error: BaseException) -> str:
    """Why a request has no video: the error's message, or for a bare `assert` (LVBench's own `doc_to_visual`)
    the failing line and where it is."""
    message = str(error).strip()
    if not message:
        frames = traceback.extract_tb(error.__traceback__)
        where = frames[-1] if frames else None
        message = type(error).__name__
        if where is not None:
            place = os.sep.join(where.filename.split(os.sep)[-3:])
            message += f" at {place}:{where.lineno}: {where.line}"
    return f"{stage} failed: {message}"


def _failed(query: Query, stage: str, error: BaseException) -> Query:
    """A query whose task could not name a readable video; a refused path is kept, to count distinct videos."""
    query.error = failure_reason(stage, error)
    if getattr(error, "path", None):
        query.videos = [error.path]
    return query


def skip_report(skipped: list[dict]) -> str:
    """`SKIPPED n requests (k videos[, u without a video path]) ...: reasons`, counted exactly: k distinct video
    lists among those that name one, u the requests whose task failed before naming any."""
    videos = {tuple(entry["videos"]) for entry in skipped if entry["videos"]}
    unnamed = sum(1 for entry in skipped if not entry["videos"])
    counts = f"{len(videos)} videos" + (f", {unnamed} without a video path" if unnamed else "")
    reasons = Counter(entry["reason"] for entry in skipped)
    listed = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(5))
    more = f"; and {len(reasons) - 5} other reasons" if len(reasons) > 5 else ""
    return f"SKIPPED {len(skipped)} requests ({counts}) that could not be read, answered as empty: {listed}{more}"


class HourLlava(lmms):
    """Simple-mode Hour-LLaVA (requests carry a prompt and a `doc_to_visual`)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int = 64,
        fps: float = 1.0,
        min_frames: int | None = None,
        max_frames: int | None = None,
        video_backend: str = "auto",
        answer_format: str = "auto",
        memory_cache_size: int = 2,
        features_dir: str | None = None,
        video_root: str | None = None,
        journal_dir: str | None = None,
        trust_remote_code: bool = True,
        attn_implementation: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        ignored = {k: v for k, v in kwargs.items() if k not in ("max_batch_size",)}
        if ignored:
            eval_logger.warning(f"hour_llava: ignoring unknown model_args {sorted(ignored)}")
        self.accelerator = Accelerator()
        self._rank, self._world_size = process_rank_and_count(self.accelerator)
        self._device = self._pick_device(device)
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1
        self.max_new_tokens = int(max_new_tokens)
        self.answer_format = answer_format
        self.pretrained = pretrained
        self._load(pretrained, dtype, trust_remote_code, attn_implementation)
        self.sampling = {
            k: v
            for k, v in {
                "fps": float(fps),
                "min_frames": _as_int_or_none(min_frames),
                "max_frames": _as_int_or_none(max_frames),
                "video_backend": video_backend,
            }.items()
            if v is not None
        }
        self.model_fingerprint = fingerprint(
            os.path.abspath(pretrained) if os.path.isdir(pretrained) else pretrained,
            self.model.config.to_dict(),
            self.sampling,
            str(self.model.dtype),
        )
        self.memories = VideoMemoryCache(
            self._encode_frames,
            self._encode_features,
            self.model_fingerprint,
            int(memory_cache_size),
            features_dir,
            video_root,
        )
        self.journal = AnswerJournal(journal_dir, self._rank)
        self.skipped: list[dict] = []
        self.share_videos = self._world_size > 1 and not response_cache_requested()
        if self._world_size > 1 and not self.share_videos:
            eval_logger.warning(
                "hour_llava: lmms-eval's --use_cache with several processes: the ranks do not share videos (a video "
                "is encoded once per rank that has a question about it); use journal_dir to resume instead"
            )
        if self._world_size > 1 and self.accelerator.num_processes == 1:
            eval_logger.warning(
                f"hour_llava: WORLD_SIZE={self._world_size} but accelerate runs a single process (no process group); "
                "every rank encodes the videos it is given. On CPU, set ACCELERATE_USE_CPU=true for accelerate launch"
            )

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> HourLlava:
        """lmms-eval's constructor from `--model_args`. A key lmms-eval also passes from its own flags (`batch_size`,
        `device`) no longer fails with "got multiple values": the `--model_args` value wins, with a warning."""
        args = simple_parse_args_string(arg_string)
        flags = {k: v for k, v in (additional_config or {}).items() if v is not None}
        for key in sorted(args.keys() & flags.keys()):
            if str(args[key]) != str(flags[key]):
                eval_logger.warning(
                    f"hour_llava: {key}={args[key]} in --model_args overrides lmms-eval's --{key} {flags[key]}; "
                    f"pass it as --{key} instead"
                )
        return cls(**(flags | args))

    # -------------------------------------------------------------------------------------------------------------
    # Loading
    # -------------------------------------------------------------------------------------------------------------
    def _pick_device(self, device: str | None) -> torch.device:
        """The accelerator's device under `accelerate launch`, else the requested one (default: cuda if present)."""
        if self.accelerator.num_processes > 1:
            return self.accelerator.device
        return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _load(self, pretrained: str, dtype: str, trust_remote_code: bool, attn_implementation: str | None) -> None:
        """Model and processor of the checkpoint; the tokenizer pads on the left for batched generation."""
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        elif dtype in DTYPES:
            torch_dtype = DTYPES[dtype]
        else:
            raise ValueError(f"hour_llava: dtype={dtype!r}; expected auto or one of {sorted(DTYPES)}")
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        self.model = AutoModelForImageTextToText.from_pretrained(
            pretrained, dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra
        )
        self.model.to(self._device).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
        if getattr(self.processor, "video_processor", None) is None or not hasattr(
            self.processor, "text_for_encoded_videos"
        ):
            raise ValueError(
                f"hour_llava: {pretrained} has no Hour-LLaVA processor (processor_config.json / video processor); "
                "save one next to the weights with HourLlavaProcessor.save_pretrained"
            )
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # -------------------------------------------------------------------------------------------------------------
    # Video memory
    # -------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_frames(self, path: str) -> tuple[object, int, float]:
        """Decode at 1 fps (streamed, chunk by chunk) and run tower, pooling and projector once.

        `no_grad`, not `inference_mode`: the decoder's worker threads fill frame tensors made in this thread, and
        inference mode (thread-local) would make those tensors read-only to them."""
        stream = self.processor.video_processor.open_stream(path, **self.sampling)
        memory = self.model.encode_video(video_streams=[stream])
        return memory, stream.num_frames, stream.duration

    @torch.inference_mode()
    def _encode_features(self, features: torch.Tensor) -> object:
        """Stored SigLIP features (T, P, C) -> memory; the tower does not run."""
        features = features.to(self._device)
        return self.model.encode_video(video_features=features, video_num_frames=[features.shape[0]])

    # -------------------------------------------------------------------------------------------------------------
    # Requests
    # -------------------------------------------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    def _query(self, index: int, request: Instance) -> Query:
        """Simple mode: (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        query = Query(index, task, doc_id, [], context, [], dict(gen_kwargs or {}))
        try:
            visuals = doc_to_visual(self._doc(task, split, doc_id)) or []
        except VISUAL_ERRORS as error:
            return _failed(query, "doc_to_visual", error)
        unsupported = [type(v).__name__ for v in visuals if not isinstance(v, (str, os.PathLike))]
        if unsupported:
            query.error = f"visuals of type {unsupported}; Hour-LLaVA reads video files (use the *_v task variants)"
            return query
        query.videos = [os.fspath(v) for v in visuals]
        content = [{"type": "video", "path": v} for v in query.videos] + [{"type": "text", "text": context}]
        query.messages = [{"role": "user", "content": content}]
        return query

    def _finish_queries(self, queries: list[Query]) -> None:
        """Request keys (for the journal) once prompts, videos and settings are known."""
        for q in queries:
            q.key = request_key(self.model_fingerprint, q.task, q.doc_id, q.prompt, q.videos, q.gen_kwargs)

    def _generate_kwargs(self, gen_kwargs: dict) -> dict:
        """lmms-eval's generation kwargs -> `generate` kwargs (greedy unless sampling is asked for)."""
        out = {k: gen_kwargs[k] for k in GENERATE_KEYS if k in gen_kwargs}
        out.setdefault("max_new_tokens", self.max_new_tokens)
        if not out.get("do_sample") or float(out.get("temperature", 1.0) or 0.0) == 0.0:
            out["do_sample"] = False
            for key in ("temperature", "top_p", "top_k"):
                out.pop(key, None)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        # Stop at the end of the turn even when the checkpoint's generation config names no eos.
        return out | {
            "pad_token_id": pad,
            "eos_token_id": end_of_turn_token_ids(self.tokenizer, self.model.generation_config),
        }

    def _skip(self, queries: list[Query], reason: str, answers: dict) -> None:
        """Record requests whose video cannot be read; their answer stays empty."""
        for q in queries:
            entry = {
                "key": q.key,
                "status": SKIPPED,
                "task": q.task,
                "doc_id": q.doc_id,
                "videos": q.videos,
                "reason": reason,
                "rank": self._rank,
            }
            self.skipped.append(entry)
            self.journal.record(entry)
            answers[q.slot] = ""

    def _memory_for(self, videos: list[str]) -> list[EncodedVideo]:
        return [self.memories.get(path) for path in videos]

    @torch.inference_mode()
    def _answer_batch(self, batch: list[Query], encoded: list[EncodedVideo]) -> list[str]:
        """One `generate` over questions about the same video(s), from their shared memory."""
        texts = [self.processor.apply_chat_template(q.messages, add_generation_prompt=True) for q in batch]
        num_frames = [e.num_frames for e in encoded] * len(batch)
        durations = [e.duration for e in encoded] * len(batch)
        inputs = self.processor.text_for_encoded_videos(
            texts, num_frames, durations, padding=True, return_tensors="pt"
        ).to(self._device)
        memory = None
        if encoded:
            joined = functools.reduce(operator.add, [e.memory for e in encoded])
            memory = joined[list(range(len(joined))) * len(batch)]  # the videos of every question, in order
        extra = {"video_memory": memory} if memory is not None else {}
        output = self.model.generate(**inputs, **extra, **self._generate_kwargs(batch[0].gen_kwargs))
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        until = batch[0].gen_kwargs.get("until")
        until = [until] if isinstance(until, str) else until
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [
            format_answer(truncate_at_stop(text, until), q.prompt, self.answer_format)
            for text, q in zip(texts, batch, strict=True)
        ]

    def _groups(self, queries: list[Query]) -> list[list[Query]]:
        """Queries by (videos, generation settings), in first-seen order: one memory serves a whole group."""
        groups: dict[str, list[Query]] = {}
        for q in queries:
            groups.setdefault(repr((q.videos, sorted(q.gen_kwargs.items(), key=str))), []).append(q)
        return list(groups.values())

    def _run_group(self, group: list[Query], answers: dict, pbar) -> None:
        """Answer a group batch by batch; its video(s) come from the memory cache (encoded at the first batch), and
        a video that cannot be read skips the rest of the group."""
        for start in range(0, len(group), self.batch_size_per_gpu):
            batch = group[start : start + self.batch_size_per_gpu]
            try:
                encoded = self._memory_for(batch[0].videos)
            except VideoDecodeError as error:
                self._skip(group[start:], str(error), answers)
                pbar.update(len(group) - start)
                return
            for q, answer in zip(batch, self._answer_batch(batch, encoded), strict=True):
                answers[q.slot] = answer
                self.journal.record(
                    {
                        "key": q.key,
                        "status": OK,
                        "task": q.task,
                        "doc_id": q.doc_id,
                        "videos": q.videos,
                        "durations": [e.duration for e in encoded],
                        "num_frames": [e.num_frames for e in encoded],
                        "answer": answer,
                        "rank": self._rank,
                    }
                )
            pbar.update(len(batch))

    def _answer(self, queries: list[Query], answers: dict) -> None:
        """Answer queries video by video (into `answers`, by slot)."""
        pbar = tqdm(total=len(queries), disable=self._rank != 0, desc="Hour-LLaVA")
        for group in self._groups(queries):
            self._run_group(group, answers, pbar)
        pbar.close()

    def _answer_across_ranks(self, pending: list[Query]) -> dict:
        """Every rank's pending queries shared out by video (one rank encodes each video), answered, and the
        answers exchanged."""
        mine = [q for _, q in share_work(pending, self._rank, self._world_size, key=lambda q: tuple(q.videos))]
        answers: dict = {}
        error = None
        try:
            self._answer(mine, answers)
        except Exception as failure:  # every rank must reach the exchange, or the others wait forever
            error = f"{type(failure).__name__}: {failure}"
            eval_logger.exception(f"hour_llava rank {self._rank}: answering failed")
        return gather_answers(answers, error, self._world_size)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; videos encoded once each (across ranks too), questions batched per video."""
        queries = [self._query(i, r) for i, r in enumerate(requests)]
        for q in queries:
            q.origin = self._rank
        self._finish_queries(queries)
        answers: dict = {}
        pending, from_journal, skipped_before = [], 0, len(self.skipped)
        for q in queries:
            cached = self.journal.lookup(q.key)
            if cached is not None:
                answers[q.slot] = cached
                from_journal += 1
            elif q.error:
                self._skip([q], q.error, answers)
            else:
                pending.append(q)
        start, before = time.perf_counter(), self.memories.stats.as_dict()
        if self.share_videos and distributed_ready(self._world_size):
            answers |= {slot: a for slot, a in self._answer_across_ranks(pending).items() if slot[0] == self._rank}
        else:
            self._answer(pending, answers)
        self._report(len(queries), from_journal, self.skipped[skipped_before:], before, time.perf_counter() - start)
        return [answers[q.slot] for q in queries]

    def _report(self, total: int, from_journal: int, skipped: list[dict], before: dict, seconds: float) -> None:
        """Log what this call did on this rank (requests, journal use, skips by reason, tower runs, memory reuse) and
        journal it as a stats line."""
        stats = {k: v - before[k] for k, v in self.memories.stats.as_dict().items() if k != "distinct_videos"}
        journal = f"{from_journal} from the journal" if self.journal.path else "journal off"
        eval_logger.info(
            f"hour_llava rank {self._rank}/{self._world_size}: {total} requests ({journal}) in {seconds:.1f} s; "
            f"vision tower ran on {stats['encoded_from_frames']} videos, {stats['encoded_from_features']} from "
            f"feature files, memory reused {stats['memory_hits']} times"
        )
        self.journal.record(
            {"status": STATS, "rank": self._rank, "world_size": self._world_size, "requests": total,
             "from_journal": from_journal, "skipped": len(skipped), **stats}
        )  # fmt: skip
        if skipped:
            eval_logger.warning(f"hour_llava rank {self._rank}: {skip_report(skipped)}")

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("hour_llava answers generate_until tasks only (all four video benchmarks are)")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("hour_llava does not implement multi-round generation")


class HourLlavaChat(HourLlava):
    """Chat-mode Hour-LLaVA (requests carry `doc_to_messages`); the same prompts and answers as simple mode."""

    is_simple = False

    def _query(self, index: int, request: Instance) -> Query:
        """Chat mode: (context, doc_to_messages, gen_kwargs, doc_id, task, split)."""
        context, doc_to_messages, gen_kwargs, doc_id, task, split = request.args
        query = Query(index, task, doc_id, [], context, [], dict(gen_kwargs or {}))
        try:
            messages = doc_to_messages(self._doc(task, split, doc_id))
        except VISUAL_ERRORS as error:
            return _failed(query, "doc_to_messages", error)
        try:
            query.messages, query.videos = convert_messages(messages)
        except ValueError as error:
            query.error = str(error)
            return query
        texts = [b["text"] for m in query.messages for b in m["content"] if b["type"] == "text"]
        query.prompt = "\n".join(texts) or context
        return query


def _block_to_ours(block: dict) -> dict:
    """An lmms-eval content block -> the processor's (`{"type": "video", "path": ...}` or text)."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    url = block.get("url") or block.get("path") or block.get("video")
    # lmms-eval files .webm under audio by extension; a video container is a video here.
    if kind == "video" or (kind == "audio" and isinstance(url, str) and url.lower().endswith(VIDEO_EXTENSIONS)):
        if not isinstance(url, (str, os.PathLike)):
            raise ValueError(f"video block with {type(url).__name__} content; Hour-LLaVA reads video files")
        return {"type": "video", "path": os.fspath(url)}
    raise ValueError(f"content of type {kind!r}; Hour-LLaVA answers about videos and text")


def convert_messages(messages: list[dict]) -> tuple[list[dict], list[str]]:
    """lmms-eval chat messages -> (our messages, video paths in order)."""
    converted, videos = [], []
    for message in messages:
        content = message.get("content", [])
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        ours = [_block_to_ours(block) for block in blocks]
        videos += [block["path"] for block in ours if block["type"] == "video"]
        converted.append({"role": message.get("role", "user"), "content": ours})
    return converted, videos
