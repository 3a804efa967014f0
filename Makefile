# The README's commands. `make run` and `make test` are the quickstart; both create .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: install run test test-all lint typecheck schemas docs bench retrain clean

# torch first, by exact version: pip takes the local CPU wheel, and the pin in pyproject is then
# satisfied, so no multi-GB CUDA wheels are pulled. constraints.txt pins everything else as tested.
$(BIN)/.installed: pyproject.toml constraints.txt
	@echo "[1/4] creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/4] upgrading pip"
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "[3/4] installing torch 2.13.0 (CPU build; the largest download, a few minutes)"
	$(BIN)/python -m pip install --quiet torch==2.13.0
	@echo "[4/4] installing synthreg and its dependencies as pinned in constraints.txt (a few minutes)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@
	@echo "installed: $(BIN)/synthreg"

install: $(BIN)/.installed

# A fresh clone reproduces every committed output byte for byte (issue 9), so `dvc repro` finds the
# train stage up to date and trains nothing; when the MLflow store in use (a local mlflow.db, or the
# server MLFLOW_TRACKING_URI names) holds no digits-classifier yet, it trains once more, so a newcomer or a
# team's new server gets a model (digits-classifier/1) that `synthreg trace` follows.
export HAS_DIGITS_MODEL := import json, sys; rows = json.load(sys.stdin)["models"]; \
	sys.exit(0 if any(r["name"] == "digits-classifier" for r in rows) else 1)
run: install  ## main job: generate, filter, validate, train the default dataset (dvc repro)
	dvc repro
	@if ! synthreg models --json 2>/dev/null | python -c "$$HAS_DIGITS_MODEL"; then \
		echo "make run: the MLflow store ($${MLFLOW_TRACKING_URI:-mlflow.db}) holds no digits-classifier yet:" \
			"training once (dvc repro --force --single-item train@digits)"; \
		dvc repro --force --single-item train@digits; \
	fi

test: install  ## the fast suite (what CI runs)
	# Two workers (pytest-xdist), each test file on one of them, so a file's module fixtures are built once;
	# the 30 slowest are printed, for keeping the suite under 15 minutes on 2 cores.
	python -m pytest -q -n 2 --dist loadfile --durations=30

test-all: install  ## everything, slow tests included
	python -m pytest -q -m ''

lint: install  ## ruff, and import-linter's layer contracts (pyproject.toml, CONTRIBUTING.md)
	ruff check .
	ruff format --check .
	lint-imports

docs: install  ## the docs site, offline, into site/ (--strict: a broken link or reference fails)
	python scripts/docs_pages.py check
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet

typecheck: install
	mypy

schemas: install  ## re-export JSON Schemas from the pydantic models
	synthreg schema --out schemas

bench: install  ## benchmarks print their figures; see benchmarks/README.md
	python benchmarks/bench_generate.py
	python benchmarks/bench_validate.py
	python benchmarks/bench_verify.py
	python benchmarks/bench_lineage.py
	python benchmarks/bench_help.py

retrain: install  ## rebuild the tiny-digits weights (normally frozen)
	dvc repro --force --single-item train_generator

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site
