"""Score an Hour-LLaVA checkpoint with lmms-eval (`hour_llava_lmms.cli`; console script `hour-llava-evaluate`).
`python evaluate.py --help` lists every flag.

This file is a script. If the repository root is on `sys.path` (Python run from here, `python -m lmms_eval`), a
plain `import evaluate` would find this file instead of the Hugging Face `evaluate` library that lmms-eval imports;
imported under that name, this module therefore replaces itself with the library.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _hand_over_to_the_evaluate_library() -> None:
    """Imported as `evaluate`: load the real library from the other sys.path entries and stand aside."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]
    spec = importlib.machinery.PathFinder.find_spec("evaluate", path)
    if spec is None or spec.origin == os.path.abspath(__file__):
        raise ImportError("the Hugging Face `evaluate` library is not installed (this evaluate.py is a script)")
    library = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = library
    spec.loader.exec_module(library)


if __name__ == "evaluate":
    _hand_over_to_the_evaluate_library()
elif __name__ == "__main__":
    from hour_llava_lmms.cli import main

    sys.exit(main())
