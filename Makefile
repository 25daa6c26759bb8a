# The two commands of the README: `make demo` and `make test`. Both set up .venv from requirements/lock.txt first.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) demo.py

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/long_video_memory.py
