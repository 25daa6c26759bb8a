"""Clip captions from a vision-language model that reads the frames of each clip.

    captioner = VisionCaptioner(TransformersVLMBackend("Qwen/Qwen2-VL-2B-Instruct"), frames_per_clip=4)
    captioner = VisionCaptioner(OpenAIBackend("http://localhost:8000/v1", model="Qwen/Qwen2-VL-7B-Instruct"))
    run_pipeline(jobs, llm=text_backend, captioner=captioner, config=PipelineConfig("out", video_root="videos"))

Each clip gets `frames_per_clip` frames at the centres of equal parts of the clip, decoded by the package's own
loader (`modeling_hour_llava.video_loading_hour_llava`: seeks, resizes while decoding, every core) in chunks, so an
hour-long video never sits in memory: at most `batch_clips` clips' frames are held while their prompts are asked.
A file that cannot be decoded raises `VideoDecodeError` naming it; the pipeline fails that video and moves on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from . import schemas
from .backends import Backend
from .stages import JobError, StageContext, VideoJob, ask


def frame_size(info, max_side: int) -> tuple[int, int]:
    """(height, width) of a `VideoInfo`'s aspect ratio with the longer side at most `max_side` (never upscaled)."""
    scale = min(1.0, max_side / max(info.width, info.height))
    return max(1, round(info.height * scale)), max(1, round(info.width * scale))


def clip_frame_times(clips: list[dict], frames_per_clip: int) -> list[np.ndarray]:
    """Per clip, `frames_per_clip` times (seconds) at the centres of equal parts of the clip."""
    if frames_per_clip < 1:
        raise ValueError(f"frames_per_clip must be at least 1, got {frames_per_clip}")
    centres = (np.arange(frames_per_clip) + 0.5) / frames_per_clip
    return [clip["start"] + centres * (clip["end"] - clip["start"]) for clip in clips]


def clip_frames(
    path: str | os.PathLike,
    clips: list[dict],
    frames_per_clip: int = 4,
    max_side: int = 448,
    backend: str = "auto",
    threads: int = 0,
    chunk_frames: int = 64,
) -> Iterator[tuple[dict, list[np.ndarray], np.ndarray]]:
    """Yield (clip, its frames as (H, W, 3) uint8 arrays, their planned times in seconds) clip by clip, decoding
    the video in chunks of `chunk_frames` sampled frames; frames shared by neighbouring clips are decoded once."""
    # imported here: modeling_hour_llava imports transformers, which text-only runs do not need
    from modeling_hour_llava.video_loading_hour_llava import FrameStream, probe_video, resolve_backend

    info = probe_video(path)
    times = clip_frame_times(clips, frames_per_clip)
    wanted = [np.clip(np.floor(t * info.fps).astype(np.int64), 0, info.num_frames - 1) for t in times]
    indices = np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)
    positions = [np.searchsorted(indices, w) for w in wanted]
    rate = frames_per_clip / max(1e-6, max(c["end"] - c["start"] for c in clips))
    workers = threads or os.cpu_count() or 1
    stream = FrameStream(
        info, indices, frame_size(info, max_side), rate, resolve_backend(backend), workers, chunk_frames
    )
    decoded: dict[int, np.ndarray] = {}
    chunks, next_position, clip_index = iter(stream), 0, 0
    while clip_index < len(clips):
        needed = int(positions[clip_index].max())
        while next_position <= needed:
            for frame in next(chunks):  # (3, H, W) uint8
                decoded[next_position] = frame.permute(1, 2, 0).numpy()
                next_position += 1
        yield clips[clip_index], [decoded[int(p)] for p in positions[clip_index]], times[clip_index]
        clip_index += 1
        keep_from = int(positions[clip_index].min()) if clip_index < len(clips) else next_position
        for position in [p for p in decoded if p < keep_from]:
            del decoded[position]


class VisionCaptioner:
    """Six-aspect clip captions from a VLM backend (`TransformersVLMBackend`, or `OpenAIBackend` on a vision model)
    that sees `frames_per_clip` frames of each clip (longer side `max_side` px); clips are asked `batch_clips` at a
    time. The job's video file is `job.path` (the pipeline sets it from its video roots)."""

    def __init__(
        self,
        backend: Backend,
        frames_per_clip: int = 4,
        max_side: int = 448,
        batch_clips: int = 8,
        decode_backend: str = "auto",
        threads: int = 0,
    ):
        self.backend, self.frames_per_clip, self.max_side = backend, frames_per_clip, max_side
        self.batch_clips, self.decode_backend, self.threads = max(1, batch_clips), decode_backend, threads

    def caption(self, ctx: StageContext, job: VideoJob, clips: list[dict]) -> list[dict | None]:
        """Captions of every clip (None for a clip whose answers never validated), in order."""
        if not job.path:
            raise ValueError(f"{job.key}: VisionCaptioner needs the video file; give the pipeline video_root(s)")
        frames = clip_frames(
            job.path,
            clips,
            self.frames_per_clip,
            self.max_side,
            self.decode_backend,
            self.threads,
            self.frames_per_clip * self.batch_clips,
        )
        from modeling_hour_llava.video_loading_hour_llava import VideoDecodeError

        results: list[dict | None] = []
        batch: list[tuple[dict, list[np.ndarray], np.ndarray]] = []
        try:
            for item in frames:
                batch.append(item)
                if len(batch) == self.batch_clips:
                    results += self._ask(ctx, batch)
                    batch = []
        except VideoDecodeError as error:
            raise JobError(f"{job.key}: cannot read the video: {error}", "video") from error
        return results + (self._ask(ctx, batch) if batch else [])

    def _ask(self, ctx: StageContext, batch: list[tuple[dict, list[np.ndarray], np.ndarray]]) -> list[dict | None]:
        template = ctx.prompts.clip_caption_frames
        prompts = [
            template.format(
                start=clip["start"],
                end=clip["end"],
                num_frames=len(frames),
                times=", ".join(f"{t:.1f}s" for t in times),
            )
            for clip, frames, times in batch
        ]
        images = [frames for _, frames, _ in batch]
        answers = ask(ctx, "clip_captions", prompts, schemas.CLIP_CAPTION, backend=self.backend, images=images)
        return [
            None if answer is None else {**clip, "captions": answer}
            for (clip, _, _), answer in zip(batch, answers, strict=True)
        ]
