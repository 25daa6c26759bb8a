"""Hour-LLaVA on an hour of video, end to end, offline, on the CPU: the package's embedded default model answers
questions about a few seconds of a long video.

    make demo                      # or: .venv/bin/python demo.py --minutes 60 --seed 0

It writes a long video of the recall suite (`research.recall.recall_suite`, its one-flash form `ONE_FLASH`:
solid-colour scenes of 5 to 15 s and one coloured shape flashed for 2 or 3 seconds, cached under --workdir), loads
the embedded model (`checkpoints/hour-llava-recall-tiny`, trained on such videos by
`research/recall/recall_curriculum.py`) the way any Hub checkpoint loads, with
`AutoModelForImageTextToText.from_pretrained(..., trust_remote_code=True)`, decodes the video at 1 fps, encodes it
once into its memory repository and answers the three recall questions (the flash's colour, its shape, the
background when it flashed) from that memory, printing the truth next to each answer, the token budget and the time
of every step.

The model is tiny (4 MB: a frozen 2-layer vision tower pretrained for this world, projector, 2 MemAug blocks and a
2-layer decoder over a 600-token vocabulary) and knows only this kind of video and question; its held-out accuracy
per video length is in research/recall/results/recall_curriculum.json. `--model` runs any other Hour-LLaVA checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from modeling_hour_llava import end_of_turn_token_ids, video_token_budget
from research.recall.recall_suite import ONE_FLASH, RecallSpec, write_recall_suite

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "checkpoints" / "hour-llava-recall-tiny"


def seconds_since(start: float) -> str:
    return f"{time.perf_counter() - start:6.2f} s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the video (5 to 60 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="which video (the suite's content is seeded)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint folder or Hub id")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "demo")
    args = parser.parse_args(argv)
    if not 5 <= args.minutes <= 60:
        parser.error(f"--minutes {args.minutes}: the suite's videos are 5 to 60 minutes long")
    return args


def demo_spec(minutes: float, seed: int) -> RecallSpec:
    """One one-flash recall video of exactly `minutes` (whole seconds), its content drawn from `seed`."""
    return RecallSpec(num_videos=1, min_minutes=minutes, max_minutes=minutes, split="demo", seed=seed, **ONE_FLASH)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    spec = demo_spec(args.minutes, args.seed)
    suite = write_recall_suite(args.workdir / f"{args.minutes:g}min-seed{args.seed}", spec)
    timeline = suite.timelines[0]
    video = str(Path(suite.video_root) / "recall" / timeline.video)
    flashes = ", ".join(f"{f.colour} {f.shape} at {f.start // 60}:{f.start % 60:02d}" for f in timeline.flashes)
    print(f"video: {video}\n  {timeline.duration // 60} min {timeline.duration % 60} s, {len(timeline.scenes)} scenes; "
          f"flashes ({flashes}) are {sum(f.end - f.start for f in timeline.flashes)} s of it   "
          f"{seconds_since(start)}")  # fmt: skip

    start = time.perf_counter()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(args.model, trust_remote_code=True).eval()
    print(f"loaded {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters)   "
          f"{seconds_since(start)}")  # fmt: skip

    start = time.perf_counter()
    stream = processor.video_processor.open_stream(video)
    with torch.inference_mode():
        memory = model.encode_video(video_streams=[stream])
    num_frames = memory.num_frames[0]
    print(f"decoded {num_frames} frames at 1 fps and encoded them once (tower, pooling, projector)   "
          f"{seconds_since(start)}")  # fmt: skip
    memory_tokens, decoder_tokens = video_token_budget(num_frames, model.config)
    print(f"memory repository: {memory_tokens:,} tokens; after forgetting the decoder sees {decoder_tokens:,} "
          f"video tokens ({100 * decoder_tokens / memory_tokens:.1f} %); MemAug reads the whole memory")  # fmt: skip

    correct, end_of_turn = 0, end_of_turn_token_ids(processor.tokenizer, model.generation_config)
    rows = [r for r in suite.rows if r["question_type"] == "open-ended"]
    for row in rows:
        start = time.perf_counter()
        messages = [{"role": "user", "content": [{"type": "video", "path": video},
                                                 {"type": "text", "text": row["question"]}]}]  # fmt: skip
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        # The memory stands in for the frames: only the text is tokenized, nothing is decoded again.
        prompt = processor.text_for_encoded_videos(text, [num_frames], [float(timeline.duration)], return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**prompt, video_memory=memory, max_new_tokens=args.max_new_tokens,
                                    do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
                                    eos_token_id=end_of_turn)  # fmt: skip
        answer = processor.tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        answer = answer.strip().split()[0].strip(".").lower() if answer.strip() else ""
        right = answer == row["answer"]
        correct += right
        verdict = "right" if right else "WRONG"
        print(f"Q: {row['question']}\nA: {answer}   (truth: {row['answer']}; {verdict})   [{row['recall_task']}] "
              f"{prompt['input_ids'].shape[1]:,} prompt tokens   {seconds_since(start)}")  # fmt: skip
    print(f"{correct} of {len(rows)} answers right (chance: about 1 in 4)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
