#!/usr/bin/env bash
# Prepare .whl/: the wheels the GPU machine needs to run benchmarks/gpu_check.py (docs/gpu.md).
#
# The GPU image has Python 3.12, torch, transformers, accelerate, peft, pyarrow, pandas and the rest of its list
# (/work/.library/device/KINDS.md), but no PyAV, datasets, TRL, lmms-eval and no network. This script writes, for
# CPython 3.12 on manylinux x86_64:
#   - our own wheel (hour-llava-hf, built from this checkout; installed there with --no-deps), for the
#     lmms_eval.models entry point that lmms-eval's child process looks our model up by;
#   - PyAV (the model's video loader imports it), datasets, TRL, lmms-eval and evaluate;
#   - the dependencies of those that the image lacks and that the check's processes really import (read off a
#     recorded run of every stage: sys.modules at exit, minus what the image has; optional imports such as wandb,
#     pydantic, numexpr, zstandard are left out).
# Versions are those of requirements/lock.txt. Usage: scripts/gpu_wheels.sh [PYTHON]   (default .venv/bin/python)
# It refuses to leave a folder over the budget: the working tree and the wheels travel together, 64 MiB at most.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
OUT=.whl
BUDGET_MIB=${GPU_WHEELS_BUDGET_MIB:-56}  # 64 MiB per call minus the working tree (about 6 MiB) and a margin
PACKAGES=(
    av datasets dill multiprocess trl lmms_eval evaluate
    loguru python-dotenv tenacity nltk pytz
    pytablewriter DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet
)

pins=()
for name in "${PACKAGES[@]}"; do
    # requirements/lock.txt spells names as PyPI does; compare them normalised (case, '-', '_', '.').
    pin=$("$PYTHON" - "$name" <<'EOF'
import re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
want = norm(sys.argv[1])
for line in open("requirements/lock.txt"):
    name, _, version = line.strip().partition("==")
    if version and norm(name) == want:
        print(f"{name}=={version}")
        break
else:
    sys.exit(f"{sys.argv[1]} is not pinned in requirements/lock.txt")
EOF
    )
    pins+=("$pin")
done

tmp=$(mktemp -d "${OUT}.tmp-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rm -rf build  # setuptools' staging folder: a stale one would put deleted modules into the wheel
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp" .
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp" "${pins[@]}"

bytes=$(du -cb "$tmp"/*.whl | tail -1 | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
if (( mib > BUDGET_MIB )); then
    echo "gpu_wheels: the wheels take $mib MiB, over the budget of $BUDGET_MIB MiB; nothing written" >&2
    exit 1
fi
rm -rf "$OUT"
mv "$tmp" "$OUT"
trap - EXIT
# .whl/ travels to the GPU machine as a carried (ignored) path, never as a commit.
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF "/.whl/" "$exclude" 2>/dev/null || echo "/.whl/" >> "$exclude"
ls -l "$OUT"
echo "gpu_wheels: $(ls "$OUT" | wc -l) wheels, $bytes bytes ($mib MiB) in $OUT/"
