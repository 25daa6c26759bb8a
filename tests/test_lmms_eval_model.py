"""The lmms-eval model in-process: one vision-tower run per video, answers from the journal on resume, unreadable
videos skipped and counted, chat and simple modes agreeing, bare letters for letter questions.

The real tiny checkpoint (saved with its remote code and loaded back through the Auto classes) and real videos;
tower calls are counted with a forward hook on the loaded model's own vision tower.
"""

from __future__ import annotations

import os

import pytest
from lmms_eval.api.instance import Instance

from dataset_builder.synthetic_video import write_video
from hour_llava_lmms.answers import asks_for_letter, format_answer
from hour_llava_lmms.model import HourLlava, HourLlavaChat
from hour_llava_testing.tiny_benchmarks import save_tiny_checkpoint

TASK, SPLIT = "tiny_mc", "test"
GEN = {"max_new_tokens": 4, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
QUESTIONS_PER_VIDEO = 3


def prompt(i: int) -> str:
    options = "\n".join(f"{c}. choice {c.lower()}{i}" for c in "ABCD")
    return f"Question {i}: which choice?\n{options}\nAnswer with the option's letter from the given choices directly."


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_model")
    checkpoint = save_tiny_checkpoint(str(root / "checkpoint"))
    videos = [write_video(root / f"v{i}.mp4", num_frames=8, fps=4, width=64, height=48) for i in range(2)]
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 512)
    missing = str(root / "missing.mp4")
    paths = [*videos, str(corrupt), missing]
    # Questions interleaved across videos, as lmms-eval hands them over (doc order, not video order).
    docs = [{"video": paths[v], "prompt": prompt(q * 10 + v)} for q in range(QUESTIONS_PER_VIDEO) for v in range(4)]
    return {"root": root, "checkpoint": checkpoint, "docs": docs, "videos": videos, "bad": paths[2:]}


def request(arguments: tuple, doc_id: int) -> Instance:
    metadata = {"task": TASK, "doc_id": doc_id, "repeats": 1, "split": SPLIT}
    return Instance("generate_until", arguments, idx=0, metadata=metadata)


def simple_requests(docs: list[dict]) -> list[Instance]:
    visual = lambda doc: [doc["video"]]
    return [request((d["prompt"], dict(GEN), visual, i, TASK, SPLIT), i) for i, d in enumerate(docs)]


def chat_requests(docs: list[dict]) -> list[Instance]:
    def messages(doc):
        return [
            {
                "role": "user",
                "content": [{"type": "video", "url": doc["video"]}, {"type": "text", "text": doc["prompt"]}],
            }
        ]

    return [request((d["prompt"], messages, dict(GEN), i, TASK, SPLIT), i) for i, d in enumerate(docs)]


class TowerCalls:
    """Forward calls of the loaded model's vision-tower embeddings (one per chunk of frames)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.model.vision_tower.embeddings.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


def load(cls, data, **kwargs):
    lm = cls(pretrained=data["checkpoint"], device="cpu", batch_size=2, **kwargs)
    lm.task_dict = {TASK: {SPLIT: data["docs"]}}
    return lm


def test_tower_runs_once_per_video_and_answers_are_letters(data):
    lm = load(HourLlava, data)
    counter = TowerCalls(lm.model)
    answers = lm.generate_until(simple_requests(data["docs"]))

    assert counter.calls == len(data["videos"])  # 2 readable videos x 3 questions: one tower run each
    assert lm.memories.stats.encoded_from_frames == len(data["videos"])
    good = [a for d, a in zip(data["docs"], answers, strict=True) if d["video"] not in data["bad"]]
    assert len(good) == len(data["videos"]) * QUESTIONS_PER_VIDEO
    assert all(a in {"A", "B", "C", "D"} for a in good), good

    bad = [a for d, a in zip(data["docs"], answers, strict=True) if d["video"] in data["bad"]]
    assert bad == [""] * (2 * QUESTIONS_PER_VIDEO)
    reasons = " ".join(entry["reason"] for entry in lm.skipped)
    assert len(lm.skipped) == 2 * QUESTIONS_PER_VIDEO and "file not found" in reasons and "corrupt.mp4" in reasons
    counter.handle.remove()


def test_chat_mode_gives_the_simple_answers_and_a_journal_resumes_without_the_tower(data, tmp_path):
    journal = str(tmp_path / "journal")
    simple = load(HourLlava, data, journal_dir=journal).generate_until(simple_requests(data["docs"]))

    chat = load(HourLlavaChat, data, journal_dir=journal)
    counter = TowerCalls(chat.model)
    resumed = chat.generate_until(chat_requests(data["docs"]))
    assert resumed == simple
    assert counter.calls == 0  # every readable question came from the journal written by the first run
    assert len(chat.skipped) == 2 * QUESTIONS_PER_VIDEO  # unreadable videos are retried, and skipped again
    assert os.path.exists(os.path.join(journal, "answers_rank0.jsonl"))


def test_feature_files_replace_the_tower(data, tmp_path):
    from modeling_hour_llava.features_hour_llava import save_feature_file

    lm = load(HourLlava, data, features_dir=str(tmp_path), video_root=str(data["root"]))
    video = data["videos"][0]
    pixels = lm.processor.video_processor.open_stream(video).decode_all()
    features = lm.model.model.vision_features(pixels)  # the tower's patch features, as the extractor stores them
    save_feature_file(tmp_path / "v0.safetensors", features.detach(), duration=2.0)
    counter = TowerCalls(lm.model)
    docs = [d for d in data["docs"] if d["video"] == video]
    lm.task_dict = {TASK: {SPLIT: docs}}
    answers = lm.generate_until(simple_requests(docs))
    assert counter.calls == 0 and lm.memories.stats.encoded_from_features == 1
    assert all(a in {"A", "B", "C", "D"} for a in answers)


@pytest.mark.parametrize(
    ("text", "prompt_text", "expected"),
    [
        ("The answer is (B).", prompt(0), "B"),
        ("C. choice c0", prompt(0), "C"),
        ("no letter here", prompt(0), "no letter here"),
        ("The answer is (B).", "Describe the video.", "The answer is (B)."),
        ("(A) yes", "What?\n(A) yes\n(B) no\nAnswer the question with the option letter", "A"),
    ],
)
def test_letter_questions_get_bare_letters(text, prompt_text, expected):
    assert format_answer(text, prompt_text) == expected


def test_tempcompass_prompt_asks_for_a_letter():
    assert asks_for_letter("How?\nA. fast\nB. slow\nPlease directly give the best option:")
    assert not asks_for_letter("Is it fast?\nPlease answer yes or no:")
