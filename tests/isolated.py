"""Run a script in a fresh interpreter where this package cannot be imported, with an empty Hugging Face cache.

That is how a user who only has a checkpoint folder (and `trust_remote_code=True`) sees our files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BLOCK_PACKAGE = '''
import sys


class RefuseHourLlavaPackage:
    """Make the installed package unimportable, so only a checkpoint's own files can define our classes."""

    def find_spec(self, name, path=None, target=None):
        if name == "modeling_hour_llava" or name.startswith("modeling_hour_llava."):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, RefuseHourLlavaPackage())
try:
    import modeling_hour_llava  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("the package modeling_hour_llava is still importable in the child")
'''


def run_isolated(script: str, args: list[str], workdir: Path, hf_home: Path, timeout: int = 300):
    """Write `script` (after the import blocker) to `workdir` and run it; raise with stderr if it fails."""
    path = workdir / "child.py"
    path.write_text(BLOCK_PACKAGE + script)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRANSFORMERS_CACHE", "HF_MODULES_CACHE")}
    env.update(
        HF_HOME=str(hf_home),
        HF_MODULES_CACHE=str(hf_home / "modules"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    process = subprocess.run(
        [sys.executable, str(path), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    if process.returncode != 0:
        raise AssertionError(f"child failed (rc={process.returncode}):\n{process.stderr[-6000:]}")
    return process
