"""The frame-reading clip captioner (dataset_builder.construction.vision) on synthetic videos.

Through transformers: a tiny random Hour-LLaVA (`write_tiny_checkpoint`) loaded with AutoProcessor +
AutoModelForImageTextToText; a forward hook on the model records the pixel values that reach it, which must be
the synthetic video's frames at the planned times (compared with the frames the synthetic renderer draws), and its
garbage answers must go through retry-then-skip. Through HTTP: the local OpenAI-compatible server decodes the
base64 images of each request, checks their size and pixels against the renderer, and captions each clip from the
colour it sees; the run's rows load with the VideoMarathon builder.
"""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
import pytest
from PIL import Image
from test_construction import ChatServer, build_rows, canned_answer, config, read_rows

from dataset_builder.construction import (
    OpenAIBackend,
    StageSettings,
    TransformersVLMBackend,
    VisionCaptioner,
    run_pipeline,
)
from dataset_builder.construction.stages import make_clips
from dataset_builder.construction.synthetic import synthetic_jobs
from dataset_builder.construction.vision import clip_frame_times
from dataset_builder.synthetic_videomarathon import (
    SyntheticSpec,
    background_at,
    render_frame,
    write_synthetic_videomarathon,
)

SQUARE = SyntheticSpec(num_videos=2, min_duration=4, max_duration=5, fps=2.0, width=48, height=48, seed=3)
WIDE = SyntheticSpec(num_videos=2, min_duration=4, max_duration=6, fps=4.0, width=64, height=48, seed=7)
FRAMES_PER_CLIP = 2
CLIP_SECONDS = 2.0
DATA_URL = re.compile(r"^data:image/(png|jpeg);base64,(.+)$", re.DOTALL)


def expected_frames(timeline, spec: SyntheticSpec, clip_seconds: float, size: tuple[int, int]) -> list[np.ndarray]:
    """What each clip's frames must show, clip by clip: the renderer's frame at the decoded frame's time (the frame
    at or before each planned time), resized to `size` (height, width)."""
    frames = []
    for times in clip_frame_times(make_clips(timeline.duration, clip_seconds), FRAMES_PER_CLIP):
        for t in times:
            image = render_frame(timeline, math.floor(t * spec.fps) / spec.fps, spec.width, spec.height)
            frames.append(np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC)))
    return frames


