"""The command line starts without the heavy libraries: every command module is thin and
imports its pipeline inside the command body, so ``visfore --help`` stays fast."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "zarr", "gymnasium", "mujoco", "stable_baselines3", "pybullet", "visfore_envs", "visfore_models")


def test_importing_the_app_imports_no_heavy_library():
    code = f"import sys, visfore.cli.app\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", f"imported at start-up: {proc.stdout.strip()}"


def test_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "visfore.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for command in (
        "collect",
        "dataset",
        "train-model",
        "train-eval-all",
        "predict",
        "play-model",
        "plan",
        "train-translator",
        "train-policy",
        "train-through-model",
        "evaluate",
        "mimic",
    ):
        assert command in proc.stdout, command
