"""Speed of the perturbable locomotion envs against gymnasium's v5 envs, as ratios from one run.

For each robot (PerturbHopper-v0 vs Hopper-v5, PerturbWalker2d-v0 vs Walker2d-v5,
PerturbAnt-v0 vs Ant-v5, PerturbHalfCheetah-v0 vs HalfCheetah-v5), single process, random
actions drawn up front from a seeded generator, reset on termination/truncation:

1. state-only steps/s, both via ``gym.make`` (same wrappers); floor 1.0x (the physics is
   the same; we must not add overhead);
2. step + one 64x64 frame per second: ours with ``obs_mode="pixels"`` vs v5 with
   ``render_mode="rgb_array", width=64, height=64`` and ``render()`` after each step
   (gymnasium's default renderer, untuned); floor 50x.

Runs are interleaved in ~0.1 s chunks and counted per CPU second of this process (see
``benchmarks/env_speed.py``), so load from other processes moves both sides alike.
Optionally also the PyBullet backend's rates (``--bullet``), reported without a floor.

Run ``python benchmarks/locomotion_speed.py [--seconds S] [--robots hopper,ant] [--bullet]``;
it prints a table with PASS/FAIL and exits 1 if a floor is missed.
"""

from __future__ import annotations

import argparse
import sys
import time

import visfore_envs  # noqa: F401  (first: picks the GL backend, registers the ids)

# isort: split
import gymnasium as gym
import numpy as np

from env_speed import compare

STATE_FLOOR = 1.0
PIXEL_FLOOR = 50.0
SIZE = 64

ROBOTS = {
    "hopper": ("PerturbHopper-v0", "Hopper-v5"),
    "walker2d": ("PerturbWalker2d-v0", "Walker2d-v5"),
    "ant": ("PerturbAnt-v0", "Ant-v5"),
    "halfcheetah": ("PerturbHalfCheetah-v0", "HalfCheetah-v5"),
}


def _row(name: str, result: dict, floor: float | None) -> dict:
    ratio = result["cpu_a"] / result["cpu_b"]
    return dict(
        name=name,
        ours=result["cpu_a"],
        reference=result["cpu_b"],
        ours_wall=result["wall_a"],
        reference_wall=result["wall_b"],
        ratio=ratio,
        floor=floor,
        passed=True if floor is None else ratio >= floor,
    )


def bullet_rate(env_id: str, seconds: float, **kwargs) -> float:
    """Steps per CPU second of one env (no reference), random actions."""
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(1024,) + env.action_space.shape).astype(np.float32)
    steps, c0, w0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - w0 < seconds:
        _, _, terminated, truncated, _ = env.step(actions[steps & 1023])
        steps += 1
        if terminated or truncated:
            env.reset()
    env.close()
    return steps / (time.process_time() - c0)


def run_benchmarks(seconds: float, robots: list[str], bullet: bool) -> list[dict]:
    rows = []
    for robot in robots:
        ours_id, ref_id = ROBOTS[robot]
        rows.append(_row(f"{ours_id} state", compare(gym.make(ours_id), gym.make(ref_id), seconds), STATE_FLOOR))
        ours = gym.make(ours_id, obs_mode="pixels", width=SIZE, height=SIZE)
        ref = gym.make(ref_id, render_mode="rgb_array", width=SIZE, height=SIZE)
        rows.append(_row(f"{ours_id} +{SIZE}px", compare(ours, ref, seconds, render_b=True), PIXEL_FLOOR))
        if bullet:
            for mode in ("state", "pixels"):
                kwargs = {"backend": "pybullet", "obs_mode": mode, "width": SIZE, "height": SIZE}
                rate = bullet_rate(ours_id, seconds, **kwargs)
                rows.append(
                    dict(
                        name=f"{ours_id} pybullet {mode}",
                        ours=rate,
                        reference=float("nan"),
                        ours_wall=float("nan"),
                        reference_wall=float("nan"),
                        ratio=float("nan"),
                        floor=None,
                        passed=True,
                    )
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--robots", default=",".join(ROBOTS), help="comma-separated subset")
    parser.add_argument("--bullet", action="store_true", help="also time the PyBullet backend")
    args = parser.parse_args(argv)
    robots = [r.strip() for r in args.robots.split(",") if r.strip()]
    unknown = [r for r in robots if r not in ROBOTS]
    if unknown:
        parser.error(f"unknown robot {unknown[0]!r}; choose from {', '.join(ROBOTS)}")
    rows = run_benchmarks(args.seconds, robots, args.bullet)
    header = f"{'measure':<34} {'ours/s':>10} {'v5/s':>9} {'ratio':>8} {'floor':>6}  result   (wall clock: ours / v5)"
    print("rates per CPU second of this process, one process, interleaved runs")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["floor"] is None:
            print(f"{r['name']:<34} {r['ours']:>10,.0f} {'-':>9} {'-':>8} {'-':>6}  (no reference)")
            continue
        print(
            f"{r['name']:<34} {r['ours']:>10,.0f} {r['reference']:>9,.0f} {r['ratio']:>7.2f}x "
            f"{r['floor']:>5.1f}x  {'PASS' if r['passed'] else 'FAIL'}     "
            f"({r['ours_wall']:,.0f} / {r['reference_wall']:,.0f})"
        )
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
