"""Speed of visfore_envs against gymnasium's Reacher-v5, as ratios from one run.

Measures, single process, random actions (drawn up front from a seeded generator), reset
on truncation, each run for a few seconds of wall time:

1. state-only ``ReacherPlane-v0`` steps/s vs ``Reacher-v5`` steps/s (both via ``gym.make``,
   so with the same wrappers); floor 1.3x;
2. step + 64x64 frame per second: ``ReacherPlane-v0`` with ``obs_mode="pixels"`` vs
   ``Reacher-v5`` with ``render_mode="rgb_array", width=64, height=64`` calling
   ``render()`` after every step; floor 8x.

The two envs of a comparison run in alternating ~0.1 s chunks, and rates are counted per
CPU second of this process (wall-clock rates are printed too), so other processes
loading the machine move both sides alike and the ratio stays meaningful.

Run ``python benchmarks/env_speed.py [--seconds S]``; it prints a table with PASS/FAIL
and exits 1 if a floor is missed. Importable: :func:`state_speed`, :func:`pixel_speed`,
:func:`compare`, :func:`run_benchmarks`.
"""

from __future__ import annotations

import argparse
import sys
import time

import visfore_envs  # noqa: F401  (first: picks the GL backend, registers the ids)

# isort: split
import gymnasium as gym
import numpy as np

STATE_FLOOR = 1.3
PIXEL_FLOOR = 8.0


class _Runner:
    """Steps one env with pre-drawn random actions, resetting on termination/truncation."""

    def __init__(self, env: gym.Env, render: bool, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.env, self.render = env, render
        self.actions = rng.uniform(-1.0, 1.0, size=(4096,) + env.action_space.shape).astype(np.float32)
        self.i = 0
        env.reset(seed=seed)
        self.run(50)  # warm-up: GL context, env checker's first-step checks

    def run(self, n: int) -> None:
        env, actions, render, i = self.env, self.actions, self.render, self.i
        viewer = getattr(getattr(env.unwrapped, "mujoco_renderer", None), "viewer", None)
        if viewer is not None:
            # gymnasium's renderer makes its GL context current only when created; the
            # other env of the comparison made its own current since.
            viewer.make_context_current()
        step, reset = env.step, env.reset
        for k in range(i, i + n):
            _, _, terminated, truncated, _ = step(actions[k & 4095])
            if render:
                env.render()
            if terminated or truncated:
                reset()
        self.i = i + n


def compare(env_a: gym.Env, env_b: gym.Env, seconds: float, render_b: bool = False) -> dict:
    """Interleave short chunks of ``env_a`` and ``env_b`` for about ``seconds`` each.

    Interleaving makes the ratio robust to load that changes during the run. Returns
    steps per second for both by CPU time of this process (``cpu_a``, ``cpu_b``; not
    inflated when other processes share the cores) and by wall-clock time (``wall_a``,
    ``wall_b``).
    """
    runners = (_Runner(env_a, render=False), _Runner(env_b, render=render_b))
    chunk = [200, 200]
    steps = [0, 0]
    cpu = [0.0, 0.0]
    wall = [0.0, 0.0]
    while min(wall) < seconds:
        for j, runner in enumerate(runners):
            c0, w0 = time.process_time(), time.perf_counter()
            runner.run(chunk[j])
            dc, dw = time.process_time() - c0, time.perf_counter() - w0
            steps[j] += chunk[j]
            cpu[j] += dc
            wall[j] += dw
            # ~0.1 s chunks
            chunk[j] = max(20, int(chunk[j] * 0.1 / max(dw, 1e-6)))
    env_a.close()
    env_b.close()
    return {
        "cpu_a": steps[0] / cpu[0],
        "cpu_b": steps[1] / cpu[1],
        "wall_a": steps[0] / wall[0],
        "wall_b": steps[1] / wall[1],
    }


def state_speed(seconds: float = 3.0) -> dict:
    """State-only ``ReacherPlane-v0`` vs ``Reacher-v5`` (both ``gym.make``), see :func:`compare`."""
    return compare(gym.make("ReacherPlane-v0"), gym.make("Reacher-v5"), seconds)


def pixel_speed(seconds: float = 3.0, size: int = 64) -> dict:
    """Step + one ``size`` x ``size`` frame: ``ReacherPlane-v0`` with ``obs_mode="pixels"``
    vs ``Reacher-v5`` with ``render_mode="rgb_array"`` and ``render()`` after each step."""
    ours = gym.make("ReacherPlane-v0", obs_mode="pixels", width=size, height=size)
    ref = gym.make("Reacher-v5", render_mode="rgb_array", width=size, height=size)
    return compare(ours, ref, seconds, render_b=True)


def run_benchmarks(seconds: float = 3.0) -> list[dict]:
    """Both comparisons; one dict per row: name, ours, reference (steps per CPU second),
    ours_wall, reference_wall (per wall-clock second), ratio (CPU), floor, passed."""
    rows = []
    for name, result, floor in (
        ("state steps/s", state_speed(seconds), STATE_FLOOR),
        ("step+64x64 frame/s", pixel_speed(seconds), PIXEL_FLOOR),
    ):
        ratio = result["cpu_a"] / result["cpu_b"]
        rows.append(
            dict(
                name=name,
                ours=result["cpu_a"],
                reference=result["cpu_b"],
                ours_wall=result["wall_a"],
                reference_wall=result["wall_b"],
                ratio=ratio,
                floor=floor,
                passed=ratio >= floor,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    args = parser.parse_args(argv)
    rows = run_benchmarks(args.seconds)
    header = (
        f"{'measure':<20} {'ReacherPlane-v0':>16} {'Reacher-v5':>12} {'ratio':>7} "
        f"{'floor':>6}  result   (wall clock: ours / Reacher-v5 = ratio)"
    )
    print("rates per CPU second of this process, one process, interleaved runs")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['name']:<20} {r['ours']:>16,.0f} {r['reference']:>12,.0f} "
            f"{r['ratio']:>6.2f}x {r['floor']:>5.1f}x  {'PASS' if r['passed'] else 'FAIL'}     "
            f"({r['ours_wall']:,.0f} / {r['reference_wall']:,.0f} = "
            f"{r['ours_wall'] / r['reference_wall']:.2f}x)"
        )
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
