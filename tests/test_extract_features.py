"""The memory-repository cache (`dataset_builder/extract_features.py`).

* Two CPU processes under `accelerate launch` are killed (SIGKILL, whole process group) once the first feature
  file appears; a rerun resumes (skips the finished files, computes the rest) and every file then equals, bit for
  bit, the file of one uninterrupted run.
* A truncated file is detected from its header and recomputed; files of another model (other weights) or another
  configuration (other fps) are stale: refused by default, recomputed on request.
* A broken video is skipped and counted, not fatal.
* Cached features go through `encode_video` exactly like the frames they came from.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dataset_builder.extract_features import (
    CHANGED,
    INVALID,
    REPORT_NAME,
    STALE,
    VALID,
    Extractor,
    StaleFeaturesError,
    extract,
    feature_file_state,
    parse_args,
)
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from modeling_hour_llava.features_hour_llava import load_feature_file, read_feature_header
from modeling_hour_llava.video_processing_hour_llava import HourLlavaVideoProcessor

from conftest import tiny_model

REPO = Path(__file__).resolve().parent.parent
# 60-second videos at 4 fps: 128 frames each (the reference's minimum), a fraction of a second per video on CPU.
SPEC = SyntheticSpec(num_videos=10, min_duration=60, max_duration=60, fps=4.0, width=64, height=48, seed=5)
BROKEN = "synthetic/broken.mp4"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    data = write_synthetic_videomarathon(root / "data", SPEC)
    Path(data.video_root, BROKEN).write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))
    tiny_model(seed=0).save_pretrained(root / "model")
    tiny_model(seed=1).save_pretrained(root / "other_model")
    return root, data


@pytest.fixture(scope="module")
def baseline(workspace, tmp_path_factory):
    """One uninterrupted in-process run; tests work on copies of its output."""
    root, data = workspace
    threads = torch.get_num_threads()
    output = tmp_path_factory.mktemp("baseline") / "out"
    report = run(root, data, output)
    torch.set_num_threads(threads)
    return output, report


def copy_of(baseline, tmp_path) -> Path:
    return Path(shutil.copytree(baseline[0], tmp_path / "out"))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def arguments(root: Path, data, output: Path, *extra: str, model: str = "model") -> list[str]:
    return [
        "--model", str(root / model), "--video-root", data.video_root, "--output-dir", str(output),
        "--threads", "1", *extra,
    ]  # fmt: skip


def run(root, data, output, *extra, model="model") -> dict:
    return extract(parse_args(arguments(root, data, output, *extra, model=model)))


def features(output: Path) -> dict[str, torch.Tensor]:
    return {str(p.relative_to(output)): load_file(p)["features"].clone() for p in sorted(output.rglob("*.safetensors"))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process it started (torchrun puts its workers in their own process groups),
    by pid: a crash, not a clean exit. Waits until all are gone, so none writes after this returns."""
    import psutil

    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait()
    psutil.wait_procs(family, timeout=30)


