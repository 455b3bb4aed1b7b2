# driftline: `make demo` runs the pipeline end to end on the embedded stack; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all bench lint schemas clean

install: $(STAMP)

# Re-install whenever pyproject.toml or a C source changes (an editable install builds the C fast
# paths in place); reuse the venv otherwise.
$(STAMP): pyproject.toml $(wildcard src/driftline/*/*.c src/driftline/*/*/*.c)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[local,dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/driftline demo

# The CI suite: everything but the long soak runs (DRIFTLINE_SOAK=1 enables them).
# 4 workers on 2 cores: with 3 the cores sat ~20 % idle (18 CPU-minutes in 12m45s: tests waiting on a
# broker or a timeout), which a fourth fills (CI here: pytest 10m31s against 11m10s, the same hour).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 4 --dist loadfile --no-loadscope-reorder --durations=25

test-all: $(STAMP)
	DRIFTLINE_SOAK=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python .ci/typecheck.py  # mypy -p driftline over pyproject's package-dir mapping
	$(BIN)/driftline schemas check

schemas: $(STAMP)
	$(BIN)/driftline schemas generate

clean:
	rm -rf .driftline reports build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
