"""Process pools of the episode pipelines (collect, evaluate): one bounded pool, stopped
at once on Ctrl-C or a failure.

:func:`imap_processes` is the local counterpart of
:meth:`visfore.core.ray_backend.WorkerPool.imap`: ``workers`` spawned processes, each
running ``initializer(*initargs)`` once (build an env and a policy, load a run) and then
``fn(item)`` for the items sent to it. At most ``2 * workers`` items are in flight, so
memory stays bounded when the consumer (a dataset writer) is slower than the workers.
Processes are started with ``spawn``: rendering libraries (Mesa's llvmpipe threads) and
torch do not survive ``fork``.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from visfore.core.errors import VisforeError

__all__ = ["imap_processes", "stop_executor"]

#: Seconds to wait for the pool's manager thread before unblocking it (see stop_executor).
_MANAGER_GRACE_S = 1.0


def imap_processes(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    ordered: bool = True,
    lost: str = "",
) -> Generator[tuple[Any, Any], None, None]:
    """Run ``fn(item)`` for every item on ``workers`` spawned processes; yield
    ``(item, result)``.

    Args:
        fn: a module-level (picklable) function of one item; it may use the state the
            ``initializer`` left in its process's module globals.
        items: the work, consumed lazily (at most ``2 * workers`` submitted at a time).
        workers: processes (>= 1).
        initializer, initargs: run once in each process before its first item.
        ordered: True: results in the order of ``items`` (a single in-order writer);
            False: as they finish.
        lost: appended to the error when a process dies.

    Raises:
        VisforeError: a worker process died (crash, out of memory): ``"a worker process
            died (...)"`` + ``lost``.
        The first exception an item raised, or KeyboardInterrupt; in every case (and when
        the caller stops iterating early) the processes are stopped and the items in
        flight dropped.
    """
    executor = ProcessPoolExecutor(
        max_workers=max(1, int(workers)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )
    pending: deque[tuple[Any, Future]] = deque()
    todo = iter(items)

    def submit(count: int) -> None:
        for item in itertools.islice(todo, count):
            pending.append((item, executor.submit(fn, item)))

    finished = False
    try:
        submit(2 * max(1, int(workers)))
        while pending:
            if ordered:
                item, future = pending.popleft()
                result = future.result()
            else:
                wait([f for _, f in pending], return_when=FIRST_COMPLETED)
                index = next(i for i, (_, f) in enumerate(pending) if f.done())
                item, future = pending[index]
                del pending[index]
                result = future.result()
            submit(1)
            yield item, result
        finished = True
    except BrokenProcessPool as exc:
        stop_executor(executor, [f for _, f in pending])
        raise VisforeError(f"a worker process died ({exc}){lost}") from None
    finally:
        if finished:
            executor.shutdown(wait=True)
        elif not getattr(executor, "_shutdown_thread", False):
            stop_executor(executor, [f for _, f in pending])


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
