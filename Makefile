# The two commands of the README, plus the pieces CI calls.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install lint types check bench bench-postgres bench-llm bench-datasets bench-instructions clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/batchyard demo

lint: install
	$(VENV)/bin/ruff check batchyard tests bench
	$(VENV)/bin/ruff format --check batchyard tests bench

# mypy over batchyard (strict), tests and bench (check_untyped_defs): see pyproject.toml
types: install
	$(VENV)/bin/mypy

test: lint types
	$(VENV)/bin/pytest

bench: install
	$(PY) -m pip install -qq 'huey>=2.5'
	$(PY) bench/core.py

bench-postgres: install
	$(PY) -m pip install -qq 'procrastinate>=2'
	$(PY) bench/postgres.py

bench-llm: install
	$(PY) bench/llm.py

bench-datasets: install
	$(PY) bench/datasets.py

bench-instructions: install
	$(PY) bench/instructions.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
