"""Do PPO and TD3 learn alike on PerturbHopper-v0 (nominal) and gymnasium's Hopper-v5?

Trains each algorithm for a fixed step budget with ``visfore train-policy``'s pipeline
(rl-baselines3-zoo hyperparameters, same seed) on both envs in the same run, then prints
the final deterministic evaluation return of each, their ratio, and whether the two
training curves are identical. The MuJoCo backend reproduces Hopper-v5 bit for bit at
nominal scale, so on CPU with the same seed the curves are expected to be identical; the
check that must hold is that the returns agree within 10%.

Run ``python benchmarks/locomotion_learning.py [--ppo-steps N] [--td3-steps N] [--seed S]``
(defaults: PPO 100,000 and TD3 20,000 steps, about 25 minutes on 2 CPU cores). Runs go to
``runs/bench-locomotion/`` and are replaced on each invocation. Exits 1 if a pair differs
by more than 10%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from visfore.rl.train_policy import PolicyTrainConfig, train_policy

OUT = Path("runs/bench-locomotion")
TOLERANCE = 0.10


def _curve(run_dir: Path) -> np.ndarray | None:
    path = run_dir / "logs" / "evaluations.npz"
    if not path.exists():
        return None
    return np.load(path)["results"].mean(axis=1)


def train_pair(algo: str, steps: int, seed: int, eval_freq: int) -> list[dict]:
    rows = []
    for env_id in ("PerturbHopper-v0", "Hopper-v5"):
        name = f"{algo}-{env_id.lower()}"
        run_dir = OUT / f"train-policy-{name}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        metrics = train_policy(
            PolicyTrainConfig(
                env=env_id,
                algo=algo,
                timesteps=steps,
                seed=seed,
                eval_freq=eval_freq,
                eval_episodes=5,
                name=name,
                out_dir=str(OUT),
                device="cpu",
                progress=False,
            )
        )
        rows.append(
            dict(
                algo=algo,
                env=env_id,
                steps=steps,
                mean=metrics["return"]["mean"],
                std=metrics["return"]["std"],
                best=metrics.get("best_eval_mean_return"),
                seconds=time.perf_counter() - start,
                curve=_curve(Path(metrics["run_dir"])),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppo-steps", type=int, default=100_000)
    parser.add_argument("--td3-steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = []
    for algo, steps in (("ppo", args.ppo_steps), ("td3", args.td3_steps)):
        if steps > 0:
            rows += train_pair(algo, steps, args.seed, eval_freq=max(steps // 10, 1000))
    print(f"{'algo':<5} {'env':<18} {'steps':>8} {'return':>16} {'best eval':>10} {'minutes':>8}")
    ok = True
    for i in range(0, len(rows), 2):
        ours, ref = rows[i], rows[i + 1]
        for r in (ours, ref):
            print(
                f"{r['algo']:<5} {r['env']:<18} {r['steps']:>8,} {r['mean']:>9.1f} +- {r['std']:<5.1f}"
                f" {r['best'] or float('nan'):>10.1f} {r['seconds'] / 60:>8.1f}"
            )
        ratio = ours["mean"] / ref["mean"] if ref["mean"] else float("nan")
        same = ours["curve"] is not None and ref["curve"] is not None and np.array_equal(ours["curve"], ref["curve"])
        passed = abs(ratio - 1.0) <= TOLERANCE
        ok &= passed
        print(
            f"      PerturbHopper-v0 / Hopper-v5 return ratio {ratio:.3f} "
            f"({'PASS' if passed else 'FAIL'}, within {TOLERANCE:.0%}); "
            f"evaluation curves identical: {same}"
        )
    summary = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
