"""`python -m hour_llava_lmms.launch <lmms-eval arguments>`: lmms-eval's CLI, after checking the environment.

evaluate.py starts lmms-eval through this module (directly or under `accelerate launch`). Before handing over it
* checks that `import evaluate` gives the Hugging Face `evaluate` library that lmms-eval imports (our repository has
  an `evaluate.py` script, which must never stand in for it), and rank 0 writes what it found to
  `$HOUR_LLAVA_RUN_INFO` (JSON) when that is set;
* with several processes and no GPU, sets ACCELERATE_USE_CPU=true, so accelerate builds a gloo process group and
  each process gets its real rank (without it every process thinks it is rank 0 of 1);
* with HOUR_LLAVA_DIE_WITH_PARENT=1 (evaluate.py sets it), ends itself when its parent process ends.
"""

from __future__ import annotations

import json
import os
import sys

from .process_guard import die_with_parent


def check_evaluate_library() -> str:
    """The file of the `evaluate` module this process imports; raise if it is not the installed library."""
    import evaluate

    path = os.path.abspath(getattr(evaluate, "__file__", "") or "")
    if not hasattr(evaluate, "load") or "site-packages" not in path.split(os.sep):
        raise RuntimeError(
            f"`import evaluate` gives {path}, not the Hugging Face evaluate library that lmms-eval needs; "
            "run lmms-eval from a folder that has no evaluate.py"
        )
    return path


def write_run_info(path: str, info: dict) -> None:
    """Atomic JSON write (temporary file, then rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    os.replace(tmp, path)


def use_cpu_process_group() -> bool:
    """Several processes and no GPU: accelerate must be told to run distributed on the CPU."""
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def main() -> None:
    if os.environ.get("HOUR_LLAVA_DIE_WITH_PARENT") == "1":
        die_with_parent()
    if use_cpu_process_group():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    info = {"evaluate_module": check_evaluate_library(), "argv": sys.argv[1:], "cwd": os.getcwd()}
    target = os.environ.get("HOUR_LLAVA_RUN_INFO")
    if target and int(os.environ.get("RANK", "0")) == 0:
        write_run_info(target, info)
    from lmms_eval.__main__ import cli_evaluate

    sys.argv = ["lmms-eval", *sys.argv[1:]]
    cli_evaluate()


if __name__ == "__main__":
    main()
