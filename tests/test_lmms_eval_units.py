"""The small rules behind the lmms-eval integration, without running lmms-eval: where data and videos come from,
which paths are refused, how videos are shared out between ranks, how benchmarks are defined outside the package,
and what evaluate.py refuses before it starts anything."""

from __future__ import annotations

import pytest

from hour_llava_lmms import cli
from hour_llava_lmms.benchmarks import BENCHMARKS, load_benchmarks
from hour_llava_lmms.data_sources import dataset_config, resolve_source, source_from_env
from hour_llava_lmms.ranks import assign_groups, response_cache_requested
from hour_llava_lmms.tasks import VideoPathOutsideRoot, video_file
from hour_llava_testing.tiny_benchmarks import write_benchmark_copy

LVBENCH, VIDEOMME = BENCHMARKS["lvbench"], BENCHMARKS["videomme"]


@pytest.mark.parametrize("relative", ["../x.mp4", "a/../../x.mp4", "/etc/passwd", "", ".", "a/.."])
def test_a_path_that_leaves_the_video_folder_is_refused(tmp_path, relative):
    with pytest.raises(VideoPathOutsideRoot):
        video_file(str(tmp_path / "videos"), relative)


def test_a_path_inside_the_video_folder_is_kept(tmp_path):
    root = tmp_path / "videos"
    assert video_file(str(root), "sub/../a.mp4") == str(root / "a.mp4")
    assert video_file(str(root) + "/", "b/c.mp4") == str(root / "b" / "c.mp4")


def test_the_environment_names_the_data_and_the_videos(tmp_path, monkeypatch):
    copy = write_benchmark_copy(str(tmp_path), "videomme", num_videos=1)
    monkeypatch.delenv(VIDEOMME.data_env, raising=False)
    monkeypatch.delenv(VIDEOMME.video_env, raising=False)
    hub = dataset_config(VIDEOMME, source_from_env(VIDEOMME))
    assert hub == {"dataset_path": "lmms-eval/Video-MME", "dataset_name": None,
                   "dataset_kwargs": {"token": True, "cache_dir": "videomme", "video": True}}  # fmt: skip

    monkeypatch.setenv(VIDEOMME.data_env, copy["folder"])
    source = source_from_env(VIDEOMME)
    assert dataset_config(VIDEOMME, source)["dataset_path"] == "parquet"
    assert source.video_root == f"{copy['folder']}/data"
    monkeypatch.setenv(VIDEOMME.video_env, str(tmp_path / "elsewhere"))
    assert source_from_env(VIDEOMME).video_root == str(tmp_path / "elsewhere")

    monkeypatch.setenv(VIDEOMME.data_env, "someone/video-mme-mirror")  # not a local path: a Hub id
    assert dataset_config(VIDEOMME, source_from_env(VIDEOMME))["dataset_path"] == "someone/video-mme-mirror"
    monkeypatch.setenv(VIDEOMME.data_env, str(tmp_path / "missing" / "folder"))
    with pytest.raises(FileNotFoundError, match="videomme"):
        source_from_env(VIDEOMME)


def test_local_only_benchmarks_need_data():
    with pytest.raises(FileNotFoundError, match="HOUR_LLAVA_VIDEOMARATHON_DATA"):
        resolve_source(BENCHMARKS["videomarathon"], None)


def test_whole_videos_go_to_the_least_loaded_rank_largest_first():
    assert assign_groups([15, 3, 3, 15, 1], 2) == [0, 0, 1, 1, 0]  # loads 19 and 18; ties go to the lower rank
    assert assign_groups([2, 2, 2], 1) == [0, 0, 0]
    assert sorted(assign_groups([1] * 5, 3)) == [0, 0, 1, 1, 2]


def test_ranks_do_not_share_videos_under_lmms_evals_response_cache():
    """--use_cache calls the model only for uncached requests, maybe on one rank only: an exchange would hang."""
    assert response_cache_requested(["lmms-eval", "--model", "hour_llava", "--use_cache", "cache"])
    assert response_cache_requested(["lmms-eval", "--use_cache=cache"])
    assert not response_cache_requested(["lmms-eval", "--model_args", "journal_dir=j"])


def test_benchmark_definition_files(tmp_path):
    (tmp_path / "my_task.yaml").write_text("task: my_task\n")
    (tmp_path / "hour_llava_benchmarks.yaml").write_text(
        "benchmarks:\n  - {name: mine, task: my_task, split: test, metric: acc, correct_field: acc.ok, "
        "group_field: acc.kind}\n"
    )
    bench = load_benchmarks(str(tmp_path))["mine"]
    assert bench.tasks_dir == str(tmp_path) and bench.hub_id is None and bench.data_env == "HOUR_LLAVA_MINE_DATA"
    assert bench.sample_correct({"acc": {"ok": True, "kind": "count"}}) == (1.0, "count")
    (tmp_path / "hour_llava_benchmarks.yaml").write_text("benchmarks:\n  - {name: mine, task: other, typo: 1}\n")
    with pytest.raises(
        ValueError, match=r"missing keys \['split', 'metric', 'correct_field'\], unknown keys \['typo'\]"
    ):
        load_benchmarks(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hour_llava_benchmarks.yaml"):
        load_benchmarks(str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--benchmarks", "recall"], "unknown benchmark 'recall'"),  # research, not in the package
        (["--data", "lvbench"], "expected BENCHMARK=VALUE"),
        (["--paper-model", "Hour-LLaVA-13B"], "not in the paper's Table 2"),
    ],
)
def test_evaluate_py_refuses_bad_arguments_before_starting_anything(tmp_path, capsys, extra, message):
    assert cli.main(["--model", "m", "--output", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_multi_process_command_runs_accelerates_multi_process_launcher(tmp_path):
    args = cli.parse_args(["--model", "m", "--output", "o", "--num-processes", "3"])
    command = cli.lmms_eval_command(args, LVBENCH, str(tmp_path))
    assert command[1:6] == ["launch", "--multi_gpu", "--num_processes", "3", "--main_process_port"]
    assert "--use_cache" not in command  # see hour_llava_lmms.ranks: it would call the model on some ranks only
    assert cli.child_env({}, "info.json", 3)["ACCELERATE_USE_CPU"] == "true"  # no GPU here
