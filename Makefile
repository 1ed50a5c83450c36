# Two entry points, both from a fresh clone with nothing installed by hand:
#   make demo  -> creates .venv, installs everything (CPU torch pin), collects a reacher
#                 dataset and trains an action-conditioned ConvLSTM on it
#   make test  -> same install plus dev tools, runs pytest
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
# MuJoCo renders headless through EGL (Mesa llvmpipe on CPU); visfore_envs also picks this
# itself when MUJOCO_GL is unset and there is no display.
export MUJOCO_GL ?= egl

DEMO_DATA := data/demo-reacher.zarr

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml envs_pkg/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pin the CPU wheel first: an unpinned torch would pull several GB of CUDA packages.
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ./envs_pkg -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/visfore collect --env reacher --episodes 240 --steps 30 --size 64 \
		--policy smooth --seed 0 --workers 2 --out $(DEMO_DATA)
	$(VENV)/bin/visfore train-model --data $(DEMO_DATA) --model convlstm \
		--context 2 --horizon 10 --epochs 12 --seed 0 --time-budget 10

test: install
	$(PY) -m pytest -n 2 tests

bench: install
	$(PY) benchmarks/reacher_speed.py

clean:
	rm -rf $(VENV) data runs
