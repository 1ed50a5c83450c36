"""Process pools of the episode pipelines (collect, evaluate): stopping them on Ctrl-C."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor


def stop_executor(executor: ProcessPoolExecutor, pending: Iterable[Future]) -> None:
    """Cancel ``pending`` futures and terminate the pool's worker processes now.

    Work in flight is dropped (its results were never written); finished results already
    handed back are unaffected. Waits up to 5 s per worker for it to exit.
    """
    for future in pending:
        future.cancel()
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
