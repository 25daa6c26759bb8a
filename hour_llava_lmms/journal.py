"""An append-only answer journal: evaluation resumes after a crash at the last answered question.

lmms-eval's `--use_cache` stores responses only after the model returns *all* requests of a type, so a run killed
after ten hours of LVBench keeps nothing. The journal appends one JSON line per answered (or skipped) request as it
happens (`<journal_dir>/answers_rank<k>.jsonl`, k the rank that answered, flushed and fsynced); a rerun with the
same journal (any number of processes) serves answered requests from it and retries skipped ones. Lines also carry
each video's duration and decode status, which `evaluate.py` reads for its per-length breakdown and its skipped
count, and one `stats` line per rank and call (requests, journal hits, skips, vision-tower runs, memory reuse).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time

OK, SKIPPED, STATS = "ok", "skipped", "stats"


def request_key(model_fingerprint: str, task: str, doc_id: int, prompt: str, videos: list[str], gen: dict) -> str:
    """What decides an answer: model, task, document, prompt, videos and generation settings."""
    payload = json.dumps([model_fingerprint, task, doc_id, prompt, videos, gen], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def read_entries(journal_dir: str) -> list[dict]:
    """Every line of every rank's journal in `journal_dir`, oldest first (by the time each line was written, so a
    later run on another rank wins); a torn last line is ignored."""
    entries = []
    for path in sorted(glob.glob(os.path.join(journal_dir, "answers_rank*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
    entries.sort(key=lambda entry: entry.get("time", 0.0))  # stable: same-time lines keep their file order
    return entries


class AnswerJournal:
    """Answers by request key, loaded from every rank's file, appended to this rank's file."""

    def __init__(self, journal_dir: str | None, rank: int = 0):
        self.path = None
        self.answers: dict[str, str] = {}
        if not journal_dir:
            return
        os.makedirs(journal_dir, exist_ok=True)
        for entry in read_entries(journal_dir):
            if entry.get("status") == OK:
                self.answers[entry["key"]] = entry["answer"]
            elif entry.get("status") == SKIPPED:
                self.answers.pop(entry.get("key"), None)
        self.path = os.path.join(journal_dir, f"answers_rank{rank}.jsonl")

    def lookup(self, key: str) -> str | None:
        return self.answers.get(key)

    def record(self, entry: dict) -> None:
        """Append one entry durably (flush + fsync), so a killed run keeps it; it is stamped with the time."""
        entry = {**entry, "time": time.time()}
        if entry.get("status") == OK:
            self.answers[entry["key"]] = entry["answer"]
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
