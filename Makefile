# The two commands of the README: `make run` (install + the example on the embedded default)
# and `make test` (install + the whole test suite). Everything lands in .venv and .cache.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench chaos clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)
	$(BIN)/python -m scripts.install_system_deps

run: install
	$(BIN)/fastdistill up --seeds examples/text2sql/seeds.jsonl --exit-when-done

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python -m bench

# 20 SIGKILLs + a broker restart + 20% teacher faults against a fault-free run (docs/chaos.md).
chaos: install
	$(BIN)/python -m bench.chaos

clean:
	rm -rf out .pytest_cache
