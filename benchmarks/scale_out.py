"""Scale-out on Ray: local process pools against Ray workers, in one run on this machine.

Measures, with the same seed and sizes in the same run (only ratios are meaningful; never
compare with absolute times from another machine or another run):

1. Collection (``visfore collect``): local with 1 and 2 workers, Ray with 2 workers (Ray
   already running, as on a cluster; its start-up time is reported apart). Frames/s and
   the Ray overhead ratio = local-2 time / Ray-2 time (1 = no overhead, > 1 = Ray faster).
   The Ray dataset is checked to be identical to the local one, array by array.
2. An evaluation grid (``visfore evaluate --grid``): local with 2 worker processes against
   Ray with 2 CPUs, on a policy run (``--run``, or a tiny PPO policy trained here on
   PerturbHopper-v0); the reports are checked to be identical.
3. What the 100-node argument needs:
   - the driver's write cost per episode (``DatasetWriter.append_episode``, flushes and the
     final close included) against the production time of one episode on one worker:
     their ratio is how many workers one driver-writer can keep busy;
   - the driver's fetch cost per episode from Ray's object store (``ray.get`` of an
     episode-sized result);
   - Ray's per-task scheduling overhead here: no-op actor calls and no-op remote tasks,
     one at a time (latency) and pipelined (throughput);
   - the episode payload: raw bytes per episode and compressed bytes on disk.

Run ``nice python benchmarks/scale_out.py [--episodes 120 --steps 50 --size 64]
[--run RUN] [--ppo-steps 2048] [--points 4 --eval-episodes 2 --eval-seeds 0,1]``; about
3 minutes on 2 CPU cores with the defaults. Datasets and runs go to ``--out``
(``runs/bench-scale-out``), replaced on each invocation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("runs/bench-scale-out")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {n: np.asarray(a[...]) for n, a in group.members(max_depth=None) if isinstance(a, zarr.Array)}


def same_dataset(a: Path, b: Path) -> bool:
    x, y = _arrays(a), _arrays(b)
    return sorted(x) == sorted(y) and all(x[k].tobytes() == y[k].tobytes() for k in x)


# -- 1. collection ---------------------------------------------------------------------------
def bench_collect(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from visfore.data.collect import collect

    common = dict(env=args.env, episodes=args.episodes, steps=args.steps, size=args.size, seed=args.seed,
                  progress=False)  # fmt: skip
    results: dict[str, Any] = {}
    for label, extra in (("local-1", {"workers": 1}), ("local-2", {"workers": 2}),
                         ("ray-2", {"workers": 2, "ray": "local"})):  # fmt: skip
        path = out / f"collect-{label}.zarr"
        t0 = time.perf_counter()
        summary = collect(out=path, **common, **extra)
        results[label] = {
            "seconds": time.perf_counter() - t0,  # setup (env, pool or actors) included
            "collect_seconds": summary["seconds"],
            "frames": summary["frames"],
            "frames_per_s": summary["frames"] / (time.perf_counter() - t0),
            "path": path,
        }
        print(f"  collect {label}: {summary['frames']} frames in {results[label]['seconds']:.1f} s", flush=True)
    results["identical"] = same_dataset(results["local-1"]["path"], results["ray-2"]["path"]) and same_dataset(
        results["local-1"]["path"], results["local-2"]["path"]
    )
    return results


# -- 2. evaluation grid ----------------------------------------------------------------------
def policy_run(args: argparse.Namespace, out: Path) -> Path:
    if args.run:
        return Path(args.run)
    from visfore.rl.train_policy import PolicyTrainConfig, train_policy

    metrics = train_policy(PolicyTrainConfig(
        env="PerturbHopper-v0", algo="ppo", timesteps=args.ppo_steps, seed=args.seed, eval_freq=0,
        eval_episodes=2, name="tiny-ppo", out_dir=str(out), device="cpu", progress=False,
        hp=["n_steps=256", "batch_size=64"],
    ))  # fmt: skip
    return Path(metrics["run_dir"])


def bench_evaluate(args: argparse.Namespace, out: Path, run_dir: Path) -> dict[str, Any]:
    from visfore.rl.evaluate import evaluate

    common = dict(perturb="0.5-1.5", points=args.points, grid=args.grid, episodes=args.eval_episodes,
                  seeds=args.eval_seeds, progress=False)  # fmt: skip
    results: dict[str, Any] = {}
    for label, extra in (("local-2", {"workers": 2}), ("ray-2", {"workers": 2, "ray": "local"})):
        report = out / f"eval-{label}"
        t0 = time.perf_counter()
        result = evaluate(run_dir, out=report, **common, **extra)
        seconds = time.perf_counter() - t0
        meta = result["meta"]
        results[label] = {"seconds": seconds, "episodes": meta["episodes_run"], "steps": meta["steps_run"],
                          "steps_per_s": meta["steps_run"] / seconds, "report": report}  # fmt: skip
        print(
            f"  evaluate {label}: {meta['episodes_run']} episodes, {meta['steps_run']} steps, "
            f"{meta['cells_total']} cells in {seconds:.1f} s",
            flush=True,
        )
    a = (results["local-2"]["report"] / "episodes.csv").read_text()
    b = (results["ray-2"]["report"] / "episodes.csv").read_text()
    results["identical"] = a == b
    return results


# -- 3. the 100-node numbers -----------------------------------------------------------------
def bench_writer(args: argparse.Namespace, out: Path, per_episode_s: float) -> dict[str, Any]:
    """Write-only cost per episode through the real writer (same shapes, chunks, flushes)."""
    from visfore.data.collect import EpisodeRunner, flush_rows
    from visfore.data.dataset import DatasetWriter, open_dataset
    from visfore.data.envs import resolve_env_id

    env_id = resolve_env_id(args.env)
    runner = EpisodeRunner(env_id, args.size, args.steps, {}, "smooth", {}, args.seed)
    try:
        episodes = [runner.run(i) for i in range(min(16, args.episodes))]  # distinct content
    finally:
        runner.close()
    source = open_dataset(out / "collect-local-1.zarr")
    n = args.episodes
    path = out / "writer-only.zarr"
    writer = DatasetWriter.create(path, frame_shape=(args.size, args.size, 3), state_dim=episodes[0]["state"].shape[1],
                                  action_dim=episodes[0]["action"].shape[1], attrs=dict(source.attrs),
                                  chunk_frames=args.steps + 1)  # fmt: skip
    writer.flush_rows = flush_rows((args.size, args.size, 3), args.steps)
    t0 = time.perf_counter()
    for i in range(n):
        writer.append_episode(**episodes[i % len(episodes)])
    writer.close()
    write_s = (time.perf_counter() - t0) / n
    raw = sum(v.nbytes for v in episodes[0].values())
    disk = _dir_bytes(out / "collect-local-1.zarr") / args.episodes
    return {"write_s": write_s, "produce_s": per_episode_s, "workers_per_writer": per_episode_s / write_s,
            "raw_bytes": raw, "disk_bytes": disk, "episode": episodes[0]}  # fmt: skip


def _noop(state: Any, item: Any) -> Any:
    return item


def _noop_task(item: Any) -> Any:
    return item


def bench_ray_overheads(episode: dict[str, np.ndarray], calls: int) -> dict[str, Any]:
    import ray

    from visfore.core import ray_backend as rb

    results: dict[str, Any] = {}
    with rb.WorkerPool(lambda: None, _noop, 2) as pool:
        list(pool.imap(range(4)))  # actors up
        t0 = time.perf_counter()
        for i in range(calls):
            ray.get(pool.actors[0].run.remote(i))
        results["actor_call_latency_s"] = (time.perf_counter() - t0) / calls
        t0 = time.perf_counter()
        assert [r for _, r in pool.imap(range(calls))] == list(range(calls))
        results["actor_calls_per_s"] = calls / (time.perf_counter() - t0)
        # an episode-sized result: fetched by the driver from the object store
        ref = pool.actors[0].run.remote(episode)
        ray.get(ref)
        t0 = time.perf_counter()
        for _ in range(20):
            ray.get(pool.actors[0].run.remote(episode))
        results["episode_roundtrip_s"] = (time.perf_counter() - t0) / 20
    task = rb.remote(_noop_task, num_cpus=1)
    ray.get([task.remote(i) for i in range(4)])  # workers up
    t0 = time.perf_counter()
    for i in range(calls // 2):
        ray.get(task.remote(i))
    results["task_latency_s"] = (time.perf_counter() - t0) / (calls // 2)
    t0 = time.perf_counter()
    ray.get([task.remote(i) for i in range(calls)])
    results["tasks_per_s"] = calls / (time.perf_counter() - t0)
    ref = ray.put(episode)
    t0 = time.perf_counter()
    for _ in range(50):
        ray.get(ref)
    results["episode_get_s"] = (time.perf_counter() - t0) / 50
    return results


# -- report ----------------------------------------------------------------------------------
def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="reacher")
    parser.add_argument("--episodes", type=int, default=120)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", help="a policy run to evaluate (default: train a tiny PPO policy here)")
    parser.add_argument("--ppo-steps", type=int, default=2048)
    parser.add_argument("--grid", default="thigh.length,torso.mass")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=2)
    parser.add_argument("--eval-seeds", default="0,1")
    parser.add_argument("--calls", type=int, default=400, help="no-op calls for the scheduling overhead")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    import ray

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 << 20, log_to_driver=False,
             logging_level=logging.ERROR)  # fmt: skip
    ray_start_s = time.perf_counter() - t0
    try:
        print(
            f"Ray started in {ray_start_s:.1f} s (2 CPUs); collecting {args.episodes} x {args.steps} steps at "
            f"{args.size}px on {args.env}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        col = bench_collect(args, args.out)
        run_dir = policy_run(args, args.out)
        print(f"  policy run: {run_dir}", flush=True)
        ev = bench_evaluate(args, args.out, run_dir)
        per_episode = col["local-1"]["collect_seconds"] / args.episodes
        wr = bench_writer(args, args.out, per_episode)
        ov = bench_ray_overheads(wr.pop("episode"), args.calls)
    finally:
        ray.shutdown()

    l1, l2, r2 = col["local-1"], col["local-2"], col["ray-2"]
    print("\nCollection (setup included; Ray already running)")
    print(table([
        ("run", "seconds", "frames/s", "vs local-1"),
        *((k, f"{v['seconds']:.2f}", f"{v['frames_per_s']:.0f}", f"{l1['seconds'] / v['seconds']:.2f}x")
          for k, v in (("local-1", l1), ("local-2", l2), ("ray-2", r2))),
    ]))  # fmt: skip
    print(
        f"Ray overhead ratio (local-2 time / ray-2 time): {l2['seconds'] / r2['seconds']:.2f}; "
        f"datasets identical: {col['identical']}; Ray start-up (once per cluster/command): {ray_start_s:.1f} s"
    )
    e2, er = ev["local-2"], ev["ray-2"]
    print("\nEvaluation grid")
    print(table([
        ("run", "seconds", "env steps/s"),
        ("local-2", f"{e2['seconds']:.2f}", f"{e2['steps_per_s']:.0f}"),
        ("ray-2", f"{er['seconds']:.2f}", f"{er['steps_per_s']:.0f}"),
    ]))  # fmt: skip
    print(
        f"Ray overhead ratio (local-2 time / ray-2 time): {e2['seconds'] / er['seconds']:.2f}; "
        f"reports identical: {ev['identical']}; load average at the end {os.getloadavg()[0]:.1f}"
    )
    print("\nFor the 100-node argument")
    print(table([
        ("quantity", "value"),
        ("episode produced by one worker (s)", f"{wr['produce_s'] * 1e3:.1f} ms"),
        ("episode written by the driver (s)", f"{wr['write_s'] * 1e3:.2f} ms"),
        ("workers one driver-writer keeps busy", f"{wr['workers_per_writer']:.0f}"),
        ("episode fetched from the object store", f"{ov['episode_get_s'] * 1e3:.2f} ms"),
        ("episode actor round trip (send + return)", f"{ov['episode_roundtrip_s'] * 1e3:.2f} ms"),
        ("workers one driver keeps busy (fetch+write)", f"{wr['produce_s'] / (wr['write_s'] + ov['episode_get_s']):.0f}"),
        ("actor call latency (one at a time)", f"{ov['actor_call_latency_s'] * 1e3:.2f} ms"),
        ("actor calls/s (pipelined, 2 actors)", f"{ov['actor_calls_per_s']:.0f}"),
        ("remote task latency (one at a time)", f"{ov['task_latency_s'] * 1e3:.2f} ms"),
        ("remote tasks/s (pipelined)", f"{ov['tasks_per_s']:.0f}"),
        ("episode payload, raw", f"{wr['raw_bytes'] / 1e6:.2f} MB"),
        ("episode on disk (zstd)", f"{wr['disk_bytes'] / 1e6:.3f} MB"),
    ]))  # fmt: skip
    summary = {"collect": {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in col.items() if isinstance(v, dict)},
               "evaluate": {k: {kk: vv for kk, vv in v.items() if kk != "report"} for k, v in ev.items() if isinstance(v, dict)},
               "writer": wr, "ray": ov, "ray_start_s": ray_start_s}  # fmt: skip
    (args.out / "scale_out.json").write_text(json.dumps(summary, indent=2, default=str))
    ok = col["identical"] and ev["identical"]
    if not ok:
        print("ERROR: a Ray result differs from the local one", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
