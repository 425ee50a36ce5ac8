# kdpose: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default
CONFIG ?= configs/default.py

.PHONY: setup system-deps run test lint

# Python environment with the package (editable) and the test extras.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

# Real meshes (Sweet Home 3D furniture) and real photos for backgrounds of the default dataset.
system-deps:
	@if [ ! -d /usr/share/sweethome3d/furniture ] || [ ! -d /usr/share/wallpapers ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    sweethome3d-furniture plasma-workspace-wallpapers mate-backgrounds; \
	fi

# The main job: build the offline default dataset, train teacher and student, evaluate.
run: system-deps setup
	$(BIN)/python -m kdpose.main --config $(CONFIG) --workdir $(WORKDIR)

# The test suite (CI runs exactly this target).
test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check kdpose configs tests tools