# ---------------------------------------------------------------------------------------------------------------
# transformers: a tiny random Hour-LLaVA
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """(model, processor) of a tiny random Hour-LLaVA loaded through the Auto classes."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hour_llava_testing.tiny_model import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-vlm"), video_min_frames=4)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True).eval()
    return model, processor


def test_transformers_vlm_sees_the_clip_frames_and_garbage_is_retried_then_skipped(tmp_path, tiny_vlm):
    model, processor = tiny_vlm
    data = write_synthetic_videomarathon(tmp_path / "videos", SQUARE)
    seen: list[np.ndarray] = []  # the pixel values of every prompt that reached the model, in order

    def record(module, args, kwargs):
        if kwargs.get("pixel_values") is not None:  # the first forward of each generate; later steps use the cache
            seen.append(kwargs["pixel_values"].float().numpy())

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        backend = TransformersVLMBackend("tiny-hour-llava", tmp_path / "cache", processor_obj=processor,
                                         model_obj=model, batch_size=8)  # fmt: skip
        settings = StageSettings(max_new_tokens={"clip": 6, "split": 4, "event": 4, "global": 4, "qa": 4},
                                 max_attempts=2)  # fmt: skip
        captioner = VisionCaptioner(backend, frames_per_clip=FRAMES_PER_CLIP, max_side=64, batch_clips=8)
        run_config = config(tmp_path / "out", clip_seconds=CLIP_SECONDS, settings=settings, workers=1,
                            video_root=data.video_root)  # fmt: skip
        jobs = [job.__class__(job.video, job.source) for job in synthetic_jobs(data)]  # no duration: probed
        report = run_pipeline(jobs, backend, run_config, captioner=captioner)
    finally:
        hook.remove()
    clips = [len(make_clips(t.duration, CLIP_SECONDS)) for t in data.timelines]
    # a random model never writes the caption JSON: every clip asked twice, then skipped; the videos still finish
    assert report["done"] == 2 and report["failed"] == {}
    log = report["log"]
    assert log["asked"] == {"clip_captions": sum(clips)}
    assert log["malformed"]["clip_captions"] == 2 * sum(clips) and log["skipped"]["clip_captions"] == sum(clips)
    assert report["rows"] == 0
    assert backend.cost.images == 2 * FRAMES_PER_CLIP * sum(clips)
    # one batched generate per video and attempt, carrying every clip's frames in order
    assert [len(pixels) for pixels in seen] == [FRAMES_PER_CLIP * n for n in clips for _ in range(2)]
    side = processor.image_processor.size["height"]
    for pixels, timeline in zip(seen[::2], data.timelines, strict=True):
        truth = expected_frames(timeline, SQUARE, CLIP_SECONDS, (side, side))
        images = np.clip((pixels.transpose(0, 2, 3, 1) * 0.5 + 0.5) * 255, 0, 255)  # SigLIP's normalization undone
        assert [background_at(image) for image in images] == [background_at(t) for t in truth]
        assert float(np.abs(images - np.stack(truth)).mean()) < 12  # codec and resize losses only
    # the frames matter: a rerun reads every answer from the cache, keyed by the images too
    again = TransformersVLMBackend("tiny-hour-llava", tmp_path / "cache", processor_obj=processor, model_obj=model)
    captioner = VisionCaptioner(again, frames_per_clip=FRAMES_PER_CLIP, max_side=64)
    run_pipeline(jobs, again, config(tmp_path / "out2", clip_seconds=CLIP_SECONDS, settings=settings,
                                     video_root=data.video_root), captioner=captioner)  # fmt: skip
    assert again.cost.calls == 0 and again.cost.cache_hits == 2 * sum(clips)


# ---------------------------------------------------------------------------------------------------------------
# An OpenAI-compatible endpoint: images as base64 content parts
# ---------------------------------------------------------------------------------------------------------------
def decode_images(body: dict) -> tuple[str, list[np.ndarray], set[str]]:
    """The text part, the decoded images (H, W, 3) and the image formats of a chat request."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content, [], set()
    images, formats = [], set()
    for part in content:
        if part["type"] == "image_url":
            match = DATA_URL.match(part["image_url"]["url"])
            formats.add(match.group(1))
            images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(match.group(2)))).convert("RGB")))
    return next(p["text"] for p in content if p["type"] == "text"), images, formats


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_openai_endpoint_receives_the_clip_frames(tmp_path, image_format):
    data = write_synthetic_videomarathon(tmp_path / "videos", WIDE)
    received: list[tuple[str, list[np.ndarray]]] = []
    formats: set[str] = set()

    def respond(body):
        prompt, images, kinds = decode_images(body)
        formats.update(kinds)
        if not images:
            return canned_answer(prompt), 10, 5
        received.append((prompt, images))
        colours = " and ".join(dict.fromkeys(background_at(image) for image in images))
        return f'{{"summary": "A shape crosses a {colours} background.", "scene": "a {colours} wall"}}', 10, 5

    with ChatServer(respond) as server:
        backend = OpenAIBackend(server.url, "vlm", tmp_path / "cache", image_format=image_format, concurrency=2)
        captioner = VisionCaptioner(backend, frames_per_clip=FRAMES_PER_CLIP, max_side=32, batch_clips=2)
        run_config = config(tmp_path / "out", clip_seconds=CLIP_SECONDS, topics=("Scene",),
                            video_root=data.video_root)  # fmt: skip
        report = run_pipeline(synthetic_jobs(data), backend, run_config, captioner=captioner)
    assert report["done"] == 2 and report["failed"] == {}
    assert formats == {image_format}
    for timeline in data.timelines:  # requests of one video arrive in order within a batch of 2; match by prompt
        clips = make_clips(timeline.duration, CLIP_SECONDS)
        truth = expected_frames(timeline, WIDE, CLIP_SECONDS, (24, 32))
        for clip, start in zip(clips, range(0, len(truth), FRAMES_PER_CLIP), strict=True):
            prefix = f"You describe one short clip ({clip['start']:g}s to {clip['end']:g}s)"
            hits = [images for prompt, images in received if prompt.startswith(prefix)]
            expected = truth[start : start + FRAMES_PER_CLIP]
            match = [
                images for images in hits if [background_at(i) for i in images] == [background_at(t) for t in expected]
            ]
            assert match, f"no request carried the frames of {timeline.video} {clip}"
            images = match[0]
            assert [image.shape for image in images] == [(24, 32, 3)] * FRAMES_PER_CLIP
            assert float(np.abs(np.stack(images).astype(float) - np.stack(expected)).mean()) < 12
    # captions carry what the server saw, so each video's rows load with the builder
    assert read_rows(report["rows_path"]) and report["rows"] == 2 * 2 * 2  # Scene: 2 tasks, 2 types, 2 videos
    assert len(build_rows(report["rows_path"], data.video_root, str(tmp_path / "hf"))) == report["rows"]
    assert backend.cost.images == FRAMES_PER_CLIP * sum(
        len(make_clips(t.duration, CLIP_SECONDS)) for t in data.timelines
    )
