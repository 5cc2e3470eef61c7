# Isthmus: `make demo` runs the whole mesh locally, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_VENV ?= .venv-bench
BENCH_PYTHON ?= /usr/bin/python3
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp
CONSUL := .tools/bin/consul
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)

.PHONY: install demo up test test-unit lint typecheck bench clean images compose-up compose-down

install: $(STAMP) $(CONSUL)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(CONSUL): scripts/get-consul.sh
	./scripts/get-consul.sh

demo: install
	$(BIN)/isthmus demo

up: install
	$(BIN)/isthmus up

test: install
	./scripts/install-test-tools.sh
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest tests/unit tests/simulation

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy shared services

# Data-plane benchmark (direct, sidecar, mesh path, nginx, haproxy); ARGS=--quick for a one-minute smoke run.
# It runs on its own venv made from the distribution's python3 (PGO+LTO, as production runs; see bench/README.md).
bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench.dataplane $(ARGS)

$(BENCH_STAMP): $(STAMP) scripts/bench-venv.sh
	./scripts/bench-venv.sh $(VENV) $(BENCH_VENV) $(BENCH_PYTHON)
	touch $@

clean:
	rm -rf $(VENV) $(BENCH_VENV) .tools .isthmus

# Container images (stand-ins for the public ones where no registry is reachable) and the compose mesh.
images:
	bash scripts/build-images.sh

compose-up: images
	$(COMPOSE) up -d

compose-down:
	$(COMPOSE) down -v
