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


def test_paths_outside_the_video_folder_are_skipped_unopened_and_every_skip_is_reported_exactly(data, tmp_path):
    """An LVBench-style folder with one readable video; rows that climb out of it (`../somewhere/real.mp4`, an
    absolute path) to a real video, a missing video asked about twice, and a row through LVBench's own
    `doc_to_visual`, whose bare `assert` fails for a missing file. No journal."""
    import shutil

    from lmms_eval.tasks.lvbench.utils import lvbench_doc_to_visual
    from loguru import logger

    from hour_llava_lmms.tasks.lvbench import doc_to_visual

    folder, outside = tmp_path / "lvbench", tmp_path / "somewhere"
    folder.mkdir()
    outside.mkdir()
    shutil.copy(data["videos"][0], folder / "a.mp4")
    shutil.copy(data["videos"][1], outside / "real.mp4")  # readable: it must stay unopened all the same
    rows = ["a.mp4", "../somewhere/real.mp4", str(outside / "real.mp4"), "missing.mp4", "missing.mp4", "nope.mp4"]
    docs = [{"video_path": path, "prompt": prompt(i)} for i, path in enumerate(rows)]
    visual = [doc_to_visual] * 5 + [lvbench_doc_to_visual]
    requests = [
        request((d["prompt"], dict(GEN), visual[i], i, TASK, SPLIT), i) for i, d in enumerate(docs)
    ]  # fmt: skip

    lm = load(HourLlava, data)
    lm.task_dict = {TASK: {SPLIT: docs}}
    counter = TowerCalls(lm.model)
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(str(message)), level="INFO")
    old = os.environ.get("HOUR_LLAVA_LVBENCH_VIDEOS")
    os.environ["HOUR_LLAVA_LVBENCH_VIDEOS"] = str(folder)
    try:
        answers = lm.generate_until(requests)
    finally:
        logger.remove(sink)
        counter.handle.remove()
        os.environ.pop("HOUR_LLAVA_LVBENCH_VIDEOS") if old is None else os.environ.update(HOUR_LLAVA_LVBENCH_VIDEOS=old)

    assert answers[0] in {"A", "B", "C", "D"} and answers[1:] == [""] * 5
    assert counter.calls == 1  # a.mp4 only: the real video outside the folder was never decoded
    assert "real.mp4" not in {os.path.basename(path) for path, *_ in lm.memories.stats.videos}  # not even tried
    reasons = {entry["doc_id"]: entry["reason"] for entry in lm.skipped}
    assert "leaves the benchmark's video folder" in reasons[1] and "leaves the benchmark's video folder" in reasons[2]
    assert "file not found" in reasons[3] or "missing.mp4" in reasons[3]
    assert "AssertionError at tasks/lvbench/utils.py:" in reasons[5] and "assert os.path.exists" in reasons[5]
    log = "".join(messages)
    # 5 requests: 4 name 3 distinct videos (two escapes, one missing video asked twice), 1 named none.
    assert "SKIPPED 5 requests (3 videos, 1 without a video path)" in log
    assert "6 requests (journal off)" in log and "vision tower ran on 1 videos" in log


def test_batch_size_inside_model_args_no_longer_collides_with_lmms_evals_own_flag(data):
    """`--model_args pretrained=...,batch_size=4` with lmms-eval's own `--batch_size` (always passed) failed with
    "got multiple values for keyword argument 'batch_size'"; the model_args value now wins."""
    lm = HourLlava.create_from_arg_string(
        f"pretrained={data['checkpoint']},batch_size=4", {"batch_size": 1, "device": "cpu"}
    )
    assert lm.batch_size == 4 and lm.device.type == "cpu"
