"""What a run skipped, summed over data-loader workers and processes, and the limits that stop it.

Broken samples are counted where they are found: in the collator, which may run in a data-loader worker process.
Their report travels in the batch (`collator.REPORT_KEY`); the trainer takes it out before the forward and adds it
here. Counts are summed over processes (all-reduce) every step, so every process sees the same totals and stops at
the same step when too many samples are broken.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .collator import SKIP_REASONS

EXAMPLES_KEPT = 20  # broken samples named per process, for the log and the error


class TooManyBrokenSamples(RuntimeError):
    """More samples were broken than `--max_broken_fraction` of the run allows."""


class TooManyNonFiniteSteps(RuntimeError):
    """More optimizer steps had NaN or infinite gradients than `--max_nonfinite_steps` allows."""


@dataclass
class RunReport:
    """This process's counts: rows drawn, videos read from cached feature files, skipped samples by reason (and the
    first of them by name). `restored`: totals of all processes from the checkpoint a run resumed from."""

    rows: int = 0
    cached_features: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)
    restored: dict = field(default_factory=dict)

    def add(self, batch_report: dict) -> None:
        """One batch's report from `HourLlavaDataCollator` (`rows`, `cached_features`, `skipped` entries)."""
        self.rows += batch_report["rows"]
        self.cached_features += batch_report["cached_features"]
        for entry in batch_report["skipped"]:
            self.skipped[entry["reason"]] += 1
            if len(self.examples) < EXAMPLES_KEPT:
                self.examples.append(entry)

    def totals(self, accelerator, is_first_process: bool) -> dict:
        """Counts summed over every process (a collective: every process must call it at the same point), plus the
        restored ones (counted once)."""
        local = [self.rows, self.cached_features, *(self.skipped[reason] for reason in SKIP_REASONS)]
        if is_first_process and self.restored:
            old = self.restored
            local[0] += old.get("rows", 0)
            local[1] += old.get("cached_features_used", 0)
            for index, reason in enumerate(SKIP_REASONS):
                local[2 + index] += old.get("skipped_samples", {}).get(reason, 0)
        values = torch.tensor(local, dtype=torch.long, device=accelerator.device)
        if accelerator.num_processes > 1:
            values = accelerator.reduce(values, reduction="sum")
        rows, cached, *skipped = values.tolist()
        return {
            "rows": rows,
            "cached_features_used": cached,
            "skipped_samples": {reason: count for reason, count in zip(SKIP_REASONS, skipped, strict=True) if count},
        }


def broken_samples_error(totals: dict, allowed: float, planned: int, fraction: float, examples: list[dict]) -> str:
    skipped = totals["skipped_samples"]
    named = "; ".join(f"{e['sample']} ({e['reason']}): {e['detail']}" for e in examples[:EXAMPLES_KEPT])
    return (
        f"{sum(skipped.values())} broken samples of {totals['rows']} drawn so far ({dict(skipped)}), more than "
        f"--max_broken_fraction {fraction} of the run's {planned} samples ({allowed:g}). Fix or drop them (rebuild "
        f"the dataset with dataset_builder, which reports them), or raise --max_broken_fraction. First: {named}"
    )


__all__ = ["EXAMPLES_KEPT", "RunReport", "TooManyBrokenSamples", "TooManyNonFiniteSteps", "broken_samples_error"]
