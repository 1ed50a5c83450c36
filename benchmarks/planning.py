"""Planning speed: seconds per control step of ``visfore plan``'s learned controller on a
latent world model (``jepa``, ``rssm``: ``--cost latent``, features without decoding)
against a pixel model (``cdna``: ``--cost pixels``, decoded frames) at the same budget,
measured in the same run on ``ReacherPlane-v0`` at 32x32 on one CPU thread.

The controller is the real one (:class:`visfore.planning.controllers.LearnedCEMController`,
the code ``visfore plan --controllers learned`` runs): every control step replans
(``--replan-every 1``) with ``--iterations`` x ``--samples`` candidates of ``--blocks`` x
``--repeat`` steps, all samples of an iteration in one batched model call, every plan over
the whole horizon (``--fixed-horizon``). The default
budget is the latent default of ``visfore plan`` (3 x 256 samples, 32 elites, a 15-step
horizon; :data:`visfore.planning.config.LATENT_BUDGET`). The models are built with their
default options and untrained weights (speed does not depend on the weights) unless
``--model RUN`` names trained runs (repeatable; latent and pixel runs are told apart by
the model).

Each model runs one episode: one warm-up control step (not timed), then ``--steps``
timed steps for latent models and ``--pixel-steps`` for pixel models (which are much
slower); printed per model and optimizer: wall-clock seconds per control step (mean,
median, max), the thread's CPU seconds per step (``time.thread_time``; with one torch
thread, the time the step takes on a core of its own), and the ratios of the pixel
model's means to each controller's. The thread count and the load average
(``os.getloadavg``) are printed before and after: on a machine shared with other jobs the
wall time includes waiting for a core, the CPU time does not.

Exit status 1 when a latent model takes more than ``--max-seconds`` (0.1) per control
step on average or is less than ``--min-ratio`` (10) times faster than the pixel model,
both on CPU time (``--gate wall``: on wall-clock time); 2 on bad arguments.

    python benchmarks/planning.py                        # jepa, rssm vs cdna, CEM and MPPI
    python benchmarks/planning.py --model runs/train-model-jepa --model runs/train-model-plan-cdna32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from visfore.planning.cem import CEMConfig  # noqa: E402
from visfore.planning.config import LATENT_BUDGET  # noqa: E402
from visfore.planning.controllers import LearnedCEMController  # noqa: E402
from visfore.planning.goal_reaching import make_goal_env  # noqa: E402
from visfore.planning.mppi import MPPIConfig  # noqa: E402
from visfore.worldmodels.model_run import ModelRun, load_model_run  # noqa: E402
from visfore_models import build_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--latent", default="jepa,rssm", help="latent models built untrained (default jepa,rssm)")
    p.add_argument("--pixel", default="cdna", help="pixel model built untrained (default cdna)")
    p.add_argument("--model", action="append", default=[], help="a train-model run instead (repeatable)")
    p.add_argument("--optimizers", default="cem,mppi", help="optimizers of the latent models (default cem,mppi)")
    p.add_argument("--iterations", type=int, default=LATENT_BUDGET["iterations"])
    p.add_argument("--samples", type=int, default=LATENT_BUDGET["samples"])
    p.add_argument("--elites", type=int, default=LATENT_BUDGET["elites"])
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed control steps per latent model (default 10)")
    p.add_argument("--pixel-steps", type=int, default=2, help="timed control steps of the pixel model (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--max-seconds", type=float, default=0.1, help="latent s/step limit (default 0.1)")
    p.add_argument("--min-ratio", type=float, default=10.0, help="pixel / latent s/step floor (default 10)")
    p.add_argument(
        "--gate", choices=("cpu", "wall"), default="cpu",
        help="what the limits check: cpu (the thread's CPU seconds per step: the time on a core of its own, "
        "default) or wall (wall-clock seconds, which include waiting for a core other processes hold)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def untrained_run(name: str, size: int, seed: int) -> ModelRun:
    """A :class:`ModelRun` of an untrained default-size ``name`` (context 2, actions in [-1, 1])."""
    torch.manual_seed(seed)
    model = build_model(name, action_dim=2, image_size=size).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    bounds = np.full(2, 1.0, np.float32)
    return ModelRun(
        run_dir=Path(f"<untrained {name}>"), config={}, checkpoint="untrained", checkpoint_path=Path(),
        model=model, device=torch.device("cpu"), context=2, horizon=12, data_path=None,
        action_low=-bounds, action_high=bounds,
    )  # fmt: skip


def time_controller(run: ModelRun, optimizer: str, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """Seconds of ``controller.act`` per control step over ``steps`` steps after one warm-up."""
    budget = dict(iterations=args.iterations, samples=args.samples, elites=args.elites,
                  blocks=args.blocks, repeat=args.repeat)  # fmt: skip
    cfg = MPPIConfig(**budget) if optimizer == "mppi" else CEMConfig(**budget)
    latent = bool(getattr(run.model, "latent", False))
    # --fixed-horizon: every plan scores the whole horizon (a shrinking one would score
    # fewer steps near the episode's end and look faster)
    ctrl = LearnedCEMController(run, cfg, cost="latent" if latent else "pixels", shrink_horizon=False)
    env = make_goal_env("reacher", {}, run.image_size, max_episode_steps=steps + 1)
    try:
        obs, info = env.reset(seed=args.seed)
        ctrl.reset(env, obs, env.unwrapped.render_goal(), np.random.default_rng(args.seed))
        times, cpu = [], []
        for t in range(steps + 1):
            t0, c0 = time.perf_counter(), time.thread_time()
            action = ctrl.act(obs, info)
            if t > 0:  # the first step is the warm-up
                times.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            obs, _, _, _, info = env.step(action)
    finally:
        env.close()
    return {
        "model": run.model_name, "label": ctrl.name, "latent": latent, "params": run.model.num_parameters(trainable_only=False),
        "mean": statistics.fmean(times), "median": statistics.median(times), "max": max(times), "steps": steps,
        "cpu": statistics.fmean(cpu),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ints = (args.iterations, args.samples, args.elites, args.blocks, args.repeat, args.steps, args.pixel_steps,
            args.threads)  # fmt: skip
    if min(ints) < 1 or args.elites > args.samples:
        print(
            "error: budget, --steps, --pixel-steps and --threads must be >= 1, --elites <= --samples", file=sys.stderr
        )
        return 2
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    if not optimizers or any(o not in ("cem", "mppi") for o in optimizers):
        print(f"error: --optimizers must name cem and/or mppi, got {args.optimizers!r}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.model:
        model_runs = [load_model_run(r) for r in args.model]
    else:
        names = [n.strip() for n in args.latent.split(",") if n.strip()] + [args.pixel]
        model_runs = [untrained_run(n, 32, args.seed) for n in names]
    latent_runs = [r for r in model_runs if getattr(r.model, "latent", False)]
    pixel_runs = [r for r in model_runs if not getattr(r.model, "latent", False)]
    if not latent_runs or not pixel_runs:
        print("error: need at least one latent and one pixel model", file=sys.stderr)
        return 2
    load = os.getloadavg()
    T = args.blocks * args.repeat
    print(
        f"plan ReacherPlane-v0 {model_runs[0].image_size[0]}x{model_runs[0].image_size[1]}: "
        f"{args.iterations} iterations x {args.samples} samples ({args.elites} elites) x {T} steps "
        f"({args.blocks} blocks x {args.repeat}, fixed horizon), replan every step; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    pixel = [time_controller(r, "cem", args, args.pixel_steps) for r in pixel_runs]
    latent = [time_controller(r, o, args, args.steps) for r in latent_runs for o in optimizers]
    ref = pixel[0]
    print(
        f"{'controller':<34} {'params':>10} {'steps':>5} {'wall s/step':>12} {'median':>8} {'max':>8} "
        f"{'CPU s/step':>11} {'ratio':>7} {'CPU ratio':>9}"
    )
    failed = []
    key = "cpu" if args.gate == "cpu" else "mean"
    for row in [*pixel, *latent]:
        ratio, cpu_ratio = ref["mean"] / row["mean"], ref["cpu"] / row["cpu"]
        name = f"{row['model']}: {row['label']}"
        print(
            f"{name:<34} {row['params']:>10,} {row['steps']:>5} {row['mean']:>12.4f} {row['median']:>8.4f} "
            f"{row['max']:>8.4f} {row['cpu']:>11.4f} {ratio:>7.1f} {cpu_ratio:>9.1f}"
        )
        gated = ref[key] / row[key]
        if row["latent"] and row[key] > args.max_seconds:
            failed.append(f"{name} takes {row[key]:.3f} {args.gate} s per step > {args.max_seconds:g}")
        if row["latent"] and gated < args.min_ratio:
            failed.append(f"{name} is only {gated:.1f}x faster ({args.gate}) than {ref['model']} < {args.min_ratio:g}")
    print(
        f"(wall s/step: controller.act per control step after one warm-up step (mean, median, max); CPU s/step: "
        f"the thread's CPU time in it (mean); ratio = {ref['model']}'s mean / the controller's; latent models: "
        f"--cost latent, no decoding; pixel: --cost pixels; limits checked on {args.gate} time)"
    )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for f in failed:
        print(f"FAIL: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
