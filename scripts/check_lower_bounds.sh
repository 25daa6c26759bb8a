#!/usr/bin/env bash
# Run the core, training and dataset tests on the lower bounds of pyproject.toml's ranges.
# A venv gets requirements/lower-bounds.txt exactly (no dependencies); everything else (torch, torchvision, av,
# accelerate, ...) comes from the project's .venv (the lock's versions) through a .pth file placed after the venv's
# own site-packages, so the lower-bound releases win. Needs `make setup` first and the package index.
#   bash scripts/check_lower_bounds.sh [PYTEST ARGS]     # default: the test files below, without the slow ones
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${LOWER_BOUNDS_VENV:-/tmp/hour-llava-lower-bounds}
rm -rf "$VENV"
python3.11 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps -r requirements/lower-bounds.txt
"$REPO/.venv/bin/python" -c "import site; print(site.getsitepackages()[0])" \
    > "$VENV/lib/python3.11/site-packages/zz_project_venv.pth"
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -i -E "^($(sed -n 's/==.*//p' requirements/lower-bounds.txt | paste -sd'|'))=="
TESTS=(tests/test_config.py tests/test_generation.py tests/test_processor.py tests/test_model.py tests/test_memaug.py
       tests/test_memory.py tests/test_video_loading.py tests/test_remote_code.py tests/test_anyres.py
       tests/test_train.py tests/test_videomarathon.py tests/test_dataset_mixtures.py tests/test_dataset_hub.py)
[ $# -gt 0 ] && TESTS=("$@")
# Deselected: this test calls transformers' `activation_checkpointing_enable`, new in 5.23 (the product turns
# checkpointing on through TrainingArguments' `gradient_checkpointing`, which 5.20 has).
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$REPO" "$VENV/bin/python" -m pytest -q -m "not slow" \
    -p no:cacheprovider --deselect tests/test_model.py::test_gradient_checkpointing_gives_the_same_gradients \
    "${TESTS[@]}"
