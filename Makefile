# glassformer: `make demo` and `make test` each set up .venv/ themselves on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch; a bare `torch` would pull a multi-GB CUDA build. On a GPU
# machine: make test TORCH='torch>=2.4,<3'
TORCH ?= torch==2.13.0
EXTRAS ?= dev,viz,serve,hf
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install browser test test-fast demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP)

# The browser tests drive Debian's Chromium (Playwright's own browser download cannot
# work offline). As root, install it; otherwise those tests skip and say why.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no chromium and not root: the browser tests will be skipped"; fi; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/glassformer serve --model lesson:adjectives $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "transformer-lens<4"
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis test-output
