# One command for the main job (`make demo`), one for the tests (`make test`); each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test bench data clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Debian's Fashion-MNIST IDX files (the default data set); skipped where apt is not available.
data:
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: setup data
	$(BIN)/zf demo --out out/demo

test: setup data
	$(BIN)/python -m pytest -q

bench: setup data
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) out runs .pytest_cache
