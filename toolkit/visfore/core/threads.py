"""Torch CPU thread counts that stay fast on a shared machine: the default of every
``--num-threads`` option.

Why not torch's default (one thread per core): torch's OpenMP threads spin at every
barrier. When another job holds one of the two cores, one of our threads is descheduled
and the other waits for it at every operation, so two threads run at about half the speed
of one (``benchmarks/threads.py`` measures it). On an idle machine two threads are about
1.8x faster than one. So the default follows the load: the cores not used by *other*
processes, re-measured while training runs (:class:`AdaptiveThreads`), so a job that starts
or stops beside a long training changes its thread count within seconds.

An explicit ``--num-threads N`` is always used as given.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

from visfore.core.device import physical_cpu_cores
from visfore.core.trainer import Callback, StepResult, Trainer, TrainState

__all__ = [
    "AdaptiveThreads",
    "CpuSample",
    "adaptive_threads",
    "auto_num_threads",
    "configure_torch_threads",
    "free_cores",
    "restoring_torch_threads",
    "torch_threads",
]

#: Seconds of CPU accounting sampled at start-up to decide the first thread count.
STARTUP_SAMPLE_S = 0.25
#: Seconds between two re-measurements of the load during training.
RECHECK_EVERY_S = 10.0


@dataclass(frozen=True)
class CpuSample:
    """One reading of the CPU accounting.

    Attributes:
        wall: ``time.monotonic()`` seconds.
        busy: busy CPU seconds of the cores this process may run on, all processes
            (``/proc/stat``: user + nice + system + irq + softirq + steal), or ``None``
            where ``/proc/stat`` is not readable.
        own: CPU seconds used by this process, all its threads (``time.process_time()``).
    """

    wall: float
    busy: float | None
    own: float


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def cpu_sample() -> CpuSample:
    """Read the CPU accounting now (Linux ``/proc/stat``; elsewhere ``busy`` is ``None``)."""
    busy: float | None = None
    allowed = _allowed_cpus()
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                fields = line.split()
                cpu = int(fields[0][3:])
                if allowed is not None and cpu not in allowed:
                    continue
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
                total += user + nice + system + irq + softirq + steal
        busy = total / ticks
    except (OSError, ValueError, IndexError):
        busy = None
    return CpuSample(wall=time.monotonic(), busy=busy, own=time.process_time())


def free_cores(before: CpuSample, after: CpuSample, cores: int | None = None) -> int | None:
    """Cores left free by other processes between two samples, in ``[0, cores]``.

    ``cores - round(other)``, where ``other`` is the busy CPU time of every process except
    this one (its own threads, spinning or not, are subtracted) divided by the wall time.
    ``None`` when the accounting is unavailable or the interval is too short (< 50 ms).
    """
    cores = cores or physical_cpu_cores()
    wall = after.wall - before.wall
    if before.busy is None or after.busy is None or wall < 0.05:
        return None
    other = max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall
    return max(0, min(cores, cores - int(other + 0.5)))


def auto_num_threads(sample_s: float = STARTUP_SAMPLE_S, cores: int | None = None) -> int:
    """The default torch thread count now: the cores other processes leave free, >= 1.

    Samples the CPU accounting for ``sample_s`` seconds (sleeping). Falls back to the
    physical core count where the accounting is unavailable.
    """
    cores = cores or physical_cpu_cores()
    before = cpu_sample()
    time.sleep(sample_s)
    free = free_cores(before, cpu_sample(), cores)
    return cores if free is None else max(1, free)


def configure_torch_threads(requested: int | None, *, divide_by: int = 1) -> int:
    """Set torch's intra-op thread count and return it.

    Args:
        requested: ``--num-threads``; ``None`` (or 0) chooses :func:`auto_num_threads`.
        divide_by: processes sharing the machine's cores (torchrun's world size): the
            automatic count is divided among them.
    """
    import torch  # lazy: the CLI imports core modules at start-up (no torch for --help)

    threads = int(requested) if requested else max(1, auto_num_threads() // max(1, divide_by))
    torch.set_num_threads(threads)
    return threads


class AdaptiveThreads(Callback):
    """Trainer callback: re-measure the other processes' load every ``every_s`` seconds of
    training and set torch's thread count to the cores they leave free (>= 1).

    Used only when ``--num-threads`` was not given. Measures over the interval since the
    previous check (no sleeping). ``changes`` lists ``(seconds since start, threads)``.
    """

    def __init__(self, every_s: float = RECHECK_EVERY_S, cores: int | None = None, divide_by: int = 1) -> None:
        self.every_s = float(every_s)
        self.cores = cores or physical_cpu_cores()
        self.divide_by = max(1, divide_by)
        self.changes: list[tuple[float, int]] = []
        self._last = cpu_sample()
        self._start = self._last.wall

    def on_train_start(self, trainer: Trainer, state: TrainState) -> None:
        self._last = cpu_sample()

    def on_step_end(self, trainer: Trainer, state: TrainState, result: StepResult) -> None:
        self.maybe_adjust()

    def maybe_adjust(self) -> int | None:
        """Re-measure if ``every_s`` has passed; set and return the new thread count when it
        changed, else ``None``."""
        now = cpu_sample()
        if now.wall - self._last.wall < self.every_s:
            return None
        free = free_cores(self._last, now, self.cores)
        self._last = now
        if free is None:
            return None
        import torch

        threads = max(1, free // self.divide_by)
        if threads == torch.get_num_threads():
            return None
        torch.set_num_threads(threads)
        self.changes.append((round(now.wall - self._start, 1), threads))
        return threads


def adaptive_threads(requested: int | None, device: Any = None, *, divide_by: int = 1) -> list[AdaptiveThreads]:
    """The trainer callbacks for ``--num-threads``: ``[AdaptiveThreads()]`` when it was not
    given and training runs on the CPU (``device`` ``None`` or of type ``cpu``), else ``[]``."""
    on_cpu = device is None or getattr(device, "type", str(device)) == "cpu"
    return [AdaptiveThreads(divide_by=divide_by)] if requested is None and on_cpu else []


@contextlib.contextmanager
def restoring_torch_threads() -> Iterator[None]:
    """Restore torch's thread count after the block, however it ends: an API function that
    sets threads for its work must not leave the process changed."""
    import torch

    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def torch_threads(requested: int | None) -> Iterator[int]:
    """Within the block, torch uses ``requested`` threads (``None``: :func:`auto_num_threads`);
    the previous count is restored after it (an API call must not leave the process changed).

    Yields:
        The thread count set.
    """
    with restoring_torch_threads():
        yield configure_torch_threads(requested)
