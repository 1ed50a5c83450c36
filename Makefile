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

.PHONY: install demo data sweep sweep-smoke test lint bench bench-models bench-threads bench-planning clean

$(VENV)/.installed: pyproject.toml envs_pkg/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pin the CPU wheel first: an unpinned torch would pull several GB of CUDA packages.
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ./envs_pkg -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The demo reacher dataset (collected once; the sweeps and benchmarks reuse it).
$(DEMO_DATA): | install
	$(VENV)/bin/visfore collect --env reacher --episodes 240 --steps 30 --size 64 \
		--policy smooth --seed 0 --workers 2 --out $(DEMO_DATA)

data: $(DEMO_DATA)

demo: $(DEMO_DATA)
	$(VENV)/bin/visfore train-model --data $(DEMO_DATA) --model convlstm \
		--context 2 --horizon 10 --epochs 12 --seed 0 --time-budget 10

test: install
	$(PY) -m pytest -n 2 --dist loadgroup tests

# ruff (lint and format), mypy on the three packages, and the import contracts (.importlinter).
LINT_PATHS := toolkit models envs_pkg tests benchmarks
lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install
	$(PY) benchmarks/reacher_speed.py

# Every forward model x 2 seeds on the demo data, with a comparison report (~35 min).
sweep: $(DEMO_DATA)
	$(VENV)/bin/visfore train-eval-all --config sweeps/reacher.yaml

# Three models x two seeds with tiny budgets: checks the sweep machinery in a few minutes.
sweep-smoke: $(DEMO_DATA)
	$(VENV)/bin/visfore train-eval-all --config sweeps/smoke.yaml

bench-models: $(DEMO_DATA)
	$(PY) benchmarks/forward_models.py --data $(DEMO_DATA)

# --num-threads 1, 2 and the default, idle and beside a busy core (~15 min on 2 cores).
bench-threads: install
	$(PY) benchmarks/threads.py

# Seconds per control step of latent (jepa, rssm) and pixel (cdna) planning at one budget.
bench-planning: install
	$(PY) benchmarks/planning.py

# The documentation (Sphinx + MyST + furo) into docs/_build/html; warnings are errors.
.PHONY: docs
docs: install
	$(PY) -m pip install --quiet -e ".[docs]"
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) data runs
