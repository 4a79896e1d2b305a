# Two commands do all set-up on a fresh Debian 12 machine (as root):
#   make run    set up, build the templates, run the sample bot in a STANDARD container
#   make test   set up, then ruff, mypy and the whole test suite
#   make serve  set up, then run the host service in the foreground (/run/codex32/codex32.sock)
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
CODEX32 := $(BIN)/codex32
export CODEX32_STORAGE_DIR ?= /var/lib/codex32

.PHONY: setup run serve test lint typecheck unit integration bench clean stress

TEMPLATES := busybox python

setup:
	@./setup.sh

# One line per template built; a build's full output only when it fails.
run: setup
	@n=0; for t in $(TEMPLATES); do n=$$((n + 1)); \
		echo "==> building template $$t [$$n/$(words $(TEMPLATES))]"; \
		log=$$(mktemp "$${TMPDIR:-/tmp}/codex32-build.XXXXXX"); \
		if ! $(CODEX32) build $$t >"$$log" 2>&1; then \
			echo "make run: building template $$t failed; full output in $$log:" >&2; \
			tail -n 25 "$$log" | sed 's/^/    /' >&2; exit 1; fi; \
		rm -f "$$log"; done
	@echo "==> running bots/sample_bot.py in a STANDARD container"
	@# --network none: the sample needs no network, and the default bridge would be
	@# created in this machine's real network namespace.
	@$(CODEX32) run --rm --isolation standard --network none -v $(CURDIR)/bots:/bots:ro \
		python -- python3 /bots/sample_bot.py --beats 3 --interval 0.5

serve: setup
	$(CODEX32) serve

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
