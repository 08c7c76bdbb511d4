# The two commands of the README: `make run` (install + the example on the embedded default)
# and `make test` (install + the whole test suite). Everything lands in .venv and .cache.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast typecheck lint-imports lint bench chaos clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)
	$(BIN)/python -m scripts.install_system_deps

run: install
	$(BIN)/fastdistill up --seeds examples/text2sql/seeds.jsonl --exit-when-done

# Two pytest-xdist workers, a test file each at a time (a file's module fixtures, such as one
# running stack, stay in one worker): most of the suite's time is services, brokers and
# simulators waiting on each other, which two workers overlap on two cores (the full suite went
# over 25 min in one process).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile

# The fast loop: the broker-free tests less the real-time ones (marker `slow`), the fuzz test at
# 500 examples instead of 5,000, and the branch coverage of the runtime (shared/runtime) by its
# own tests (tests/fast_loop.py). `make test` runs all of them in full. One process: two xdist
# workers doubled the CPU time (~25 -> ~52 s user on services+runtime+fuzz) and were slower
# on this shared 2-core machine.
test-fast: install
	$(BIN)/pytest -q -p no:cacheprovider -m "not kafka and not slow" -p tests.fast_loop --hypothesis-profile=fast \
		--cov=shared/runtime --cov-branch --cov-report=term

# mypy --strict over shared, services and fastdistill (settings in pyproject.toml).
typecheck: install
	$(BIN)/mypy

# The layering contracts of pyproject.toml ([tool.importlinter]).
lint-imports: install
	$(BIN)/lint-imports

# Every scenario, the 1,000,000-row run included; `make bench BENCH_ARGS=--no-million` leaves it out.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# 20 SIGKILLs, a broker restart, 2 broker SIGKILLs, a stopped backpressured step, a woken zombie,
# a burst of joins and 20% teacher faults against a fault-free run (docs/chaos.md).
chaos: install
	$(BIN)/python -m bench.chaos

clean:
	rm -rf out .pytest_cache
