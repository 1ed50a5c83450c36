"""Torch thread defaults on an idle and on a busy machine, measured in one run.

The question (issue 19, point 2): which ``--num-threads`` default is never much slower than
the best setting? Each torch command is timed end to end (the ``visfore`` process, as a
user runs it) with ``--num-threads 1``, ``--num-threads <cores>`` (torch's own default)
and no option (visfore's default, :mod:`visfore.core.threads`), under two loads:

- **idle**: nothing else started by this script;
- **busy**: one other process spinning on one core (``python -c "while True: pass"``),
  like a second job sharing a 2-core machine.

Commands: ``train-model`` (ConvLSTM, 64x64 frames, 1 epoch) and ``plan`` (learned CEM, 64
samples x 2 iterations x 3 control steps, on the model just trained). Settings alternate within each round
so load that drifts during the run moves all of them alike; the median over ``--rounds``
is reported, with each setting's ratio to the fastest in its row. Floor: the default is at
most 1.3x the fastest setting in every row; exits 1 otherwise.

Run ``python benchmarks/threads.py`` (about 10 minutes on a 2-core CPU with ``--rounds 1``);
say what else was running on the machine when you quote its numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "toolkit"))

from visfore.core.device import physical_cpu_cores  # noqa: E402

DEFAULT_CEILING = 1.3
VISFORE = [sys.executable, "-m", "visfore.cli"]


def run(args: list[str], env: dict[str, str]) -> float:
    """Seconds of wall time of one ``visfore`` command; raises on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.run(VISFORE + args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"visfore {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def settings(cores: int) -> dict[str, list[str]]:
    """Label -> the extra ``--num-threads`` arguments."""
    return {"1 thread": ["--num-threads", "1"], f"{cores} threads": ["--num-threads", str(cores)], "default": []}


class Spinner:
    """A process holding one core busy for the ``with`` block."""

    def __enter__(self) -> Spinner:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)  # let the scheduler see it before the measured command starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per setting (median reported)")
    parser.add_argument("--episodes", type=int, default=24, help="episodes in the benchmark dataset")
    parser.add_argument("--ceiling", type=float, default=DEFAULT_CEILING, help="allowed default / fastest ratio")
    args = parser.parse_args()

    cores = physical_cpu_cores()
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    loadavg = os.getloadavg()
    print(f"cores: {cores}; load average at start {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="visfore-threads-") as tmp:
        root = Path(tmp)
        data = root / "data.zarr"
        run(
            ["collect", "--env", "reacher", "--episodes", str(args.episodes), "--steps", "20", "--size", "64"]
            + ["--policy", "smooth", "--seed", "0", "--out", str(data), "--quiet"],
            env,
        )
        run(
            ["train-model", "--data", str(data), "--model", "convlstm", "--context", "2", "--horizon", "10"]
            + ["--epochs", "1", "--seed", "0", "--quiet", "--out", str(root / "runs" / "model")],
            env,
        )
        commands = {
            "train-model": lambda tag: [
                "train-model", "--data", str(data), "--model", "convlstm", "--context", "2", "--horizon", "10",
                "--epochs", "1", "--seed", "0", "--quiet", "--out", str(root / "runs" / f"tm-{tag}"),
            ],
            "plan": lambda tag: [
                "plan", "--model", str(root / "runs" / "model"), "--controllers", "learned", "--episodes", "1",
                "--steps", "3", "--samples", "64", "--iterations", "2", "--no-gifs", "--quiet",
                "--out", str(root / f"plan-{tag}"),
            ],
        }  # fmt: skip
        results: dict[tuple[str, str], dict[str, list[float]]] = {}
        counter = 0
        for load in ("idle", "busy"):
            for _ in range(args.rounds):
                for name, command in commands.items():
                    for label, extra in settings(cores).items():
                        counter += 1
                        if load == "busy":
                            with Spinner():
                                seconds = run(command(str(counter)) + extra, env)
                        else:
                            seconds = run(command(str(counter)) + extra, env)
                        results.setdefault((name, load), {}).setdefault(label, []).append(seconds)
                        print(
                            f"  {name:12s} {load:5s} {label:10s} {seconds:7.1f} s"
                            f"  (load average {os.getloadavg()[0]:.2f})",
                            flush=True,
                        )

    print()
    labels = list(settings(cores))
    print(f"{'command':12s} {'load':5s} " + " ".join(f"{label:>18s}" for label in labels))
    worst = 0.0
    for (name, load), by_label in results.items():
        medians = {label: statistics.median(v) for label, v in by_label.items()}
        fastest = min(medians.values())
        cells = [f"{medians[label]:7.1f} s ({medians[label] / fastest:4.2f}x)" for label in labels]
        print(f"{name:12s} {load:5s} " + " ".join(f"{c:>18s}" for c in cells))
        worst = max(worst, medians["default"] / fastest)
    ok = worst <= args.ceiling
    print(
        f"\ndefault is at most {worst:.2f}x the fastest setting (ceiling {args.ceiling:.2f}x): {'ok' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
