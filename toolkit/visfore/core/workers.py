"""Process pools of the episode pipelines (collect, evaluate): stopping them on Ctrl-C."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor

#: Seconds to wait for the pool's manager thread before unblocking it (see stop_executor).
_MANAGER_GRACE_S = 1.0


def stop_executor(executor: ProcessPoolExecutor, pending: Iterable[Future]) -> None:
    """Cancel ``pending`` futures and terminate the pool's worker processes now.

    Work in flight is dropped (its results were never written); finished results already
    handed back are unaffected. Waits up to 5 s per worker for it to exit.

    A worker terminated while it is sending a result leaves a partial message in the
    result pipe. CPython's executor manager thread (``concurrent/futures/process.py``,
    ``wait_result_broken_or_wakeup``) then blocks in ``recv()`` for the rest, which never
    comes because this process still holds the pipe's write end, and the interpreter hangs
    at exit joining that thread. So when the thread has not finished shortly after the
    workers are gone, the write end is closed: ``recv()`` gets EOF, the executor marks
    itself broken and the thread exits.
    """
    for future in pending:
        future.cancel()
    processes = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    result_queue = getattr(executor, "_result_queue", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
    if manager is None or result_queue is None:
        return
    manager.join(timeout=_MANAGER_GRACE_S)
    writer = getattr(result_queue, "_writer", None)
    if manager.is_alive() and writer is not None:
        writer.close()
        manager.join(timeout=5)
