# shelf-pipeline: every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GPU ?= 0

.PHONY: help venv sysdeps test unit lint models eval bench demo up down status clean

help:
	@echo "make demo    start the local stack, upload 24 generated photos, show their results"
	@echo "make test    lint, type-check and run the whole suite against LocalStack and Redis"
	@echo "make up      keep LocalStack, Redis, workers and the listener running"
	@echo "make down    stop what make up started"
	@echo "make models  train both default detectors and measure them (installs the train extra)"
	@echo "make eval    measure the committed detectors on 200 unseen photos per display kind"
	@echo "make bench   detector latency benchmark"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@if [ "$(GPU)" = "1" ]; then \
	  $(PY) -m pip uninstall -q -y onnxruntime && \
	  $(PY) -m pip install -q --force-reinstall --no-deps 'onnxruntime-gpu>=1.19,<2'; fi
	@touch $@

venv: $(STAMP)

# System packages the suite needs: redis-server (the broker) and Chromium (report test).
sysdeps:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.train: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,train]'
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline tests scripts
	$(VENV)/bin/mypy --strict pipeline

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

# Starts LocalStack and Redis when they do not answer, and stops only what it started.
test: $(STAMP) sysdeps lint
	@started="$$(bash scripts/stack.sh services)" || exit 1; \
	trap 'bash scripts/stack.sh stop $$started' EXIT; \
	$(PY) -m pytest tests -q -ra

up: $(STAMP) sysdeps
	@bash scripts/stack.sh services >/dev/null
	@bash scripts/stack.sh app >/dev/null
	@echo "stack up: put photos into s3://shelf-raw/raw/{store}/{aisle}/{bay}/{camera}/ (endpoint http://127.0.0.1:4566)"

down:
	@bash scripts/stack.sh down

status: $(STAMP)
	@bash scripts/stack.sh status
	@$(VENV)/bin/shelf status

demo: $(STAMP) sysdeps
	@started="$$(bash scripts/stack.sh services)" || exit 1; \
	apps="$$(bash scripts/stack.sh app)" || exit 1; \
	trap 'bash scripts/stack.sh stop $$apps $$started' EXIT; \
	$(VENV)/bin/shelf demo --count 24

models: $(VENV)/.train
	$(PY) -m pipeline.train.run --model gondola-light --threads 2
	$(PY) -m pipeline.train.run --model endcap-heavy --threads 2
	$(MAKE) eval

eval: $(STAMP)
	$(VENV)/bin/shelf eval --model gondola-light --model endcap-heavy --count 200 --seed 9001 --write-card

bench: $(STAMP)
	$(PY) scripts/bench_detector.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache run
