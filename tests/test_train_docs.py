"""docs/training.md as a user follows it: the CPU walkthrough (synthetic data, feature cache, stage 3 on the
README's mixture), the plain-TRL script with `HourLlavaDataCollator`, TRL's stock recipe without it (refused loudly),
and the model card of the output, whose usage snippet runs.

The blocks run as written from a scratch folder standing in for the repository root (`train.py` linked there);
only `/tmp/` output folders are moved into the test's own folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "training.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def block_with(language: str, needle: str) -> str:
    found = [block for block in blocks(language) if needle in block]
    assert len(found) == 1, f"{len(found)} {language} blocks of {DOC} hold {needle!r}"
    return found[0]


def run_block(code: str, language: str, cwd: Path, relocate: bool = True) -> subprocess.CompletedProcess:
    """Run a block in `cwd`; relocate: its `/tmp/` folders go to `cwd/out/`."""
    code = code.replace("/tmp/", f"{cwd}/out/") if relocate else code
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{language} block failed:\n{code}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> Path:
    """The CPU walkthrough: its data block, then its commands (feature cache, stage 3 for two steps)."""
    root = tmp_path_factory.mktemp("docs")
    (root / "train.py").symlink_to(REPO / "train.py")
    run_block(block_with("python", "write_synthetic_videomarathon"), "python", root)
    run_block(block_with("bash", "dataset_builder.extract_features --model synthetic/tiny"), "bash", root)
    return root


def test_the_cpu_walkthrough_trains_on_the_mixture_from_cached_features(walkthrough):
    summary = json.loads((walkthrough / "out" / "hour-llava-smoke" / "training_summary.json").read_text())
    assert summary["steps"] == 2 and summary["skipped_samples"] == {}
    assert 4 < summary["cached_features_used"] < summary["rows_drawn"] == 8  # features 3 : decoded videos 1


def test_the_plain_trl_script_trains_with_the_public_collator(walkthrough):
    script = block_with("python", "SFTTrainer(")
    assert len(script.strip().splitlines()) <= 25
    run_block(script, "python", walkthrough)
    output = walkthrough / "out" / "hour-llava-trl"
    assert (output / "model.safetensors").is_file() and (output / "config.json").is_file()


def test_the_stock_trl_recipe_without_the_collator_fails_loudly(walkthrough):
    """TRL's documented VLM recipe (chat rows with a video block, no collator) would train on the placeholders as
    text with no video at all; the model refuses the batch and names the collator."""
    recipe = f"""
import datasets, os
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import SFTConfig, SFTTrainer
from modeling_hour_llava.errors_hour_llava import HourLlavaInputError
model = AutoModelForImageTextToText.from_pretrained("synthetic/tiny", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("synthetic/tiny", trust_remote_code=True)
video = os.path.abspath("synthetic/videos/short/video_0000.mp4")
question = [{{"type": "video", "path": video}}, {{"type": "text", "text": "What happens?"}}]
messages = [{{"role": "user", "content": question}},
            {{"role": "assistant", "content": [{{"type": "text", "text": "A shape moves."}}]}}]
rows = datasets.Dataset.from_list([{{"messages": messages}}] * 4)
args = SFTConfig(output_dir="{walkthrough}/out/stock", max_steps=1, per_device_train_batch_size=2, report_to="none",
                 bf16=False, use_cpu=True)
trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=processor)
try:
    trainer.train()
except HourLlavaInputError as error:
    print("REFUSED:", error)
else:
    raise SystemExit("trained without the videos")
"""
    done = run_block(recipe, "python", walkthrough)
    refused = r"REFUSED: input_ids hold \d+ <video> placeholder.*HourLlavaDataCollator\(processor\)"
    assert re.search(refused, done.stdout), done.stdout[-2000:]


def test_the_model_card_names_the_run_and_its_usage_snippet_runs(walkthrough):
    card = (walkthrough / "out" / "hour-llava-smoke" / "README.md").read_text()
    for expected in (
        "Fine-tuned from `synthetic/tiny`",
        "stage3",
        "`synthetic/long-grouped` (weight 3)",
        "`synthetic/short-grouped` (weight 1)",
        "memaug 116,864",
        "Frozen: vision_tower",
        "| learning rate (memaug) | 0.0001 |",
        "| batch | 4 per device x 1 accumulation x 1 processes |",
        "names no license",
    ):
        assert expected in card, expected
    assert "fine-tuned version of [None]" not in card and "licence: license" not in card
    usage = re.search(r"```python\n(.*?)```", card, re.S)[1]
    shutil.copy(walkthrough / "synthetic" / "videos" / "short" / "video_0000.mp4", walkthrough / "video.mp4")
    run_block(usage, "python", walkthrough, relocate=False)


def test_the_model_card_carries_the_base_models_license(walkthrough, tmp_path):
    from hour_llava_training import cli as train

    base = tmp_path / "licensed"
    shutil.copytree(walkthrough / "synthetic" / "tiny", base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A base model\n")
    train.run_training(
        [
            "--model_name_or_path", str(base), "--dataset", str(walkthrough / "synthetic" / "short-grouped"),
            "--media_root", str(walkthrough / "synthetic" / "videos"), "--output_dir", str(tmp_path / "out"),
            "--max_steps", "1", "--per_device_train_batch_size", "1", "--save_strategy", "no", "--use_cpu",
        ]
    )  # fmt: skip
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and "`apache-2.0`, carried from the base model" in card
