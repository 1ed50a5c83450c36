"""Torch devices and CPU threads: ``--device`` and ``--num-threads`` of every torch command."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from visfore.core.errors import VisforeError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["NUM_THREADS_HELP", "parse_device_spec", "physical_cpu_cores", "select_device"]

#: Help of every ``--num-threads`` option (the default is :mod:`visfore.core.threads`').
NUM_THREADS_HELP = (
    "Torch CPU threads (default: the cores other processes leave free, re-measured while it runs;"
    " torch's own default slows to half speed when another job holds a core)."
)


def parse_device_spec(spec: str) -> str:
    """Normalise a ``--device`` value: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        VisforeError: any other value.
    """
    spec = str(spec).strip().lower()
    if spec in ("auto", "cpu", "cuda") or (spec.startswith("cuda:") and spec[5:].isdigit()):
        return spec
    raise VisforeError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def select_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cpu``; ``cuda`` / ``cuda:N``.

    Raises:
        VisforeError: CUDA requested but not available.
    """
    import torch  # lazy: the CLI imports this module at start-up (no torch for --help)

    spec = parse_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VisforeError(f"--device {spec} requested but CUDA is not available (torch {torch.__version__})")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise VisforeError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(spec)


def physical_cpu_cores() -> int:
    """Physical cores available to this process (hyper-threads counted once), >= 1.

    Reads ``/proc/cpuinfo`` (physical id, core id pairs) on Linux, capped by the CPU
    affinity mask; falls back to ``os.cpu_count()``.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        physical = "0"
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("physical id"):
                    physical = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    cores.add((physical, line.split(":", 1)[1].strip()))
    except OSError:
        pass
    return max(1, min(len(cores) or available, available))
