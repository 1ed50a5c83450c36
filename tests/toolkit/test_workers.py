"""stop_executor: the worker pool stops without leaving a thread that hangs the interpreter."""

from __future__ import annotations

import multiprocessing
import os
import struct
import time
from concurrent.futures import ProcessPoolExecutor

from visfore.core.workers import stop_executor


def _square(x: int) -> int:
    return x * x


def _pool() -> ProcessPoolExecutor:
    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    assert executor.submit(_square, 3).result(timeout=60) == 9  # workers and manager running
    return executor


def test_stop_executor_terminates_workers_and_manager() -> None:
    executor = _pool()
    processes = list(executor._processes.values())
    manager = executor._executor_manager_thread
    pending = [executor.submit(time.sleep, 30)]
    stop_executor(executor, pending)
    assert all(not p.is_alive() for p in processes)
    assert not manager.is_alive()


def test_stop_executor_unblocks_a_manager_stuck_on_a_partial_result() -> None:
    # What a worker killed half-way through sending its result leaves behind: a message
    # header announcing more bytes than ever arrive. The manager thread blocks in recv().
    executor = _pool()
    manager = executor._executor_manager_thread
    writer = executor._result_queue._writer
    os.write(writer.fileno(), struct.pack("!i", 1 << 20) + b"partial")
    time.sleep(0.3)
    assert manager.is_alive()
    started = time.monotonic()
    stop_executor(executor, [])
    assert not manager.is_alive(), "the manager thread would hang the interpreter at exit"
    assert time.monotonic() - started < 15
