# kdpose: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/default
CONFIG ?= configs/default.py

.PHONY: setup system-deps run test lint

# Python environment with the package (editable), the training stack and the test tools. First
# checks that $(PYTHON) is >= 3.11 and has its venv module (installed with apt-get where missing).
$(BIN)/.installed: pyproject.toml
	PYTHON="$(PYTHON)" bash tools/ensure_python_venv.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,test]'
	touch $@

setup: $(BIN)/.installed

# Real meshes (Sweet Home 3D furniture; FlightGear, CRRCSim and TORCS aircraft, ships and cars;
# 0 A.D. ships, siege engines, helmets, shields: about 3.6 GB of downloads, 6.6 GB installed) and
# real photos for backgrounds of the default dataset.
MESH_DIRS := /usr/share/sweethome3d/furniture /usr/share/wallpapers /usr/share/games/flightgear/AI \
  /usr/share/games/flightgear/Models /usr/share/games/crrcsim /usr/share/games/torcs \
  /usr/share/games/0ad/mods/public /usr/share/games/flightgear/Scenery
system-deps:
	@if ! ls -d $(MESH_DIRS) > /dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends sweethome3d-furniture plasma-workspace-wallpapers \
	    mate-backgrounds flightgear-data-ai flightgear-data-models flightgear-data-base \
	    crrcsim-data torcs-data 0ad-data; \
	fi

# The main job: build the offline default dataset, train teacher and student, evaluate.
run: system-deps setup
	$(BIN)/python -m kdpose.main --config $(CONFIG) --workdir $(WORKDIR)

# The test suite (CI runs exactly this target).
test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check kdpose configs tests tools
