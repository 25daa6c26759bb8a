"""Child processes that never outlive evaluate.py.

evaluate.py starts lmms-eval in a new session (its own process group), forwards SIGINT / SIGTERM to that group, and
asks the kernel to send SIGTERM to its child when evaluate.py itself dies, even by SIGKILL (`die_with_parent`,
PR_SET_PDEATHSIG on Linux, a polling thread elsewhere). The lmms-eval processes do the same towards their own parent
(`python -m hour_llava_lmms.launch`), so the chain evaluate.py -> accelerate launch -> ranks unwinds from any link.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Receive `sig` when the parent process exits. Safe to call between fork and exec (a `preexec_fn`)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)
        return
    threading.Thread(target=_watch_parent, args=(parent, sig), daemon=True).start()


def _watch_parent(parent: int, sig: int, interval: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os.kill(os.getpid(), sig)


def stop_group(process, grace: float = 20.0) -> None:
    """SIGTERM the process group `process` leads, then SIGKILL it if it is still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