@pytest.mark.slow
def test_killed_distributed_run_resumes_to_identical_features(workspace, baseline, tmp_path, one_thread):
    root, data = workspace
    output = tmp_path / "killed"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), "-m", "dataset_builder.extract_features",
        *arguments(root, data, output),
    ]  # fmt: skip
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "CUDA_VISIBLE_DEVICES": ""}
    log = open(tmp_path / "launch.log", "w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list(output.rglob("*.safetensors")):
            assert process.poll() is None, (tmp_path / "launch.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no feature file after 240 s"
            time.sleep(0.02)
    finally:
        kill_tree(process)
        log.close()
    launch_log = (tmp_path / "launch.log").read_text()
    assert " of 2: " in launch_log, f"not two processes:\n{launch_log[-2000:]}"
    done = set(features(output))
    assert 0 < len(done) < SPEC.num_videos, f"not killed midway: {len(done)} files"
    assert not (output / REPORT_NAME).exists()

    resumed = run(root, data, output)
    assert resumed["counts"] == {"skipped_existing": len(done), "computed": SPEC.num_videos - len(done), "failed": 1}
    assert resumed["failures"][0]["video"] == BROKEN
    assert not [p for p in output.rglob(".tmp-*")], "leftover temporary files"

    reference, report = baseline
    assert report["counts"] == {"computed": SPEC.num_videos, "failed": 1}
    expected, got = features(reference), features(output)
    assert sorted(got) == sorted(expected) and len(got) == SPEC.num_videos
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
        with safe_open(output / name, "pt") as a, safe_open(reference / name, "pt") as b:
            assert a.metadata() == b.metadata()


def test_features_and_metadata(workspace, baseline, tmp_path, one_thread):
    root, data = workspace
    output = copy_of(baseline, tmp_path)
    report = baseline[1]
    assert report["counts"] == {"computed": SPEC.num_videos, "failed": 1}
    assert json.loads((output / REPORT_NAME).read_text())["counts"] == report["counts"]
    assert report["videos_per_second"] > 0 and report["video_seconds_per_second"] > 0
    path = output / "synthetic" / "video_0000.safetensors"
    tensor, duration = load_feature_file(path)
    assert tensor.shape == (128, 64, 32) and tensor.dtype == torch.float32 and duration == 60.0
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["source_video"] == "synthetic/video_0000.mp4" and metadata["fingerprint"] == report["fingerprint"]
    assert run(root, data, output)["counts"] == {"skipped_existing": SPEC.num_videos, "failed": 1}


def test_truncated_file_is_detected_and_recomputed(workspace, baseline, tmp_path, one_thread):
    root, data = workspace
    output = copy_of(baseline, tmp_path)
    path = output / "synthetic" / "video_0003.safetensors"
    original = load_file(path)["features"].clone()  # a copy: the loaded tensor maps the file we truncate
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    extractor = Extractor(parse_args(arguments(root, data, output)))
    assert feature_file_state(str(path), extractor.fingerprint, 64, 32)[0] == INVALID
    report = run(root, data, output)
    assert report["counts"] == {
        "skipped_existing": SPEC.num_videos - 1,
        "computed": 1,
        "recompute_invalid": 1,
        "failed": 1,
    }
    assert torch.equal(load_file(path)["features"], original)
    assert feature_file_state(str(path), extractor.fingerprint, 64, 32)[0] == VALID


def test_a_video_replaced_under_its_name_has_its_features_recomputed(workspace, baseline, tmp_path, one_thread):
    """Size and mtime of the video are in the file: another video written under the same name is noticed (the recall
    suite rewrites its videos when its spec changes), unless --video-changes ignore."""
    root, data = workspace
    output = copy_of(baseline, tmp_path)
    videos = Path(shutil.copytree(data.video_root, tmp_path / "videos"))
    replaced, other = videos / "synthetic" / "video_0002.mp4", videos / "synthetic" / "video_0007.mp4"
    shutil.copyfile(other, replaced)  # new bytes, new mtime, the old name
    args = arguments(root, data, output)
    args[args.index("--video-root") + 1] = str(videos)
    extractor = Extractor(parse_args(args))
    path = str(output / "synthetic" / "video_0002.safetensors")
    state, detail = feature_file_state(path, extractor.fingerprint, 64, 32, str(replaced))
    assert state == CHANGED and "video_0002.mp4 changed" in detail
    assert extract(parse_args([*args, "--video-changes", "ignore"]))["counts"]["skipped_existing"] == SPEC.num_videos
    report = extract(parse_args(args))
    assert report["counts"] == {"skipped_existing": SPEC.num_videos - 1, "computed": 1, "recompute_changed_video": 1,
                                "failed": 1}  # fmt: skip
    after = features(output)
    assert torch.equal(after["synthetic/video_0002.safetensors"], after["synthetic/video_0007.safetensors"])
    assert feature_file_state(path, extractor.fingerprint, 64, 32, str(replaced))[0] == VALID


def test_stale_features_are_refused_or_recomputed(workspace, baseline, tmp_path, one_thread):
    root, data = workspace
    output = copy_of(baseline, tmp_path)
    before = features(output)
    for extra, model in (((), "other_model"), (("--fps", "2"), "model")):
        stale = Extractor(parse_args(arguments(root, data, output, *extra, model=model)))
        path = str(output / "synthetic" / "video_0000.safetensors")
        assert feature_file_state(path, stale.fingerprint, 64, 32)[0] == STALE
        with pytest.raises(StaleFeaturesError, match="--on-stale recompute"):
            run(root, data, output, *extra, model=model)
    assert all(torch.equal(features(output)[name], tensor) for name, tensor in before.items())  # untouched
    report = run(root, data, output, "--on-stale", "recompute", model="other_model")
    assert report["counts"] == {"computed": SPEC.num_videos, "recompute_stale": SPEC.num_videos, "failed": 1}
    after = features(output)
    assert all(not torch.equal(after[name], tensor) for name, tensor in before.items())


def test_cached_features_encode_like_their_frames(workspace, baseline):
    """encode_video(video_features=cached file) == encode_video(pixel_values_videos=the frames it came from)."""
    _, data = workspace
    output = baseline[0]
    model = tiny_model(seed=0)
    processor = HourLlavaVideoProcessor(size={"height": 140, "width": 140})
    frames, _, _ = processor.load_video(os.path.join(data.video_root, "synthetic", "video_0001.mp4"))
    cached, _ = load_feature_file(output / "synthetic" / "video_0001.safetensors")
    with torch.no_grad():
        from_frames = model.model.encode_video(pixel_values_videos=frames, video_num_frames=[frames.shape[0]])
        from_cache = model.model.encode_video(video_features=cached, video_num_frames=[cached.shape[0]])
    torch.testing.assert_close(from_cache.frame_tokens[0], from_frames.frame_tokens[0], rtol=1e-5, atol=1e-6)


def test_training_rows_read_the_cache_instead_of_the_videos(workspace, baseline, tmp_path):
    """VideoMarathon rows pointed at the cache (`feature_root`) go through the chat template as `video_features`:
    the reference keeps min(stored frames, whole seconds) of them, and the video itself is never opened."""
    from dataset_helpers import tiny_processor

    from dataset_builder.chat import clean_messages
    from dataset_builder.mixtures import videomarathon_chat
    from dataset_builder.videomarathon import VideoMarathon

    _, data = workspace
    builder = VideoMarathon(
        config_name="grouped",
        annotations=data.hub_rows,
        video_root=data.video_root,
        cache_dir=str(tmp_path / "cache"),
        validation_fraction=0.0,
    )
    builder.download_and_prepare()
    rows = videomarathon_chat(builder.as_dataset("train"), feature_root=str(baseline[0])).select(range(2))
    paths = [clean_messages(row["messages"])[0]["content"][0]["path"] for row in rows]
    assert all(path.startswith(str(baseline[0])) and path.endswith(".safetensors") for path in paths)
    processor, _ = tiny_processor()
    batch = processor.apply_chat_template(
        [clean_messages(row["messages"]) for row in rows],
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    assert "pixel_values_videos" not in batch
    assert batch["video_num_frames"].tolist() == [SPEC.min_duration] * 2  # min(128 stored, 60 s)
    assert batch["video_features"].shape == (2 * SPEC.min_duration, 64, 32)


# -----------------------------------------------------------------------------------------------------------------
# Wrong input: file names, paths out of the root, damaged files, non-finite features
# -----------------------------------------------------------------------------------------------------------------
SHORT = ["--min-frames", "4"]  # the short videos below give their 20 frames; a fingerprint of their own


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory):
    """A video root with a name that is not UTF-8, one with spaces and accents, a symlink to a video inside the root
    and one to a video outside it."""
    from dataset_builder.synthetic_video import write_video

    base = tmp_path_factory.mktemp("odd")
    root = base / "videos"
    (root / "sub").mkdir(parents=True)
    plain = write_video(root / "plain.mp4", 20, fps=4, width=32, height=32)
    Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.mp4")).write_bytes(Path(plain).read_bytes())
    shutil.copyfile(plain, root / "sub" / "é clip 1.mp4")
    outside = write_video(base / "outside.mp4", 12, fps=4, width=32, height=32)
    os.symlink(outside, root / "link_out.mp4")
    os.symlink(root / "plain.mp4", root / "link_in.mp4")
    return base, root, outside


def odd_run(workspace, root: Path, output: Path, *extra: str) -> dict:
    model_root, _ = workspace
    args = ["--model", str(model_root / "model"), "--video-root", str(root), "--output-dir", str(output),
            "--threads", "1", *SHORT, *extra]  # fmt: skip
    return extract(parse_args(args))


def test_any_file_name_and_a_missing_output_folder(workspace, odd_root, one_thread):
    """A name that is not UTF-8 no longer aborts the run; --output-dir is created, however deep; symlinks inside
    the root are followed, the one out of it is refused and counted."""
    base, root, _ = odd_root
    output = base / "not" / "yet" / "there"
    report = odd_run(workspace, root, output)
    assert report["counts"] == {"computed": 4, "path_escapes_root": 1}
    assert [entry["video"] for entry in report["refused"]] == ["link_out.mp4"]
    assert "escapes its root" in report["refused"][0]["detail"]
    name = Path(os.fsdecode(os.fsencode(output) + b"/caf\xe9.safetensors"))
    assert read_feature_header(name)[0]["__metadata__"]["source_video"] == "caf\\xe9.mp4"
    assert load_feature_file(name)[0].shape == (5, 64, 32)  # 5 s at 1 fps
    assert (output / "sub" / "é clip 1.safetensors").exists() and (output / "link_in.safetensors").exists()
    json.loads((output / REPORT_NAME).read_text())  # valid JSON despite the odd name
    assert odd_run(workspace, root, output)["counts"] == {"skipped_existing": 4, "path_escapes_root": 1}


def test_video_list_entries_may_not_leave_the_root(workspace, odd_root, tmp_path, one_thread):
    """`../`, absolute paths, symlinks out, NUL bytes and empty-looking names in --video-list are refused and
    counted; nothing is read from outside the root and nothing is written outside --output-dir."""
    base, root, outside = odd_root
    listing = tmp_path / "list.txt"
    entries = [b"plain.mp4", b"../outside.mp4", os.fsencode(outside), b"link_out.mp4", b"sub/../plain.mp4",
               b"caf\xe9.mp4", b"bad\x00name.mp4", b"./sub/../../videos/plain.mp4"]  # fmt: skip
    listing.write_bytes(b"\n".join(entries) + b"\n")
    output = tmp_path / "out"
    report = odd_run(workspace, root, output, "--video-list", str(listing))
    assert report["counts"] == {"computed": 2, "path_escapes_root": 4, "invalid_path": 1}  # sub/../plain is plain
    refused = {entry["video"]: entry["reason"] for entry in report["refused"]}
    assert refused == {
        "../outside.mp4": "path_escapes_root",
        str(outside): "path_escapes_root",
        "link_out.mp4": "path_escapes_root",
        "./sub/../../videos/plain.mp4": "path_escapes_root",
        "bad\x00name.mp4": "invalid_path",
    }
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.safetensors"))
    assert [str(p) for p in written] == ["out/caf\udce9.safetensors", "out/plain.safetensors"]
    assert not list(base.glob("*.safetensors")) and not list(base.parent.glob("*.safetensors"))


def test_videos_that_would_share_a_feature_file_are_refused_and_the_rest_extracted(workspace, tmp_path, one_thread):
    """`clip.mp4` and `clip.mkv` would both write `clip.safetensors`: both are refused and counted (a reader could
    not tell whose features it got), not the whole run aborted; the other videos are extracted."""
    from dataset_builder.synthetic_video import write_video

    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "clip.mp4", 12, fps=4, width=32, height=32)
    shutil.copyfile(root / "clip.mp4", root / "clip.mkv")
    write_video(root / "other.mp4", 12, fps=4, width=32, height=32)
    report = odd_run(workspace, root, tmp_path / "out")
    assert report["counts"] == {"computed": 1, "ambiguous_feature_name": 2}
    assert sorted(entry["video"] for entry in report["refused"]) == ["clip.mkv", "clip.mp4"]
    assert all("clip.safetensors" in entry["detail"] for entry in report["refused"])
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == ["other.safetensors"]


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))


