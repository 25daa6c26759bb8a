"""What a fresh clone of the repository holds, for tests that build or run from one."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clone_files() -> list[str]:
    """Paths (relative to the repository) of the tracked files and the untracked ones git does not ignore, as they
    are in the working tree now (deleted files left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listed.stdout.splitlines() if (REPO / name).is_file()]
