"""visfore.core.threads: the --num-threads default follows the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from visfore.core import threads
from visfore.core.device import physical_cpu_cores
from visfore.core.threads import (
    AdaptiveThreads,
    CpuSample,
    auto_num_threads,
    configure_torch_threads,
    free_cores,
    restoring_torch_threads,
    torch_threads,
)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_free_cores_counts_other_processes_only():
    before = CpuSample(wall=0.0, busy=100.0, own=10.0)
    # 1 s of wall time, 2 busy CPU-seconds in all, 1 of them ours: one core used by others.
    assert free_cores(before, CpuSample(wall=1.0, busy=102.0, own=11.0), cores=2) == 1
    # Our own two spinning threads are not load.
    assert free_cores(before, CpuSample(wall=1.0, busy=102.0, own=12.0), cores=2) == 2
    # A light other job (0.3 core) leaves both cores; a heavy one (0.6) takes one.
    assert free_cores(before, CpuSample(wall=1.0, busy=100.3, own=10.0), cores=2) == 2
    assert free_cores(before, CpuSample(wall=1.0, busy=100.6, own=10.0), cores=2) == 1
    # Never below zero or above the cores.
    assert free_cores(before, CpuSample(wall=1.0, busy=110.0, own=10.0), cores=2) == 0
    assert free_cores(before, CpuSample(wall=1.0, busy=100.0, own=11.0), cores=2) == 2


def test_free_cores_is_none_without_accounting_or_interval():
    before = CpuSample(wall=0.0, busy=None, own=0.0)
    assert free_cores(before, CpuSample(wall=1.0, busy=None, own=0.0), cores=2) is None
    short = CpuSample(wall=0.0, busy=1.0, own=0.0)
    assert free_cores(short, CpuSample(wall=0.01, busy=1.0, own=0.0), cores=2) is None


def test_explicit_thread_count_is_used_as_given():
    assert configure_torch_threads(3) == 3
    assert torch.get_num_threads() == 3


def test_default_thread_count_is_the_free_cores(monkeypatch):
    samples = iter([CpuSample(0.0, 50.0, 1.0), CpuSample(1.0, 51.0, 1.0)])  # one core busy elsewhere
    monkeypatch.setattr(threads, "cpu_sample", lambda: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert configure_torch_threads(None) == 1
    assert torch.get_num_threads() == 1
    # Without accounting: the physical cores.
    monkeypatch.setattr(threads, "cpu_sample", lambda: CpuSample(0.0, None, 0.0))
    assert auto_num_threads() == physical_cpu_cores()


def test_default_is_divided_among_torchrun_processes(monkeypatch):
    samples = iter([CpuSample(0.0, 50.0, 1.0), CpuSample(1.0, 50.0, 1.0)])  # idle
    monkeypatch.setattr(threads, "cpu_sample", lambda: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert configure_torch_threads(None, divide_by=4) == max(1, physical_cpu_cores() // 4)


def test_adaptive_threads_follow_a_load_that_starts_and_stops(monkeypatch):
    clock = {"wall": 0.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads, "cpu_sample", lambda: CpuSample(clock["wall"], clock["busy"], clock["own"]))
    torch.set_num_threads(4)
    cb = AdaptiveThreads(every_s=10.0, cores=4)
    # 5 s: too early to re-measure.
    clock.update(wall=5.0, busy=20.0, own=20.0)
    assert cb.maybe_adjust() is None
    # 10 s: we used 4 cores for 10 s and nobody else did -> unchanged.
    clock.update(wall=10.0, busy=40.0, own=40.0)
    assert cb.maybe_adjust() is None and torch.get_num_threads() == 4
    # Another job holds 2 cores for the next 10 s -> 2 threads.
    clock.update(wall=20.0, busy=80.0, own=60.0)
    assert cb.maybe_adjust() == 2 and torch.get_num_threads() == 2
    # It stops -> back to 4.
    clock.update(wall=30.0, busy=100.0, own=80.0)
    assert cb.maybe_adjust() == 4
    assert cb.changes == [(20.0, 2), (30.0, 4)]


@pytest.mark.skipif(physical_cpu_cores() < 2, reason="needs 2 cores to leave one free")
def test_a_spinning_process_is_seen_as_load():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert auto_num_threads(sample_s=0.5) <= physical_cpu_cores() - 1
    finally:
        spinner.kill()
        spinner.wait()


def test_thread_count_is_restored_after_the_block_even_on_error():
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError), restoring_torch_threads():
        torch.set_num_threads(1)
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