def overwrite_tensor(path: Path, value: float) -> None:
    """Rewrite the tensor's bytes in place (same size, header untouched): zeros or NaN."""
    with safe_open(path, "pt") as handle:
        tensor = handle.get_tensor("features")
    data = torch.full_like(tensor, value).view(torch.uint8).reshape(-1).numpy().tobytes()
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - len(data)] + data)


CORRUPTIONS = {
    "flipped bytes": (flip_bytes, "checksum mismatch"),
    "zeroed data": (lambda path: overwrite_tensor(path, 0.0), "checksum mismatch"),
    "NaN data": (lambda path: overwrite_tensor(path, float("nan")), "checksum mismatch"),
    "another video's file": (
        lambda path: shutil.copyfile(path.parent / "video_0007.safetensors", path),
        "holds the features of 'synthetic/video_0007.mp4'",
    ),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_file_damaged_without_changing_its_size_is_recomputed(workspace, baseline, tmp_path, one_thread, kind):
    """The header alone looks right; the content checksum (or the recorded video) says otherwise. The recomputed
    file is byte-identical to the first run's."""
    root, data = workspace
    output = copy_of(baseline, tmp_path)
    path = output / "synthetic" / "video_0004.safetensors"
    original = path.read_bytes()
    damage, words = CORRUPTIONS[kind]
    damage(path)
    assert path.stat().st_size == len(original) and path.read_bytes() != original
    extractor = Extractor(parse_args(arguments(root, data, output)))
    state, detail = feature_file_state(str(path), extractor.fingerprint, 64, 32, video="synthetic/video_0004.mp4")
    assert state == INVALID and words in detail
    report = run(root, data, output, "--video-changes", "ignore")  # the content check works without the stamps
    assert report["counts"] == {"skipped_existing": SPEC.num_videos - 1, "computed": 1, "recompute_invalid": 1,
                                "failed": 1}  # fmt: skip
    assert path.read_bytes() == original
    for other in (output / "synthetic").glob("*.safetensors"):
        assert other.read_bytes() == (baseline[0] / "synthetic" / other.name).read_bytes()


def test_readers_verify_the_checksum_and_refuse_non_finite_data(tmp_path):
    """`load_feature_file`: a changed tensor fails its checksum, NaN data is refused even in an old file without a
    checksum (written by safetensors directly), and such old files still read."""
    from safetensors.torch import save_file

    from modeling_hour_llava import VideoDecodeError
    from modeling_hour_llava.features_hour_llava import FEATURE_FILE_FORMAT, save_feature_file

    features = torch.randn(3, 4, 5)
    path = tmp_path / "new.safetensors"
    save_feature_file(path, features, 3.0)
    assert torch.equal(load_feature_file(path)[0], features)
    overwrite_tensor(path, 0.0)
    with pytest.raises(VideoDecodeError, match="content checksum mismatch") as error:
        load_feature_file(path)
    assert error.value.path == str(path)
    old = tmp_path / "old.safetensors"
    save_file({"features": features}, str(old), metadata={"format": FEATURE_FILE_FORMAT, "duration": "3.0"})
    assert torch.equal(load_feature_file(old)[0], features)
    features[1, 2, 3] = float("nan")
    save_file({"features": features}, str(old), metadata={"format": FEATURE_FILE_FORMAT, "duration": "3.0"})
    with pytest.raises(VideoDecodeError, match="NaN or infinite") as error:
        load_feature_file(old)
    assert str(old) in str(error.value)
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_feature_file(tmp_path / "never.safetensors", features, 3.0)
    assert not (tmp_path / "never.safetensors").exists() and not list(tmp_path.glob(".tmp-*"))


def test_identical_inputs_give_byte_identical_files(tmp_path):
    """The same features and metadata give the same bytes, whatever order the metadata come in: the header's keys
    are sorted (safetensors' writer orders them by a hash seeded anew for every call)."""
    from modeling_hour_llava.features_hour_llava import save_feature_file

    features = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3) / 7
    metadata = {f"key_{index}": str(index) for index in range(12)}
    written = set()
    for attempt in range(4):
        keys = sorted(metadata, key=lambda key: hash((attempt, key)))
        save_feature_file(tmp_path / "f.safetensors", features, 2.0, **{key: metadata[key] for key in keys})
        written.add((tmp_path / "f.safetensors").read_bytes())
    assert len(written) == 1


