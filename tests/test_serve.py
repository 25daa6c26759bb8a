"""Serving a checkpoint over the OpenAI chat-completions API, tested with the unpatched `openai` client.

`transformers serve --trust-remote-code` cannot load a remote-code model (the first test shows its error, and
fails the day it can, so the docs can point at it again); `python -m modeling_hour_llava.serve` runs the same server
able to load it. Its answers to a video question (the video as a local path and as a `file://` URL) and to a
text-only question equal `generate`'s on the same checkpoint, and its prompt holds the whole video at 1 fps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dataset_builder.synthetic_video import write_video
from hour_llava_testing.tiny_model import write_tiny_checkpoint

MAX_NEW_TOKENS = 6
MIN_FRAMES = 8
STARTUP_SECONDS = 180
TRANSFORMERS_CLI = Path(sys.executable).with_name("transformers")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_MODULES_CACHE",)}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny", video_min_frames=MIN_FRAMES)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    return str(write_video(tmp_path_factory.mktemp("serve_video") / "clip.mp4", num_frames=100, fps=5))  # 20 s


def test_transformers_serve_cannot_load_a_remote_code_model(checkpoint, tmp_path):
    process = subprocess.run(
        [
            str(TRANSFORMERS_CLI),
            "serve",
            "--trust-remote-code",
            "--port",
            str(free_port()),
            "--device",
            "cpu",
            checkpoint,
        ],
        env=server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
    )
    assert process.returncode != 0
    assert "module transformers has no attribute HourLlavaForConditionalGeneration" in process.stderr


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """`python -m modeling_hour_llava.serve CHECKPOINT` on a free local port; yields its base URL."""
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "modeling_hour_llava.serve", checkpoint, "--port", str(port), "--device", "cpu"],
        env=server_env(tmp),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited:\n{(tmp / 'server.log').read_text()[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("the server did not start in time") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def complete(server: str, checkpoint: str, content, stream: bool = False):
    """One greedy chat completion of a user turn through the unpatched `openai` client."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=300)
    return client.chat.completions.create(
        model=checkpoint,
        messages=[{"role": "user", "content": content}],
        max_tokens=MAX_NEW_TOKENS,
        temperature=0,
        stream=stream,
    )


def ask(server: str, checkpoint: str, content) -> tuple[str, int]:
    answer = complete(server, checkpoint, content)
    return answer.choices[0].message.content, answer.usage.prompt_tokens


def ask_streaming(server: str, checkpoint: str, content) -> str:
    chunks = complete(server, checkpoint, content, stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def generate_locally(checkpoint: str, content) -> tuple[str, int]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, trust_remote_code=True).eval()
    batch = processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    prompt_length = batch["input_ids"].shape[1]
    return processor.decode(generated[0, prompt_length:], skip_special_tokens=True), prompt_length


def video_content(url: str) -> list[dict]:
    return [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "What colour is the square?"}]


def test_a_video_question_answers_as_generate_does_from_the_whole_video(server, checkpoint, video):
    local = [{"type": "video", "path": video}, {"type": "text", "text": "What colour is the square?"}]
    expected, prompt_length = generate_locally(checkpoint, local)
    for url in (video, f"file://{video}"):
        answer, prompt_tokens = ask(server, checkpoint, video_content(url))
        assert answer == expected, url
        assert prompt_tokens == prompt_length, url  # 20 frames (1 per second), not the 32 transformers serve asks


def test_a_text_question_answers_as_generate_does_also_streamed(server, checkpoint):
    expected, prompt_length = generate_locally(checkpoint, "What colour is the square?")
    answer, prompt_tokens = ask(server, checkpoint, "What colour is the square?")
    assert (answer, prompt_tokens) == (expected, prompt_length)
    assert ask_streaming(server, checkpoint, "What colour is the square?") == expected


def test_a_bad_video_is_refused_with_its_reason(server, checkpoint, tmp_path):
    from openai import APIStatusError

    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    with pytest.raises(APIStatusError) as error:
        ask(server, checkpoint, video_content(str(broken)))
    assert error.value.status_code == 400
    assert "broken.mp4: not a readable video container" in str(error.value)
