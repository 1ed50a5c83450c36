"""Registration, package surface and import-time side effects of visfore_envs."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import pytest

import visfore_envs
from visfore_envs import ENV_IDS, MIMIC_IDS, REACHER_IDS, Reacher3DEnv, ReacherPlaneEnv


def _run_python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter; return stdout (fails the test on error)."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_ids_registered_with_time_limit():
    assert REACHER_IDS == ("ReacherPlane-v0", "Reacher3D-v0")
    locomotion = tuple(
        f"Perturb{r}{b}-v0" for b in ("", "Bullet") for r in ("Hopper", "Walker2d", "Ant", "HalfCheetah")
    )
    learned = ()  # LearnedSim-v0 is registered by the `visfore` distribution (tests/toolkit/test_predict_and_sim.py)
    humanoid = ("TargetHumanoid-v0",)  # 100 steps: tests/envs/test_target_humanoid.py
    mimic = ("MimicReacher-v0", "MimicHumanoid-v0")  # 100 and 200 steps: tests/envs/test_mimic.py
    assert MIMIC_IDS == mimic
    assert set(ENV_IDS) == set(REACHER_IDS) | set(locomotion) | set(learned) | set(humanoid) | set(mimic)
    assert gym.spec("MimicReacher-v0").max_episode_steps == 100
    assert gym.spec("MimicHumanoid-v0").max_episode_steps == 200
    for env_id in set(ENV_IDS) - set(humanoid) - set(mimic):
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == (50 if env_id in REACHER_IDS + learned else 1000)
    assert "LearnedSim-v0" not in ENV_IDS  # the env package references no toolkit code
    env = gym.make("ReacherPlane-v0")
    assert isinstance(env.unwrapped, ReacherPlaneEnv)
    env.close()
    env = gym.make("Reacher3D-v0")
    assert isinstance(env.unwrapped, Reacher3DEnv)
    env.close()


def test_exports():
    for name in ("ReacherPlaneEnv", "Reacher3DEnv", "ENV_IDS"):
        assert name in visfore_envs.__all__
        assert hasattr(visfore_envs, name)


def test_truncates_after_50_steps():
    env = gym.make("ReacherPlane-v0")
    env.reset(seed=0)
    for t in range(50):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        assert truncated == (t == 49)
    env.close()


def test_module_colon_id_without_prior_import():
    out = _run_python(
        "import sys, gymnasium as gym\n"
        "assert 'visfore_envs' not in sys.modules\n"
        "env = gym.make('visfore_envs:Reacher3D-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(type(env.unwrapped).__name__, obs.shape)\n"
    )
    assert out.split() == ["Reacher3DEnv", "(21,)"]


def test_import_does_not_import_torch():
    out = _run_python("import sys, visfore_envs\nprint('torch' in sys.modules)\n")
    assert out.strip() == "False"


@pytest.mark.skipif(sys.platform == "darwin", reason="the GL backend is left alone on macOS")
def test_gl_backend_chosen_before_mujoco_without_display():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MUJOCO_GL", "LP_NUM_THREADS", "DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM")
    }
    code = "import os, sys, visfore_envs\nprint(os.environ.get('MUJOCO_GL'), os.environ.get('LP_NUM_THREADS'))\n"
    assert _run_python(code, env).split() == ["egl", "0"]
    # The user's choices are kept; with a display MUJOCO_GL stays unset.
    assert _run_python(code, {**env, "MUJOCO_GL": "glfw", "LP_NUM_THREADS": "2"}).split() == [
        "glfw",
        "2",
    ]
    assert _run_python(code, {**env, "DISPLAY": ":99"}).split() == ["None", "0"]


@pytest.mark.skipif(sys.platform != "linux", reason="EGL headless rendering is a Linux path")
def test_renders_when_mujoco_was_imported_first_with_glfw_default():
    env = {
        k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY", "PYOPENGL_PLATFORM")
    }
    out = _run_python(
        "import mujoco\n"  # picks its GLFW default: no MUJOCO_GL, no display
        "import gymnasium as gym, visfore_envs\n"
        "env = gym.make('ReacherPlane-v0', obs_mode='pixels')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs.shape, int(obs.std() > 1))\n"
        "env.close()\n",
        env,
    )
    assert out.split() == ["(64,", "64,", "3)", "1"]
