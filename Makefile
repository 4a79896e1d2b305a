# Two commands do all set-up on a fresh Debian 12 machine (as root):
#   make run    set up, build the templates, run the sample bot in a STANDARD container
#   make test   set up, then ruff, mypy and the whole test suite
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
CODEX32 := $(BIN)/codex32
export CODEX32_STORAGE_DIR ?= /var/lib/codex32

.PHONY: setup run test lint typecheck unit integration bench clean stress

setup:
	./setup.sh

run: setup
	$(CODEX32) build busybox
	$(CODEX32) build python
	@# --network none: the sample needs no network, and the default bridge would be
	@# created in this machine's real network namespace.
	$(CODEX32) run --rm --isolation standard --network none -v $(CURDIR)/bots:/bots:ro \
		python -- python3 /bots/sample_bot.py --beats 3 --interval 0.5

lint: setup
	$(BIN)/ruff check codex32 tests bench
	$(BIN)/ruff format --check codex32 tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit

integration: setup
	$(BIN)/pytest tests/integration

test: lint typecheck
	$(BIN)/pytest

# The full fault, hostile-input and load suites (make test runs a bounded subset of
# each; pytest's `stress` marker selects the rest), then the figures they measured.
stress: setup
	rm -f $(CURDIR)/.stress-figures.jsonl
	CODEX32_FIGURES=$(CURDIR)/.stress-figures.jsonl \
		$(BIN)/pytest tests/faults tests/hostile tests/load -m "stress or not stress" -q
	@echo "==> figures (docs/reliability.md):"; cat $(CURDIR)/.stress-figures.jsonl

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
