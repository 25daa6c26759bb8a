"""The package as users install it: the model needs no extra, every command has a console script whose `--help`
runs and creates nothing, flags take dashes, and the wheel holds the packages, scripts, task configs and launch
configs, and nothing of the research, the tests or the checkpoints.

The fresh-environment install (the wheel next to an existing torch/transformers, then `[all]`) takes minutes and
GBs: `scripts/check_install.sh` runs it (docs/README.md has its last numbers).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from clone_files import clone_files

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
BIN = Path(sys.executable).parent
# What only an extra installs: importing or running the model must not need any of it.
EXTRAS_ONLY = ("trl", "peft", "datasets", "lmms_eval", "gguf", "accelerate", "pyarrow", "decord", "torchcodec", "cv2")
PACKAGES = (
    "modeling_hour_llava",
    "dataset_builder",
    "hour_llava_lmms",
    "hour_llava_training",
    "hour_llava_testing",
    "hour_llava_demo",
)

WITHOUT_EXTRAS = '''
import importlib.machinery
import sys

HIDDEN = set(sys.argv[1].split(","))
asked = []


class WithoutExtras(importlib.machinery.PathFinder):
    """The path finder, except that the extras' packages are not installed (imports and availability probes alike)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            asked.append(name)
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [WithoutExtras if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
for name in HIDDEN:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{name} is still importable")
asked.clear()
'''
LOAD_AND_ANSWER = """
import json
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import modeling_hour_llava.convert, modeling_hour_llava.push  # the converter and the pusher are core too
from dataset_builder.synthetic_video import write_video
from hour_llava_testing.tiny_model import write_tiny_checkpoint

folder = write_tiny_checkpoint("tiny", video_min_frames=8)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
video = write_video("clip.mp4", num_frames=12, fps=4, width=64, height=48)
messages = [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": "Colour?"}]}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
answer = model.generate(**inputs, max_new_tokens=3, do_sample=False)
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in HIDDEN)
print(json.dumps({"new_tokens": answer.shape[1] - inputs["input_ids"].shape[1], "loaded": loaded,
                  "frames": int(inputs["video_num_frames"][0]), "probed": sorted(set(asked))}))
"""


def run(command: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_model_loads_and_answers_without_any_extra(tmp_path):
    import json

    script = tmp_path / "child.py"
    script.write_text(WITHOUT_EXTRAS + LOAD_AND_ANSWER)
    process = run([sys.executable, str(script), ",".join(EXTRAS_ONLY)], tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [] and result["new_tokens"] == 3 and result["frames"] == 8, result


def test_the_blocker_blocks(tmp_path):
    """The child's finder really hides a package: importing one fails there (else the test above proves nothing)."""
    script = tmp_path / "child.py"
    script.write_text(WITHOUT_EXTRAS + "import trl\n")
    process = run([sys.executable, str(script), "trl"], tmp_path)
    assert process.returncode != 0 and "No module named 'trl'" in process.stderr, process.stderr[-2000:]


def script_command(name: str) -> list[str]:
    """The installed console script (`make setup` installs the package editable, which writes them)."""
    path = BIN / name
    assert path.is_file(), f"{path} is missing: reinstall the package (make setup) after editing [project.scripts]"
    return [str(path)]


@pytest.mark.parametrize(
    "command",
    [
        *([name, "--help"] for name in SCRIPTS),
        ["hour-llava-build-dataset", "videomarathon", "--help"],
        ["hour-llava-build-dataset", "synthetic", "--help"],
        ["hour-llava-build-dataset", "mixture", "--help"],
        ["python", "-m", "hour_llava_testing.tiny_benchmarks", "--help"],
        ["python", str(REPO / "train.py"), "--help"],
        ["python", str(REPO / "evaluate.py"), "--help"],
    ],
    ids=lambda command: " ".join(Path(part).name for part in command[:-1]),
)
def test_help_runs_and_creates_nothing(command, tmp_path):
    full = [sys.executable, *command[1:]] if command[0] == "python" else script_command(command[0]) + command[1:]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    process = run(full, cwd)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.startswith("usage:"), process.stdout[:500]
    assert list(cwd.iterdir()) == [], f"--help created {sorted(p.name for p in cwd.iterdir())}"


def test_every_command_has_a_console_script():
    assert set(SCRIPTS) >= {
        "hour-llava-train",
        "hour-llava-evaluate",
        "hour-llava-convert",
        "hour-llava-push",
        "hour-llava-extract-features",
        "hour-llava-build-dataset",
        "hour-llava-construct-qa",
        "hour-llava-demo",
    }
    assert all(name.startswith("hour-llava-") for name in SCRIPTS)


def test_training_flags_take_dashes_and_underscores_alike():
    from hour_llava_training.cli import parse_arguments

    underscores = parse_arguments(
        "--tiny --dataset d --media_root m --output_dir o --max_steps 2 --per_device_train_batch_size 1".split()
    )
    dashes = parse_arguments(
        "--tiny --dataset d --media-root m --output-dir o --max-steps 2 --per-device-train-batch-size 1".split()
    )
    assert dashes[0] == underscores[0]
    for name in ("output_dir", "max_steps", "per_device_train_batch_size"):
        assert getattr(dashes[1], name) == getattr(underscores[1], name), name
    assert (dashes[0].media_root, dashes[1].max_steps, dashes[1].per_device_train_batch_size) == ("m", 2, 1)


def test_launch_configs_are_found_by_name(capsys):
    from hour_llava_training.configs import main

    assert main(["zero2.json"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == REPO / "hour_llava_training" / "configs" / "deepspeed" / "zero2.json" and path.is_file()
    assert main([]) == 0
    listed = capsys.readouterr().out.split()
    assert len(listed) == 8 and all(Path(name).is_file() for name in listed)
    with pytest.raises(SystemExit) as exit_info:
        main(["zero9.json"])
    assert exit_info.value.code == 2 and "zero2.json" in capsys.readouterr().err


def test_train_console_script_exits_0_after_training(tmp_path):
    from dataset_builder.cli import main as build

    assert build(["synthetic", str(tmp_path / "syn"), "--videos", "1", "--min-seconds", "2", "--max-seconds", "2"]) == 0
    process = run(
        [
            *script_command("hour-llava-train"),
            "--tiny",
            "--tiny-min-frames",
            "4",
            "--dataset",
            str(tmp_path / "syn" / "parquet"),
            "--media-root",
            str(tmp_path / "syn" / "videos"),
            "--output-dir",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
            "--per-device-train-batch-size",
            "1",
        ],
        tmp_path,
    )
    assert (tmp_path / "run" / "training_summary.json").is_file(), process.stderr[-3000:]
    assert process.returncode == 0, process.stderr[-1000:]


# ---------------------------------------------------------------------------------------------------------------
# The wheel
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Build the wheel from a copy of the source tree (so the build leaves nothing in the repository)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in clone_files():
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((REPO / name).read_bytes())
    out = tmp_path_factory.mktemp("wheel")
    process = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(tree)],
        tree,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    (path,) = out.glob("hour_llava_hf-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_every_module_and_data_file_of_the_packages(wheel):
    names = set(wheel.namelist())
    expected = {
        name for name in clone_files() if name.split("/")[0] in PACKAGES and name.endswith((".py", ".yaml", ".json"))
    }
    assert expected - names == set()
    assert "hour_llava_training/configs/accelerate/fsdp.yaml" in names
    assert "hour_llava_training/configs/deepspeed/zero3.json" in names
    assert "hour_llava_lmms/tasks/hour_llava_videomme.yaml" in names
    assert "hour_llava_lmms/paper_table2.json" in names


def test_wheel_holds_no_research_tests_or_checkpoints(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops - set(PACKAGES) == {next(name for name in tops if name.endswith(".dist-info"))}, tops
    assert not any(name.endswith((".safetensors", ".mp4")) for name in wheel.namelist())


def test_wheel_declares_scripts_extras_and_the_lmms_eval_entry_point(wheel):
    info = next(name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt"))
    entry_points = wheel.read(info).decode()
    for name, target in SCRIPTS.items():
        assert f"{name} = {target}" in entry_points
    assert "[lmms_eval.models]" in entry_points and "hour_llava = hour_llava_lmms:manifests" in entry_points
    metadata = wheel.read(info.replace("entry_points.txt", "METADATA")).decode()
    for extra in ("train", "eval", "data", "torchcodec", "all", "test"):
        assert f"Provides-Extra: {extra}" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [line for line in requires if "extra ==" not in line]
    assert not any(package in line for line in core for package in ("trl", "peft", "lmms-eval", "gguf", "datasets"))
    assert all(any(op in line for op in (">=", "<", "~=")) for line in core), "core dependencies need ranges"
    assert not any("==" in line for line in core), "core dependencies are ranges, not pins"
