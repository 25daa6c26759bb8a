"""The local Hub speaks enough of the real HTTP API for the unpatched `huggingface_hub` client.

One child process (HF_ENDPOINT -> the mock, Xet off, empty cache) creates a repo, uploads a folder with regular and
LFS files twice (the second commit is skipped as unchanged), lists trees and paths, downloads a snapshot, and sees
the client's own error classes for missing files, folders and repos; then `datasets` pushes a DatasetDict and loads
it back by repo id, whole and streamed. The parent checks the stored commits and bytes.
"""

from __future__ import annotations

import hashlib
import json
import textwrap

from mock_hub import mock_hub, run_hub_client  # noqa: F401

CLIENT = textwrap.dedent(
    """
    import json, os, sys
    from huggingface_hub import HfApi, snapshot_download, hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    api = HfApi()
    report = {"user": api.whoami()["name"]}
    api.create_repo("tester/m", exist_ok=True)
    api.create_repo("tester/m", exist_ok=True)
    os.makedirs("up/sub", exist_ok=True)
    open("up/a.txt", "w").write("hello")
    with open("up/sub/w.safetensors", "wb") as handle:
        handle.write(bytes(range(256)) * 20)
    first = api.upload_folder(folder_path="up", repo_id="tester/m").oid
    report["same_commit"] = api.upload_folder(folder_path="up", repo_id="tester/m").oid == first
    report["commit"] = first
    report["files"] = sorted(api.list_repo_files("tester/m"))
    report["sub"] = [entry.path for entry in api.list_repo_tree("tester/m", path_in_repo="sub")]
    report["lfs"] = {e.path: e.lfs is not None for e in api.get_paths_info("tester/m", ["a.txt", "sub/w.safetensors"])}
    folder = snapshot_download("tester/m")
    report["downloaded"] = open(os.path.join(folder, "sub", "w.safetensors"), "rb").read().hex()
    report["sha"] = api.model_info("tester/m").sha
    for name, call in {
        "missing_file": lambda: hf_hub_download("tester/m", "nope.txt"),
        "missing_dir": lambda: list(api.list_repo_tree("tester/m", path_in_repo="nope")),
        "missing_repo": lambda: api.model_info("tester/absent"),
    }.items():
        try:
            call()
            report[name] = None
        except (RemoteEntryNotFoundError, RepositoryNotFoundError) as error:
            report[name] = type(error).__name__
    from datasets import Dataset, DatasetDict, load_dataset

    rows = DatasetDict({"train": Dataset.from_dict({"x": list(range(6))}), "test": Dataset.from_dict({"x": [7]})})
    rows.push_to_hub("tester/d")
    loaded = load_dataset("tester/d")
    report["dataset"] = {split: list(loaded[split]["x"]) for split in loaded}
    report["streamed"] = [row["x"] for row in load_dataset("tester/d", split="train", streaming=True)]
    report["dataset_files"] = sorted(api.list_repo_files("tester/d", repo_type="dataset"))
    print(json.dumps(report))
    """
)


def test_unpatched_client_round_trip(mock_hub, tmp_path):  # noqa: F811 - the fixture
    report = json.loads(run_hub_client(mock_hub, CLIENT, [], tmp_path).stdout.strip().splitlines()[-1])
    weights = bytes(range(256)) * 20
    assert report["user"] == "tester"
    assert report["same_commit"] and report["sha"] == report["commit"]
    assert report["files"] == [".gitattributes", "a.txt", "sub/w.safetensors"]
    assert report["sub"] == ["sub/w.safetensors"]
    assert report["lfs"] == {"a.txt": False, "sub/w.safetensors": True}
    assert bytes.fromhex(report["downloaded"]) == weights
    assert report["missing_file"] == report["missing_dir"] == "RemoteEntryNotFoundError"
    assert report["missing_repo"] == "RepositoryNotFoundError"
    assert report["dataset"] == {"train": list(range(6)), "test": [7]} and report["streamed"] == list(range(6))
    assert "README.md" in report["dataset_files"]
    assert any(name.startswith("data/train-") and name.endswith(".parquet") for name in report["dataset_files"])
    repo = mock_hub.store.repo("model", "tester/m")
    head = repo.commits[repo.branches["main"]]
    assert head.sha == report["commit"] and len(repo.commits) == 2  # initial commit + one upload
    assert head.files["sub/w.safetensors"].sha256 == hashlib.sha256(weights).hexdigest()
