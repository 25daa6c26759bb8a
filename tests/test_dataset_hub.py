"""Publishing: the synthetic VideoMarathon, built with the builder, written as Parquet + card, pushed to the local
mock Hub, and read back with plain `load_dataset` (and `streaming=True`) in fresh processes where neither of our
packages can be imported. Rows must come back equal to what was built; videos must stay out of the repo. The
`videofolder` layout loads as `Video` columns whose files are the copied videos.
"""

from __future__ import annotations

import json
import textwrap

import datasets
import pytest
from isolated import run_isolated
from mock_hub import mock_hub, run_hub_client  # noqa: F401

from dataset_builder.hub import videomarathon_card, write_parquet_folder, write_videofolder
from dataset_builder.synthetic_videomarathon import SyntheticSpec, write_synthetic_videomarathon
from dataset_builder.videomarathon import TASKS, VideoMarathon

SPEC = SyntheticSpec(num_videos=4, min_duration=4, max_duration=6, fps=2.0, width=48, height=32, seed=11)
REPO_ID = "tester/videomarathon-synthetic"
# Both of our packages are unimportable in the reading child: a user with only `datasets`.
BLOCK_OUR_PACKAGES = """
import sys


class RefuseOurPackages:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_hour_llava", "dataset_builder"):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, RefuseOurPackages())
for blocked in ("modeling_hour_llava", "dataset_builder"):
    try:
        __import__(blocked)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{blocked} is still importable")
"""
READ = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset

    source, out = sys.argv[1], {}
    for config in ("qa", "grouped"):
        splits = load_dataset(source, config)
        out[config] = {split: [dict(row) for row in rows] for split, rows in splits.items()}
        streamed = load_dataset(source, config, split="train", streaming=True)
        out[config + "_streamed"] = [dict(row) for row in streamed]
    out["default"] = sorted(load_dataset(source))
    print(json.dumps(out))
    """
)
PUSH = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    from huggingface_hub import HfApi
    from dataset_builder.hub import push_to_hub

    folder, repo = sys.argv[1], sys.argv[2]
    configs = {config: load_dataset(folder, config) for config in ("qa", "grouped")}
    push_to_hub(configs, repo, card=open(folder + "/README.md").read(), default_config="grouped")
    print(json.dumps(sorted(HfApi().list_repo_files(repo, repo_type="dataset"))))
    """
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    data = write_synthetic_videomarathon(root / "data", SPEC)
    configs, report_path = {}, None
    for config in ("qa", "grouped"):
        builder = VideoMarathon(
            config_name=config,
            annotations=data.hub_rows,
            video_root=data.video_root,
            cache_dir=str(root / "cache"),
            validation_fraction=0.5,
        )
        builder.download_and_prepare()
        configs[config] = builder.as_dataset()
        report_path = builder.report_path
    statistics = json.loads(open(report_path).read())["statistics"]
    folder = write_parquet_folder(
        configs, root / "parquet", card=videomarathon_card(statistics, configs), default_config="grouped"
    )
    return root, data, configs, folder


def expected_rows(configs) -> dict:
    return {
        config: {split: [dict(row) for row in rows] for split, rows in splits.items()}
        for config, splits in configs.items()
    }


def check_read_back(out: dict, configs) -> None:
    expected = expected_rows(configs)
    for config in ("qa", "grouped"):
        assert out[config] == json.loads(json.dumps(expected[config]))
        assert out[config + "_streamed"] == out[config]["train"]
    assert out["default"] == sorted(configs["grouped"])


def test_local_folder_loads_without_our_packages(built, tmp_path):
    _, _, configs, folder = built
    process = run_isolated(BLOCK_OUR_PACKAGES + READ, [folder], tmp_path, tmp_path / "hf_home")
    check_read_back(json.loads(process.stdout.strip().splitlines()[-1]), configs)


@pytest.mark.slow
def test_push_to_mock_hub_and_load_back(built, mock_hub, tmp_path):  # noqa: F811 - the fixture
    _, _, configs, folder = built
    pushed = run_hub_client(mock_hub, PUSH, [folder, REPO_ID], tmp_path / "push")
    files = json.loads(pushed.stdout.strip().splitlines()[-1])
    assert "README.md" in files and any(name.endswith(".parquet") for name in files)
    assert not any(name.endswith(".mp4") for name in files), "videos must be referenced, not uploaded"
    read = run_hub_client(mock_hub, READ, [REPO_ID], tmp_path / "read", prelude=BLOCK_OUR_PACKAGES)
    check_read_back(json.loads(read.stdout.strip().splitlines()[-1]), configs)


def test_card_lists_configs_taxonomy_statistics_and_licence(built):
    _, _, configs, folder = built
    card = open(f"{folder}/README.md").read()
    header = card.split("---")[1]
    assert "config_name: qa" in header and "config_name: grouped" in header and "license: apache-2.0" in header
    assert all(f"| {task} |" in card for task in TASKS)
    total = sum(len(split) for split in configs["qa"].values())
    assert f"| all | {total:,} | {SPEC.num_videos:,} |" in card
    assert "must be fetched from their sources" in card


def test_videofolder_layout(built, tmp_path):
    _, data, configs, _ = built
    folder = write_videofolder(configs["qa"], tmp_path / "videofolder", video_root=data.video_root)
    loaded = datasets.load_dataset(folder)
    for split, rows in configs["qa"].items():
        videos = loaded[split].cast_column("video", datasets.Video(decode=False))
        assert videos["id"] == rows["id"] and videos["answer"] == rows["answer"]
        for row, original in zip(videos, rows, strict=True):
            path = row["video"]["path"]
            assert path.endswith(f"/{split}/{original['source']}/{original['video']}")
            assert (
                open(path, "rb").read()
                == open(f"{data.video_root}/{original['source']}/{original['video']}", "rb").read()
            )
