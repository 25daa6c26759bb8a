"""Hour-LLaVA on one hour of video, end to end, on the CPU: decode at 1 fps, encode once, ask several questions.

    make demo                      # or: .venv/bin/python demo.py --minutes 60 --questions 3

It writes a synthetic video (cached under --workdir), runs the processor (1-fps decoding, chat template, placeholder
expansion), encodes the video once into a reusable memory, and answers each question from that memory, printing
the token budget and the time of every step.

Until the trained default model lands, the model is tiny and randomly initialised (seeded): the token counts and
timings are real, the answers are not.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import SiglipImageProcessor

from dataset_builder.synthetic_video import write_video
from dataset_builder.tiny_tokenizer import build_tokenizer
from modeling_hour_llava import (
    HourLlavaConfig,
    HourLlavaForConditionalGeneration,
    HourLlavaProcessor,
    HourLlavaVideoProcessor,
    probe_video,
    video_token_budget,
)

QUESTIONS = [
    "What colour is the square?",
    "Which shape appears after the red scene?",
    "How many times does it appear?",
    "What happens at the end of the video?",
]


def tiny_random_model(tokenizer) -> HourLlavaForConditionalGeneration:
    """The paper's geometry (SigLIP 384 px / 14 px patches, 8x8 memory grid, 4 MemAug blocks), tiny widths."""
    config = HourLlavaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 384,
            "patch_size": 14,
        },
        text_config={
            "model_type": "qwen2",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
    )
    torch.manual_seed(0)
    return HourLlavaForConditionalGeneration(config).eval()


def seconds_since(start: float) -> str:
    return f"{time.perf_counter() - start:6.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the synthetic video (60 for an hour)")
    parser.add_argument("--questions", type=int, default=3, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path(".cache/demo"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    seconds = int(args.minutes * 60)
    video = args.workdir / f"synthetic_{seconds}s.mp4"
    if not video.exists():
        start = time.perf_counter()
        args.workdir.mkdir(parents=True, exist_ok=True)
        partial = video.with_suffix(".partial.mp4")
        write_video(partial, num_frames=seconds * 2, fps=2, width=192, height=108)
        partial.replace(video)
        print(f"wrote {video} ({seconds} s at 2 fps)          {seconds_since(start)}")

    tokenizer = build_tokenizer()
    model = tiny_random_model(tokenizer)
    processor = HourLlavaProcessor(
        image_processor=SiglipImageProcessor(),
        tokenizer=tokenizer,
        video_processor=HourLlavaVideoProcessor(),
        token_geometry=HourLlavaProcessor.geometry_from_config(model.config),
    )

    start = time.perf_counter()
    first = [
        {"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": QUESTIONS[0]}]}
    ]
    batch = processor.apply_chat_template(
        first, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True
    )
    frames = batch["pixel_values_videos"]
    info = probe_video(video)
    durations = [info.num_frames / info.fps]
    print(
        f"decoded {frames.shape[0]} frames (1 fps, at least 128), {tuple(frames.shape[1:])} uint8"
        f"   {seconds_since(start)}"
    )

    start = time.perf_counter()
    with torch.inference_mode():
        memory = model.encode_video(pixel_values_videos=frames, video_num_frames=batch["video_num_frames"])
    print(f"encoded the video once (SigLIP, 8x8 pooling, projector)          {seconds_since(start)}")
    memory_tokens, decoder_tokens = video_token_budget(frames.shape[0], model.config)
    print(f"memory repository: {memory_tokens:,} tokens; decoder sees {decoder_tokens:,} video tokens")

    for question in QUESTIONS[: args.questions]:
        start = time.perf_counter()
        messages = [
            {"role": "user", "content": [{"type": "video", "path": str(video)}, {"type": "text", "text": question}]}
        ]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        # The memory stands in for the frames: only the text is tokenized, nothing is decoded again.
        prompt = processor.text_for_encoded_videos(
            text, batch["video_num_frames"].tolist(), durations, return_tensors="pt"
        )
        with torch.inference_mode():
            output = model.generate(
                **prompt,
                video_memory=memory,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        print(
            f"Q: {question}\nA: {answer!r} (random weights)    prompt {prompt['input_ids'].shape[1]:,} tokens"
            f"    {seconds_since(start)}"
        )


if __name__ == "__main__":
    main()
