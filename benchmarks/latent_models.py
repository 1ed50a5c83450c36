"""Latent imagination speed: one batched ``imagine`` call of the latent world models
(``rssm``, ``jepa``) in features mode (``decode=False``: no convolution), against a pixel
model's ``imagine`` (frames) at the same batch, measured in the same run on one CPU thread.

The planner that will use it (CEM/MPPI on ``ReacherPlane-v0`` at 32x32) needs a few
iterations of a few hundred candidates x 12-15 steps within 0.1 s per control step on one
core, so the number that matters is seconds per call at ``--candidates 500 --steps 15``.

Each model is built with its default options (untrained: the speed does not depend on the
weights), put in eval mode, and called under ``torch.no_grad()`` after one warm-up call;
the time is the median of ``--repeats`` calls (``--pixel-repeats`` for the pixel model,
which is much slower). Printed: parameters, seconds per call in features mode, the same
with ``decode=True`` (frames) for the latent models, and the ratio pixel time / latent
time. The load of the machine (``os.getloadavg``) is printed with the thread count, since
other processes on the cores change the numbers.

    python benchmarks/latent_models.py                     # 500 x 15 at 32x32 vs cdna
    python benchmarks/latent_models.py --pixel convlstm --candidates 300 --steps 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))  # a source checkout

from visfore_models import build_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default="rssm,jepa", help="latent models (default rssm,jepa)")
    p.add_argument("--pixel", default="cdna", help="pixel model to compare with (default cdna)")
    p.add_argument("--candidates", type=int, default=500, help="N action sequences per call (default 500)")
    p.add_argument("--steps", type=int, default=15, help="K imagined steps per call (default 15)")
    p.add_argument("--size", type=int, default=32, help="frame size (default 32)")
    p.add_argument("--context", type=int, default=2, help="context frames of the state (default 2)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per latent model (default 7)")
    p.add_argument("--pixel-repeats", type=int, default=2, help="timed calls of the pixel model (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def time_call(fn: Any, repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, args: argparse.Namespace, repeats: int, both: bool) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = build_model(name, action_dim=2, image_size=args.size).eval()
    g = torch.Generator().manual_seed(args.seed)
    C, N, K = args.context, args.candidates, args.steps
    frames = torch.rand(1, C, 3, args.size, args.size, generator=g)
    past = torch.rand(1, C - 1, 2, generator=g) * 2 - 1
    actions = torch.rand(1, N, K, 2, generator=g) * 2 - 1
    with torch.no_grad():
        state = model.init_state(frames, past)
        feats, _ = model.imagine(state, actions, decode=False)
        row = {
            "model": name,
            "params": model.num_parameters(),
            "feature_dim": int(feats.shape[-1]),
            "features_s": time_call(lambda: model.imagine(state, actions, decode=False), repeats),
            "frames_s": time_call(lambda: model.imagine(state, actions), repeats) if both else None,
        }
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.candidates < 1 or args.steps < 1 or args.repeats < 1 or args.pixel_repeats < 1 or args.threads < 1:
        print("error: --candidates, --steps, --repeats, --pixel-repeats and --threads must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(
        f"imagine: {args.candidates} candidates x {args.steps} steps, {args.size}x{args.size}, context "
        f"{args.context}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    pixel = measure(args.pixel, args, args.pixel_repeats, both=False)
    rows = [measure(name.strip(), args, args.repeats, both=True) for name in args.models.split(",") if name.strip()]
    print(f"{'model':<10} {'params':>9} {'F':>6} {'s/call features':>16} {'s/call frames':>14} {'pixel/latent':>13}")
    print(
        f"{pixel['model']:<10} {pixel['params']:>9,} {pixel['feature_dim']:>6} {pixel['features_s']:>16.4f} {'-':>14} {1.0:>13.1f}"
    )
    for r in rows:
        ratio = pixel["features_s"] / r["features_s"]
        print(
            f"{r['model']:<10} {r['params']:>9,} {r['feature_dim']:>6} {r['features_s']:>16.4f} "
            f"{r['frames_s']:>14.4f} {ratio:>13.1f}"
        )
    print(
        f"(pixel model: {args.pixel}'s imagine of frames, flattened in features mode; ratio = its seconds / the "
        "latent model's seconds in features mode)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
