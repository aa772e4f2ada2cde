# Quick start: `make demo` and `make test` work on a machine with only python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo demo-sim test lint typecheck docs unit slow soak chaos bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,docs]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

$(VENV)/.installed-tls: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[tls]'
	touch $@

# Three real `raftpy serve` processes on loopback, on mutual TLS (certificates from
# `raftpy tls` in a temporary directory; --no-tls for plain TCP): writes, transfer,
# SIGKILL, re-election, a member joining and one handing over.
demo: $(VENV)/.installed-tls
	$(BIN)/python -m raftpy.demo_net

# The same story in the deterministic simulator, under virtual time.
demo-sim: $(VENV)/.installed
	$(BIN)/python -m raftpy.demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check raftpy tests benchmarks

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# The documentation site (docs/ + the API reference from the docstrings) in site/.
# --strict: a broken link, anchor or docstring reference fails the build.
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

test: lint typecheck docs unit

# The tests marked slow (deselected by default): the rolling replacement of a
# 3-process cluster under a continuous writer; the 1,000-connection flood.
slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow -s

# Long-running seeded fuzzing, not part of `make test`.
soak: $(VENV)/.installed
	$(BIN)/python -m raftpy.sim --seeds 1000

# Jepsen-style chaos run on real processes: make chaos SECONDS=300 SEED=7 NODES=5
SECONDS ?= 60
SEED    ?= 1
NODES   ?= 3
chaos: $(VENV)/.installed
	$(BIN)/python -m raftpy.chaos --seconds $(SECONDS) --seed $(SEED) --nodes $(NODES)

$(VENV)/.installed-fuzz: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[fuzz]'
	touch $@

# Coverage-guided fuzzing (atheris) of every decoder, SECONDS per target; not part of
# `make test`. A crash leaves crash-* here and fails the run (fuzz/run.py).
FUZZ_TARGETS := frames handshake codec kv records join
fuzz: $(VENV)/.installed-fuzz
	@mkdir -p .fuzz; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t ($(SECONDS) s)"; \
		$(BIN)/python fuzz/run.py $$t $(SECONDS) > .fuzz/$$t.log 2>&1 \
			|| { tail -40 .fuzz/$$t.log; exit 1; }; \
		grep -E "^Done" .fuzz/$$t.log; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site
