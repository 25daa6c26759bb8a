"""Push Hour-LLaVA folders to the Hugging Face Hub.

    python -m modeling_hour_llava.push FOLDER REPO_ID                    a converted (or saved) model folder
    python -m modeling_hour_llava.push CHECKPOINT REPO_ID --checkpoint   a training checkpoint, as it is on disk

A model folder is loaded and pushed with `model.push_to_hub` and `processor.push_to_hub`, so the Hub copy is what
`save_pretrained` writes (sharded safetensors, config with `auto_map`, the remote-code files, processor and tokenizer
files); its model card (README.md) is uploaded first, so `push_to_hub` keeps it. A training checkpoint
(`checkpoint-N/` of the Trainer) is uploaded with `upload_folder`, without the optimizer, scheduler, scaler, RNG and
DeepSpeed/FSDP optimizer shards unless `--include-optimizer` is given.

The Hub endpoint and token come from the environment (`HF_ENDPOINT`, `HF_TOKEN` or `hf auth login`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Trainer / DeepSpeed / FSDP files that only resume training (large, and pickles): skipped unless asked for.
OPTIMIZER_STATE_PATTERNS = [
    "optimizer.pt",
    "optimizer.bin",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "global_step*/*",
    "latest",
    "zero_to_fp32.py",
    "optimizer_*/*",
]


def require_folder(folder: str | Path, what: str) -> Path:
    """`folder` as a Path, which must be a directory holding config.json."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not {what}")
    return path


def prepare_repo(repo_id: str, private: bool | None, revision: str | None):
    """Create `repo_id` (and the branch `revision`) when missing; returns (HfApi, the full repo id)."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api, repo_id


def push_model(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    max_shard_size: str = "5GB",
    commit_message: str | None = None,
) -> str:
    """Push the model and processor of `folder` (and its README.md) to `repo_id`; returns the last commit url."""
    from .modeling_hour_llava import HourLlavaForConditionalGeneration
    from .processing_hour_llava import HourLlavaProcessor

    path = require_folder(folder, "an Hour-LLaVA model folder")
    api, repo_id = prepare_repo(repo_id, private, revision)
    if (path / "README.md").exists():
        api.upload_file(
            path_or_fileobj=str(path / "README.md"), path_in_repo="README.md", repo_id=repo_id, revision=revision
        )
    message = commit_message or f"Upload Hour-LLaVA from {path.name}"
    model = HourLlavaForConditionalGeneration.from_pretrained(path, dtype="auto")
    model.push_to_hub(repo_id, revision=revision, max_shard_size=max_shard_size, commit_message=message)
    processor = HourLlavaProcessor.from_pretrained(path)
    return processor.push_to_hub(repo_id, revision=revision, commit_message=f"{message}: processor")


def push_checkpoint(
    folder: str | Path,
    repo_id: str,
    *,
    include_optimizer: bool = False,
    path_in_repo: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
):
    """Upload a training checkpoint folder as it is, minus `OPTIMIZER_STATE_PATTERNS` unless `include_optimizer`.

    Returns the `CommitInfo` of the upload.
    """
    path = require_folder(folder, "a training checkpoint")
    api, repo_id = prepare_repo(repo_id, private, revision)
    return api.upload_folder(
        folder_path=str(path),
        repo_id=repo_id,
        path_in_repo=path_in_repo,
        revision=revision,
        ignore_patterns=None if include_optimizer else OPTIMIZER_STATE_PATTERNS,
        commit_message=commit_message or f"Upload {path.name}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeling_hour_llava.push", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="converted model folder, or a training checkpoint with --checkpoint")
    parser.add_argument("repo_id", help="owner/name on the Hub (created if missing)")
    parser.add_argument("--checkpoint", action="store_true", help="upload a training checkpoint folder as it is")
    parser.add_argument("--include-optimizer", action="store_true", help="with --checkpoint: keep optimizer state")
    parser.add_argument("--path-in-repo", help="with --checkpoint: sub-folder in the repo (e.g. checkpoint-500)")
    parser.add_argument("--private", action="store_true", default=None, help="create the repo private")
    parser.add_argument("--revision", help="branch to push to (created if missing)")
    parser.add_argument("--max-shard-size", default="5GB", help="safetensors shard size of a model push")
    parser.add_argument("--message", help="commit message")
    args = parser.parse_args(argv)
    common = dict(private=args.private, revision=args.revision, commit_message=args.message)
    if args.checkpoint:
        include, where = args.include_optimizer, args.path_in_repo
        print(
            push_checkpoint(
                args.folder, args.repo_id, include_optimizer=include, path_in_repo=where, **common
            ).commit_url
        )
    else:
        if args.include_optimizer or args.path_in_repo:
            parser.error("--include-optimizer and --path-in-repo apply to --checkpoint uploads")
        print(push_model(args.folder, args.repo_id, max_shard_size=args.max_shard_size, **common))
    return 0


if __name__ == "__main__":
    sys.exit(main())
