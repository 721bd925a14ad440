# Two commands do all the set-up on a fresh machine:
#   make demo   - virtual environment, package with the local LLM, then `ultrarl demo`
#   make test   - the same set-up, then the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python compiles from source; use both cores.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# ...for a fixed instruction set (x86-64: AVX2, FMA, F16C), not llama.cpp's default of this CPU's
# own (-march=native): a CPU that advertises AMX inside a VM that does not enable it dies in
# ggml's AMX kernel (SIGSEGV at ldtilecfg, seen on a Xeon with AMX), and every x86-64 machine
# then runs the same kernels. Built without pip's cache, which would otherwise hand back a wheel
# built for another CPU, and again over a venv made before (so an existing native build goes).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF

.PHONY: install demo test test-slow clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: nothing later may pull a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir --force-reinstall --no-deps \
	  "llama-cpp-python>=0.3.7"
	$(BIN)/pip install --quiet -e ".[local,server,atari,ray,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ultrarl demo

# Debian's Chromium, for the test that opens report.html as a person would (installing it needs
# root, as on CI; without it that one test is skipped and says so).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium) \
	  || echo "chromium could not be installed: the browser test will be skipped"; \
	else echo "not root: chromium not installed, the browser test will be skipped"; fi

# Two pytest workers, a test file each at a time: most tests run one process on one core, and a
# file's module fixtures (trained agents, an RL Zoo run) are then made once.
test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
