"""Hour-LLaVA on an hour of video, end to end, offline, on the CPU: where a needle is in a haystack of flashes, and
where MemAug looked to find it.

    make demo                              # or: hour-llava-demo --minutes 60 --seed 0   (python demo.py ...)

It writes a video of the demo's world (`hour_llava_demo.world`: scenes of 5 to 15 s at 1 fps, a coloured shape
flashed for 2-3 s every 5 to 12 s, about 400 flashes in an hour, and exactly one of them, the needle, pink), loads
the embedded model (`checkpoints/hour-llava-recall-tiny`: weights and processor files, its code written from this
package into a cache folder first) the way any Hub checkpoint loads, with
`AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)`, decodes the video at 1 fps, encodes it
once into its memory repository, and asks what only the needle's 2-3 seconds answer: which shape flashed in pink.
It prints the answer and the truth, whether the needle was among the frames the decoder sees after forgetting (16 of
3,600 for an hour: almost never), and the time where MemAug's cross-attention into the full memory put most of its
weight (`output_memory_attentions=True`). It writes a picture (SVG) of the hour: the kept frames, the needle, and
MemAug's attention over time for each question.

The model is tiny (4 MB: a frozen 2-layer vision tower pretrained for this world, projector, 2 MemAug blocks, a
2-layer decoder over a 600-token vocabulary), trained by `research/recall/recall_demo_model.py` with the package's
`train.py`; it knows only this world. `--model` runs any other Hour-LLaVA checkpoint on the same video.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import DEFAULT_CHECKPOINT, default_cache_dir, materialise_checkpoint
from .picture import QuestionPanel, clock, write_picture
from .world import (
    DEMO_TASKS,
    DemoQuestion,
    NeedleWorld,
    Timeline,
    demo_questions,
    demo_timeline,
    needle_of,
    write_timeline_video,
)

MINUTES = (5.0, 60.0)
PEAK_TOLERANCE_SECONDS = 3  # "at the moment": the attention peak within this many seconds of the asked-about flash


def seconds_since(start: float) -> str:
    return f"{time.perf_counter() - start:6.2f} s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hour-llava-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the video (5 to 60 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="which video (its content is drawn from the seed)")
    parser.add_argument("--model", default=None, help=f"checkpoint folder or Hub id (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--workdir", type=Path, default=None,
                        help=f"where the video, the loadable model and the picture go (default: "
                        f"{default_cache_dir() / 'demo'})")  # fmt: skip
    parser.add_argument("--picture", type=Path, default=None, help="the SVG's path (default: in --workdir)")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    args = parser.parse_args(argv)
    if not MINUTES[0] <= args.minutes <= MINUTES[1]:
        parser.error(f"--minutes {args.minutes:g}: the demo's videos are {MINUTES[0]:g} to {MINUTES[1]:g} minutes long")
    args.workdir = args.workdir or default_cache_dir() / "demo"
    return args


def loadable_model(model: str | None, workdir: Path) -> str:
    """The folder or Hub id to load: a local folder without code (the embedded default) is materialised first."""
    if model is None:
        if not (DEFAULT_CHECKPOINT / "config.json").exists():
            raise SystemExit(f"the embedded model is not at {DEFAULT_CHECKPOINT} (a clone of the repository has it); "
                             "pass --model FOLDER_OR_HUB_ID")  # fmt: skip
        model = str(DEFAULT_CHECKPOINT)
    folder = Path(model).expanduser()
    if folder.is_dir() and not any(folder.glob("*.py")):
        return str(materialise_checkpoint(folder, workdir))
    return model


def kept_video_frames(config, num_frames: int) -> list[int] | None:
    """The video frames whose tokens reach the decoder after temporal forgetting, for forgetting that does not
    depend on content or question (`uniform`); None for the other modes."""
    from modeling_hour_llava.memory_hour_llava import resample_frame_indices, temporal_forgetting

    if config.temporal_forgetting_mode != "uniform":
        return None
    memory_frames = max(num_frames, config.memory_min_frames)
    kept = temporal_forgetting(memory_frames, config)
    if num_frames < config.memory_min_frames:
        kept = resample_frame_indices(num_frames, config.memory_min_frames)[kept]
    return sorted({int(frame) for frame in kept})


def attention_over_frames(blocks: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """MemAug's attention per video frame for one question: the mass of every block's cross-attention per frame
    (`output_memory_attentions`), averaged over blocks and heads: (T,), summing to 1."""
    return torch.stack([block.float().mean(dim=0) for block in blocks]).mean(dim=0)


def per_second(values: torch.Tensor, frame_seconds: list[float], duration: int) -> list[float]:
    """Frame values summed into the seconds of the video they show."""
    seconds = [0.0] * duration
    for value, second in zip(values.tolist(), frame_seconds, strict=True):
        seconds[min(duration - 1, max(0, int(second)))] += value
    return seconds


def within(second: int, moment: tuple[int, int], tolerance: int = PEAK_TOLERANCE_SECONDS) -> bool:
    """Whether `second` lies in [start - tolerance, end - 1 + tolerance]."""
    return moment[0] - tolerance <= second <= moment[1] - 1 + tolerance


@dataclass
class Answer:
    """One question about a video: the model's answer, whether the asked-about moment was among the frames the
    decoder saw (None: unknown for the model's forgetting mode), MemAug's attention per second of the video and its
    peak (-1 without MemAug)."""

    question: DemoQuestion
    answer: str
    moment_kept: bool | None
    attention: list[float]
    peak_second: int
    prompt_tokens: int
    seconds: float

    @property
    def right(self) -> bool:
        return self.answer == self.question.answer


@dataclass
class VideoResult:
    """Everything the demo reports about one video."""

    timeline: Timeline
    video: str
    num_frames: int
    memory_tokens: int
    decoder_tokens: int
    kept_seconds: list[int] | None
    encode_seconds: float
    answers: list[Answer]


def load_model(model: str | None, workdir: Path):
    """(processor, model, folder loaded) of `--model` (default: the embedded checkpoint, materialised), as a Hub
    user loads a checkpoint: Auto classes, `trust_remote_code=True`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = loadable_model(model, workdir)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    loaded = AutoModelForImageTextToText.from_pretrained(source, trust_remote_code=True).eval()
    return processor, loaded, source


def answer_video(
    processor, model, timeline: Timeline, video: str, max_new_tokens: int = 4, tasks: tuple[str, ...] = DEMO_TASKS
) -> VideoResult:
    """Encode `video` once and ask the demo's questions about it (`demo_questions`, of `tasks`) from that memory."""
    from modeling_hour_llava import end_of_turn_token_ids, video_token_budget

    start = time.perf_counter()
    stream = processor.video_processor.open_stream(video)
    with torch.inference_mode():
        memory = model.encode_video(video_streams=[stream])
    num_frames = memory.num_frames[0]
    frame_seconds = [float(t) for t in stream.times]
    encode_seconds = time.perf_counter() - start
    memory_tokens, decoder_tokens = video_token_budget(num_frames, model.config)
    kept = kept_video_frames(model.config, num_frames)
    kept_seconds = sorted({int(frame_seconds[f]) for f in kept}) if kept is not None else None
    end_of_turn = end_of_turn_token_ids(processor.tokenizer, model.generation_config)
    answers = []
    for question in demo_questions(timeline, tasks):
        start = time.perf_counter()
        messages = [{"role": "user", "content": [{"type": "video", "path": video},
                                                 {"type": "text", "text": question.question}]}]  # fmt: skip
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        # The memory stands in for the frames: only the text is tokenized, nothing is decoded again.
        prompt = processor.text_for_encoded_videos(text, [num_frames], [float(timeline.duration)], return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**prompt, video_memory=memory, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=processor.tokenizer.pad_token_id, eos_token_id=end_of_turn,
                                    output_memory_attentions=True, return_dict_in_generate=True)  # fmt: skip
        generated = output.sequences[0, prompt["input_ids"].shape[1] :]
        reply = processor.tokenizer.decode(generated, skip_special_tokens=True)
        word = reply.strip().split()[0].strip(".").lower() if reply.strip() else ""
        blocks = output.memory_attentions[0] if output.memory_attentions else None
        if blocks is None:
            attention, peak = [0.0] * timeline.duration, -1
        else:
            attention = per_second(attention_over_frames(blocks), frame_seconds, timeline.duration)
            peak = max(range(len(attention)), key=attention.__getitem__)
        moment_kept = None
        if kept_seconds is not None:
            moment_kept = any(question.moment[0] <= second < question.moment[1] for second in kept_seconds)
        answers.append(Answer(question, word, moment_kept, attention, peak, prompt["input_ids"].shape[1],
                              time.perf_counter() - start))  # fmt: skip
    return VideoResult(timeline, video, num_frames, memory_tokens, decoder_tokens, kept_seconds, encode_seconds,
                       answers)  # fmt: skip


def print_answer(answer: Answer) -> None:
    question = answer.question
    kept = {None: "unknown", True: "yes", False: "no"}[answer.moment_kept]
    peak = answer.peak_second
    peak_text = "none (no MemAug)" if peak < 0 else f"{clock(peak)} ({100 * answer.attention[peak]:.1f} % of its mass)"
    print(f"Q: {question.question}\nA: {answer.answer}   (truth: {question.answer}; "
          f"{'right' if answer.right else 'WRONG'})   [{question.task}] {answer.prompt_tokens:,} prompt tokens   "
          f"{answer.seconds:6.2f} s\n   asked-about moment {clock(question.moment[0])}-{clock(question.moment[1])}; "
          f"among the frames the decoder saw: {kept}; MemAug's attention peak: {peak_text}")  # fmt: skip


def picture_of(result: VideoResult, path: str | Path) -> str:
    """Write the picture of one video's answers (SVG); returns its path."""
    panels = [QuestionPanel(a.question.task, a.question.question, a.answer, a.question.answer, a.question.moment,
                            a.attention, a.peak_second) for a in result.answers]  # fmt: skip
    minutes = result.timeline.duration // 60
    title = f"Hour-LLaVA on {minutes} min of video: the needle, what the decoder saw, where MemAug looked"
    return write_picture(path, title, result.timeline.duration, result.kept_seconds, panels)


def describe_video(timeline: Timeline, path: str) -> str:
    needle = needle_of(timeline)
    return (f"video: {path}\n  {timeline.duration // 60} min {timeline.duration % 60} s at 1 fps: "
            f"{len(timeline.scenes)} scenes, {len(timeline.flashes)} flashes of 2-3 s; one of them, the needle, is "
            f"the only {needle.colour} one: a {needle.shape} at {clock(needle.start)}-{clock(needle.end)} on "
            f"{timeline.background_at(needle.start)}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    world = NeedleWorld()
    timeline = demo_timeline(args.minutes, args.seed, world)
    video = write_timeline_video(args.workdir / "videos" / timeline.video, timeline, world.size)
    print(f"{describe_video(timeline, video)}   {seconds_since(start)}")

    start = time.perf_counter()
    processor, model, source = load_model(args.model, args.workdir)
    print(f"loaded {args.model or DEFAULT_CHECKPOINT} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
          f"parameters) from {source}   {seconds_since(start)}")  # fmt: skip

    result = answer_video(processor, model, timeline, video, args.max_new_tokens)
    print(f"decoded {result.num_frames} frames at 1 fps and encoded them once (tower, pooling, projector)   "
          f"{result.encode_seconds:6.2f} s")  # fmt: skip
    kept = result.kept_seconds
    frames_seen = f"{len(kept)} frames, one every {timeline.duration / len(kept):.0f} s" if kept else "its frames"
    print(f"memory repository: {result.memory_tokens:,} tokens; after forgetting the decoder sees "
          f"{result.decoder_tokens:,} video tokens ({100 * result.decoder_tokens / result.memory_tokens:.1f} %: "
          f"{frames_seen}); MemAug reads the whole memory")  # fmt: skip
    for answer in result.answers:
        print_answer(answer)
    picture = picture_of(result, args.picture or args.workdir / f"{Path(timeline.video).stem}.svg")
    chances = " and ".join(f"1 in {round(1 / a.question.chance)}" for a in result.answers)
    print(f"{sum(a.right for a in result.answers)} of {len(result.answers)} answers right (guessing: {chances})")
    print(f"picture: {picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
