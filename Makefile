# One command for the main job (`make demo`), one for the tests (`make test`); each sets itself up.
PYTHON ?= python3
# Which TensorFlow wheel the set-up installs (a setup.cfg extra): cpu (the CPU-only wheel) or
# and-cuda (NVIDIA GPUs), e.g. `make setup TENSORFLOW=and-cuda`.
TENSORFLOW ?= cpu
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test lint bench figures reproduce data browser clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,$(TENSORFLOW)]'
	touch $@

setup: $(VENV)/.installed

# Debian's Fashion-MNIST IDX files (the default data set); skipped where apt is not available.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

# Debian's Chromium, for the page tests (tests/test_report.py, tests/test_toolbox.py); skipped where apt is not available.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

demo: setup data
	$(BIN)/zf demo --out out/demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The test files are spread over TEST_WORKERS processes (pytest-xdist; a file stays in one process,
# so its module fixtures are built once); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: setup data browser lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: setup data
	$(BIN)/python -m benchmarks

# Every figure in docs/figures/ that comes from the shipped model, by the README's commands (~1 h).
figures: setup data
	ZF=$(BIN)/zf bash docs/regenerate_figures.sh

# The paper's findings on Emoji-64, a many-class colour analogue at 64 px (docs/reproduction.md; its steps took 8.3 h of wall time on a shared 2-core machine).
reproduce: setup data
	ZF=$(BIN)/zf PYTHON=$(BIN)/python bash docs/reproduce_emoji64.sh

clean:
	rm -rf $(VENV) out runs .pytest_cache
