# The two commands of the README: `make demo` and `make test`. Both set up .venv from requirements/lock.txt first.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench check-install check-lower-bounds
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) demo.py

test: setup
	$(PY) -m pytest -q  # testpaths: tests/ (the product) and research/ (the recall study)

bench: setup
	$(PY) benchmarks/long_video_memory.py

# The wheel in a fresh venv next to an existing torch/transformers, then [all] (minutes, about 7 GB in /tmp).
check-install: setup
	bash scripts/check_install.sh

# The core, training and dataset tests on the lower bounds of pyproject.toml's version ranges.
check-lower-bounds: setup
	bash scripts/check_lower_bounds.sh
