#!/usr/bin/env bash
# Install the package as a user would, into a fresh virtual environment that already has torch and transformers,
# with pip's normal dependency resolution; then use it.
#   1. build the wheel from the source tree (tracked and untracked, not ignored, files);
#   2. a fresh venv with "the user's" torch, torchvision and an older transformers (our lower bound, 5.20.0);
#   3. pip install the wheel (core only): pip must keep the user's torch and transformers, and add no extra;
#   4. write and load a tiny checkpoint, answer a question about a real (PyAV-written) video;
#   5. pip install the wheel with [all]; run `--help` of every console script in an empty folder: exit 0, no file;
#      load again; lmms-eval finds `hour_llava` through the entry point, and its video tasks import.
# Prints each step's time and what pip installed or changed, and writes $WORK/summary.json.
# Takes minutes and about 7 GB under $WORK (torch's CUDA build): not part of `make test` (`make check-install`).
# Needs `make setup` first: the wheel is built with .venv's setuptools.
#   bash scripts/check_install.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=$(realpath -m "${1:-/tmp/hour-llava-install-check}")
PYTHON=${PYTHON:-python3.11}
USER_ENV=(torch==2.14.1 torchvision==0.29.1 transformers==5.20.0)
rm -rf "$WORK" && mkdir -p "$WORK"/{src,dist,run}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
STEPS="$WORK/steps.tsv"
: > "$STEPS"
step() {  # step NAME COMMAND...: run, time, record
  local name=$1 start end
  shift
  echo "== $name"
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  printf '%s\t%.1f\n' "$name" "$(echo "$end - $start" | bc)" | tee -a "$STEPS"
}
freeze() { "$WORK/venv/bin/python" -m pip list --format=freeze 2>/dev/null | sort > "$1"; }

copy_tree() {
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' name; do
    [ -f "$name" ] && install -D -m 644 "$name" "$WORK/src/$name"
  done
}
step "copy source tree" copy_tree
step "build wheel" "$REPO/.venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/hour_llava_hf-*.whl)
echo "wheel: $WHEEL ($(du -k "$WHEEL" | cut -f1) KiB)"

step "venv with the user's torch/transformers" bash -c \
  "'$PYTHON' -m venv '$WORK/venv' && '$WORK/venv/bin/python' -m pip install -q ${USER_ENV[*]}"
freeze "$WORK/user-env.txt"

step "pip install wheel (core)" "$WORK/venv/bin/python" -m pip install -q "$WHEEL"
freeze "$WORK/core.txt"
echo "-- pip added or changed for the core:"
comm -13 "$WORK/user-env.txt" "$WORK/core.txt" | tee "$WORK/core-added.txt"
for pin in "${USER_ENV[@]}"; do
  grep -qx "$pin" "$WORK/core.txt" || { echo "FAIL: the core install replaced $pin"; exit 1; }
done
for extra in trl peft datasets lmms_eval gguf; do
  if grep -qi "^${extra}==" "$WORK/core.txt"; then echo "FAIL: the core install pulled $extra"; exit 1; fi
done

load_tiny() {
  (cd "$WORK/run" && "$WORK/venv/bin/python" - <<'PY'
import time
started = time.time()
from transformers import AutoModelForImageTextToText, AutoProcessor

from dataset_builder.synthetic_video import write_video
from hour_llava_testing.tiny_model import write_tiny_checkpoint

folder = write_tiny_checkpoint("tiny", video_min_frames=8)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
video = write_video("clip.mp4", num_frames=40, fps=4, width=64, height=48)
messages = [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": "Colour?"}]}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
answer = model.generate(**inputs, max_new_tokens=4, do_sample=False)
print(f"tiny checkpoint loaded, {int(inputs['video_num_frames'][0])} frames, {answer.shape[1] - inputs['input_ids'].shape[1]} new tokens, {time.time() - started:.1f} s")
PY
  )
}
step "load a tiny checkpoint and answer (core)" load_tiny

step "pip install wheel[all]" "$WORK/venv/bin/python" -m pip install -q "$WHEEL[all]"
freeze "$WORK/all.txt"
echo "-- pip added or changed for [all]:"
comm -13 "$WORK/core.txt" "$WORK/all.txt" | tee "$WORK/all-added.txt"
echo "-- pip removed or replaced for [all]:"
comm -23 "$WORK/core.txt" "$WORK/all.txt" | tee "$WORK/all-removed.txt"

help_all() {
  local entry_points failures=0 name dir
  entry_points=$(ls -d "$WORK"/venv/lib/python3.*/site-packages/hour_llava_hf-*.dist-info)/entry_points.txt
  for name in $(sed -n '/^\[console_scripts\]/,/^\[/p' "$entry_points" | sed -n 's/^\(hour-llava-[a-z-]*\) = .*/\1/p'); do
    dir=$(mktemp -d "$WORK/help.XXXX")
    if (cd "$dir" && "$WORK/venv/bin/$name" --help > /dev/null) && [ -z "$(ls -A "$dir")" ]; then
      echo "ok   $name --help"
    else
      echo "FAIL $name --help (exit status or files: $(ls -A "$dir"))"; failures=$((failures + 1))
    fi
  done
  return $failures
}
step "every console script --help ([all])" help_all
step "load a tiny checkpoint and answer ([all])" load_tiny

lmms_eval_finds_us() {  # the entry point registers the model; the video tasks we wrap import (decord, cv2)
  (cd "$WORK/run" && "$WORK/venv/bin/python" -c "
from lmms_eval.models import get_model
import lmms_eval.tasks.longvideobench.utils, lmms_eval.tasks.videomme.utils
print('lmms-eval model hour_llava ->', get_model('hour_llava').__name__)")
}
step "lmms-eval finds hour_llava ([all])" lmms_eval_finds_us

"$WORK/venv/bin/python" - "$WORK" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
lines = lambda name: [line for line in (work / name).read_text().splitlines() if line]
summary = {
    "seconds": {name: float(seconds) for name, seconds in (line.split("\t") for line in lines("steps.tsv"))},
    "user_environment": lines("user-env.txt"),
    "core_added": lines("core-added.txt"),
    "all_added": lines("all-added.txt"),
    "all_removed": lines("all-removed.txt"),
}
(work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary["seconds"], indent=2))
PY
