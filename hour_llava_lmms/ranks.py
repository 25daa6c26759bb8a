"""Several processes: each video is encoded by one rank.

lmms-eval hands each rank every N-th document (`RANK` / `WORLD_SIZE`), so the questions about one video are spread
over all ranks, and each rank would encode every video. Instead the ranks exchange their pending questions, assign
whole videos to ranks (largest groups first, to the least loaded rank: the same plan on every rank), answer the
videos they were given, and exchange the answers; each rank then returns its own requests' answers in lmms-eval's
order. Two `all_gather_object` calls per `generate_until`, on the process group accelerate set up (gloo on CPU,
NCCL on GPU).

Every rank must call `generate_until` the same number of times. lmms-eval does (once per request type, even with no
requests), except with `--use_cache`, which calls the model only for requests missing from its response cache, so
one rank could wait for the others forever. With `--use_cache` on the command line the ranks therefore do not
share: each answers its own documents and a video asked about on k ranks is encoded k times (up to N). Resume
several processes through the model's `journal_dir` instead (evaluate.py does).
"""

from __future__ import annotations

import heapq
import os
import sys
from collections.abc import Callable, Hashable, Sequence


def process_rank_and_count(accelerator) -> tuple[int, int]:
    """(rank, world size): accelerate's when it runs distributed, else the launcher's RANK / WORLD_SIZE (what
    lmms-eval shards documents by), so a rank never takes another's journal file."""
    if accelerator.num_processes > 1:
        return accelerator.process_index, accelerator.num_processes
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def distributed_ready(world_size: int) -> bool:
    import torch.distributed as dist

    return world_size > 1 and dist.is_available() and dist.is_initialized()


def response_cache_requested(argv: list[str] | None = None) -> bool:
    """lmms-eval was started with `--use_cache` (its response cache may skip the model on some ranks only)."""
    argv = sys.argv if argv is None else argv
    return any(arg == "--use_cache" or arg.startswith("--use_cache=") for arg in argv)


def assign_groups(sizes: Sequence[int], world_size: int) -> list[int]:
    """Rank of each group: largest first, each to the rank with the fewest questions so far (ties: lowest rank)."""
    loads = [(0, rank) for rank in range(world_size)]
    heapq.heapify(loads)
    owner = [0] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, rank = heapq.heappop(loads)
        owner[index] = rank
        heapq.heappush(loads, (load + sizes[index], rank))
    return owner


def all_gather(value: object, world_size: int) -> list:
    import torch.distributed as dist

    gathered = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def share_work(items: list, rank: int, world_size: int, key: Callable[[object], Hashable]) -> list[tuple[int, object]]:
    """Every rank's items, grouped by `key` (a video); returns this rank's share as (origin rank, item), whole groups
    only, in first-seen order."""
    everyone = all_gather(items, world_size)
    groups: dict[Hashable, list[tuple[int, object]]] = {}
    for origin, rank_items in enumerate(everyone):
        for item in rank_items:
            groups.setdefault(key(item), []).append((origin, item))
    members = list(groups.values())
    owner = assign_groups([len(m) for m in members], world_size)
    return [pair for group, r in zip(members, owner, strict=True) if r == rank for pair in group]


def gather_answers(mine: dict, error: str | None, world_size: int) -> dict:
    """Merge every rank's {(origin rank, index): answer}; raise on every rank if any rank failed."""
    gathered = all_gather((mine, error), world_size)
    failures = [f"rank {r}: {err}" for r, (_, err) in enumerate(gathered) if err]
    if failures:
        raise RuntimeError("hour_llava: answering failed on another rank: " + "; ".join(failures))
    merged: dict = {}
    for answers, _ in gathered:
        merged.update(answers)
    return merged
