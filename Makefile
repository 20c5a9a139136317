# shelf-pipeline: every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GPU ?= 0
FLOWER ?= 0

.PHONY: help venv sysdeps test unit lint infra-check models eval bench bench-models demo up down status chaos clean

help:
	@echo "make demo    start the local stack, upload 24 generated photos, show their results"
	@echo "make test    lint, type-check and run the whole suite against LocalStack and Redis"
	@echo "make up      keep LocalStack, Redis, workers and the listener running"
	@echo "make down    stop what make up started"
	@echo "make models  train both default detectors and measure them (installs the train extra)"
	@echo "make eval    measure the committed detectors on 200 unseen photos per display kind"
	@echo "make bench   pipeline throughput against its compute floor (shelf bench)"
	@echo "make bench-models  detector and naming latency"
	@echo "make chaos   fault campaign: 1,000 photos under kills, Redis crash, S3 faults"

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

# Static checks of infra/ (Kubernetes and Terraform, offline): checkov in a venv of its own.
CHECKOV := infra/.venv/bin/checkov
$(CHECKOV):
	@$(PYTHON) -m venv infra/.venv
	@infra/.venv/bin/pip install -q --upgrade pip
	@infra/.venv/bin/pip install -q 'checkov==3.3.30'

infra-check: $(CHECKOV)
	$(CHECKOV) -d infra/k8s -d infra/terraform --compact --quiet

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

# Starts LocalStack and Redis when they do not answer, and stops only what it started.
test: $(STAMP) sysdeps lint infra-check
	@started="$$(bash scripts/stack.sh services)" || exit 1; \
	trap 'bash scripts/stack.sh stop $$started' EXIT; \
	$(PY) -m pytest tests -q -ra

# FLOWER=1 also starts Flower on 127.0.0.1:5555.
up: $(STAMP) sysdeps
	@bash scripts/stack.sh services >/dev/null
	@FLOWER=$(FLOWER) bash scripts/stack.sh app >/dev/null
	@echo "stack up: put photos into s3://shelf-raw/raw/{store}/{aisle}/{bay}/{camera}/ (endpoint http://127.0.0.1:4566)"
	@echo "metrics: http://127.0.0.1:9808/metrics"

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

# Its own buckets and queues; it crashes and restarts the local Redis once.
chaos: $(STAMP) sysdeps
	@started="$$(bash scripts/stack.sh services)" || exit 1; \
	trap 'bash scripts/stack.sh stop $$started' EXIT; \
	$(VENV)/bin/shelf chaos --photos 1000

# GroceryStoreDataset (MIT): its packshots and photos are the real product imagery of the
# training shelves. scripts/fetch_grocery.sh clones it (needs github.com) into data/.
GROCERY ?= data/GroceryStoreDataset

models: $(VENV)/.train
	@test -f "$(GROCERY)/dataset/classes.csv" || { echo "GroceryStoreDataset not found at $(GROCERY):" \
	  "run scripts/fetch_grocery.sh, or make models GROCERY=/path/to/GroceryStoreDataset" >&2; exit 2; }
	$(PY) -m pipeline.train.run --grocery $(GROCERY) --threads 2
	$(PY) -m pipeline.train.embed --grocery $(GROCERY) --threads 2
	$(PY) -m pipeline.train.embed --grocery $(GROCERY) --threads 2 --blend 0.65 --source 6 --version 7
	$(MAKE) eval

# Synthetic world (closed, with SKU names from recognition); real data when given:
# make eval REAL=/path/to/labelled/photos GROCERY=/path/to/GroceryStoreDataset
eval: $(STAMP)
	$(VENV)/bin/shelf eval --model product-light --model product-heavy --count 200 --seed 9001 --write-card
	@if [ -n "$(REAL)" ]; then $(VENV)/bin/shelf eval-real --model product-light --data "$(REAL)"; fi
	@if [ -f "$(GROCERY)/dataset/classes.csv" ]; then for ref in "" "$(GROCERY)/dataset/train"; do \
	  $(VENV)/bin/shelf eval-recognition --gallery "$(GROCERY)/dataset/iconic-images-and-descriptions" \
	  --queries "$(GROCERY)/dataset/test" $${ref:+--reference "$$ref"} || exit 1; done; fi

# Starts the local stack if none is running, and stops what it started.
bench: $(STAMP) sysdeps
	@started="$$(bash scripts/stack.sh services)" || exit 1; \
	apps="$$(bash scripts/stack.sh app)" || exit 1; \
	trap 'bash scripts/stack.sh stop $$apps $$started' EXIT; \
	$(VENV)/bin/shelf bench $(BENCH_ARGS)

bench-models: $(STAMP)
	$(PY) scripts/bench_detector.py

clean:
	rm -rf $(VENV) infra/.venv .mypy_cache .ruff_cache .pytest_cache run
