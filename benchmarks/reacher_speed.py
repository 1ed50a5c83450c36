"""The foundation's speed floors, measured against their references in one run.

1. ``ReacherPlane-v0`` state-only steps/s vs gymnasium's ``Reacher-v5``: floor 1.3x.
2. ``ReacherPlane-v0`` step + 64x64 frame per second vs ``Reacher-v5`` with
   ``render_mode="rgb_array"``: floor 8x.
   (1 and 2 come from :mod:`env_speed`: interleaved chunks, rates per CPU second.)
3. ``visfore collect`` end to end (one process, the whole :func:`visfore.data.collect.collect`
   call including env and dataset setup and the Zarr writes) vs its own bare loop:
   the same env made the same way, ``reset`` + ``step`` with uniform random actions,
   each frame kept in a list and nothing else. Overhead = 1 - collect / bare; floor
   <= 20%. Bare and collect runs alternate ``--rounds`` times and the medians are
   compared, so load that changes during the run moves both alike.

Run ``python benchmarks/reacher_speed.py``; exits 1 if a floor is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import env_speed  # noqa: E402  (imports visfore_envs first: GL backend, ids)
from visfore.data.collect import collect  # noqa: E402
from visfore.data.envs import make_env  # noqa: E402

COLLECT_OVERHEAD_CEILING = 0.20


def bare_loop_fps(env_id: str, size: int, steps: int, episodes: int, seed: int = 0) -> float:
    """Frames/s of a bare step+render loop: what collection costs with nothing stored.

    Frames are counted as ``collect`` counts rows: T + 1 per episode.
    """
    env = make_env(env_id, size=size, max_episode_steps=steps)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    frames = 0
    t0 = time.perf_counter()
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        kept = [obs["pixels"]]
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
            kept.append(obs["pixels"])
            if terminated or truncated:
                break
        frames += len(kept)
    seconds = time.perf_counter() - t0
    env.close()
    return frames / seconds


def collect_fps(env_id: str, size: int, steps: int, episodes: int, seed: int = 0) -> float:
    """Frames/s of a whole ``collect`` call (setup, rollouts, Zarr writes) into a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = collect(
            env=env_id,
            episodes=episodes,
            steps=steps,
            size=size,
            out=Path(tmp) / "bench.zarr",
            seed=seed,
            policy="random",
            workers=1,
            progress=False,
        )
        seconds = time.perf_counter() - t0
    return summary["frames"] / seconds


def collect_overhead(
    env_id: str = "ReacherPlane-v0",
    size: int = 64,
    steps: int = 50,
    episodes: int = 100,
    rounds: int = 3,
) -> dict:
    """Median frames/s of alternating bare-loop and collect runs, and the overhead."""
    collect_fps(env_id, size, steps, 2)  # warm-up: zarr import, GL context creation paths
    bare, ours = [], []
    for r in range(rounds):
        bare.append(bare_loop_fps(env_id, size, steps, episodes, seed=r))
        ours.append(collect_fps(env_id, size, steps, episodes, seed=r))
    bare_fps, collect_fps_ = statistics.median(bare), statistics.median(ours)
    return {"bare": bare_fps, "collect": collect_fps_, "overhead": 1.0 - collect_fps_ / bare_fps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per env comparison")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per collect round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating collect/bare rounds")
    args = parser.parse_args(argv)

    rows = env_speed.run_benchmarks(args.seconds)
    ok = all(r["passed"] for r in rows)
    print(f"{'measure':<28} {'visfore':>10} {'reference':>10} {'ratio':>8} {'floor':>8}  result")
    for r in rows:
        print(
            f"{r['name'] + ' (per CPU s)':<28} {r['ours']:>10,.0f} {r['reference']:>10,.0f} "
            f"{r['ratio']:>7.2f}x {r['floor']:>7.1f}x  {'PASS' if r['passed'] else 'FAIL'}"
        )
    c = collect_overhead(episodes=args.episodes, rounds=args.rounds)
    passed = c["overhead"] <= COLLECT_OVERHEAD_CEILING
    ok = ok and passed
    print(
        f"{'collect frames/s (64x64)':<28} {c['collect']:>10,.0f} {c['bare']:>10,.0f} "
        f"{c['collect'] / c['bare']:>7.2f}x {'<=' + format(COLLECT_OVERHEAD_CEILING, '.0%'):>8}  "
        f"{'PASS' if passed else 'FAIL'} (overhead {c['overhead']:.1%} vs bare step+render loop)"
    )
    print("references: gymnasium Reacher-v5 (rows 1-2); collect's own bare loop (row 3)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
