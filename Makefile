# Quickstart targets. Both create .venv when missing (Python 3.10+ on PATH as python3).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The constraints file pins the CPU build of torch; the package itself keeps a range.
$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/prunelab demo

test: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/masked_step.py
	$(BIN)/python bench/mask_time.py
	$(BIN)/python bench/structured_speed.py
	$(BIN)/python bench/mask_sensitivity.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