def test_non_finite_features_are_never_written(workspace, tmp_path, one_thread):
    """A tower that gives NaN (here: a NaN weight) fails each video with that reason; no file is written."""
    root, data = workspace
    model = tiny_model(seed=0)
    with torch.no_grad():
        next(model.model.vision_tower.parameters()).view(-1)[0] = float("nan")
    model.save_pretrained(tmp_path / "nan_model")
    listing = tmp_path / "list.txt"
    listing.write_text("synthetic/video_0001.mp4\n")
    output = tmp_path / "out"
    args = ["--model", str(tmp_path / "nan_model"), "--video-root", data.video_root, "--output-dir", str(output),
            "--threads", "1", "--video-list", str(listing)]  # fmt: skip
    report = extract(parse_args(args))
    assert report["counts"] == {"failed": 1}
    assert "NaN or infinite features" in report["failures"][0]["reason"]
    assert not list(output.rglob("*.safetensors"))


def test_a_missing_video_root_is_one_clear_error(workspace, tmp_path, capsys):
    """Own case: a --video-root that does not exist stops before loading anything, with the path in the message."""
    from dataset_builder.extract_features import main

    root, _ = workspace
    missing = tmp_path / "no_videos"
    code = main(["--model", str(root / "model"), "--video-root", str(missing), "--output-dir", str(tmp_path / "o")])
    assert code == 2 and f"--video-root {str(missing)!r} is not a folder" in capsys.readouterr().err
