"""Ray backend of the episode pipelines (``collect``, ``evaluate``, ``train-eval-all``).

The one module that imports :mod:`ray` (an optional extra: ``pip install 'visfore[ray]'``),
and only inside functions, so ``visfore --help`` and local runs never pay for it.

Connecting (:func:`connect`, the ``--ray ADDRESS`` option):

- ``local`` starts a Ray instance for the command (``num_cpus`` = ``--workers`` when
  given, else the machine's; no dashboard; a :data:`LOCAL_OBJECT_STORE_BYTES` object
  store; worker output kept in Ray's log files, not the console) and shuts it down after;
- ``auto`` joins the running cluster (``ray start --head`` on this machine, or
  ``RAY_ADDRESS``);
- ``HOST:PORT`` joins the cluster whose head (GCS) listens there, ``ray://HOST:PORT``
  connects through Ray Client. The address is checked with a TCP connect first
  (:data:`CONNECT_TIMEOUT_S`): Ray itself waits minutes on a dead address, then exits the
  process. Ray (2.60) enables token authentication for an explicit address only with
  ``RAY_AUTH_MODE=token`` (``auto`` finds a local cluster's token itself): a cluster
  started by ``ray start`` needs it, with the token in ``RAY_AUTH_TOKEN`` or
  ``~/.ray/auth_token``; the error says so.

If Ray is already initialised in this process (a notebook, the tests), that instance is
used whatever the address, and left running.

Running work (:class:`WorkerPool`, :func:`ordered_results`): the pipelines keep their
single writer in the driver. A :class:`WorkerPool` holds N Ray *actors* of one CPU each;
each actor builds its state once (``setup(*setup_args)``: an env and a policy, a loaded
policy run) and then runs ``fn(state, item)`` for every item sent to it. Actors were
chosen over ``ray.remote`` functions because a function would rebuild the env for every
task (or hide it in a per-process cache that Ray may multiply when it starts more worker
processes), while an actor builds it exactly once and frees it when the pool is closed.
At most ``max_in_flight`` items (default 2 per actor) are submitted at a time, so memory
stays bounded when the writer is slower than the workers, and results are handed back
**in submission order**, whatever order they finish in. An actor whose process dies
(crash, OOM kill, lost node) is restarted by Ray (``max_restarts``) and its unfinished
items re-run (``max_task_retries``); a result is only handed to the writer once it has
been returned in full, so nothing is written twice or half. The work must therefore be
a pure function of the item (collect: of ``(seed, episode index)``).

Configurations of ``train-eval-all`` run as plain Ray tasks (:func:`remote`), one per
configuration, with its own resources (one CPU, or one GPU for a ``cuda`` device).

Test hook: when the environment variable :data:`TEST_CRASH_ENV` names a file whose text
is ``crash <repr(item)>`` in a Ray worker's environment, the actor that receives that
item rewrites the file to ``crashed <repr(item)>`` and kills its own process
(``os._exit(1)``) before running it; the retry then runs normally. Nothing happens when
the variable is unset (the tests set it before they start Ray).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterable

from visfore.core.errors import VisforeError

log = logging.getLogger(__name__)

#: The one-line error of ``--ray`` without Ray installed.
RAY_MISSING = "--ray needs Ray: pip install 'visfore[ray]'"
#: ``--ray`` values that are not addresses.
LOCAL = "local"
AUTO = "auto"
#: Object store of a Ray started for one command (bytes). Results are fetched and freed
#: as they come in; Ray spills to disk if in-flight results ever exceed it.
LOCAL_OBJECT_STORE_BYTES = 256 << 20
#: Seconds to wait for a TCP connection to ``HOST:PORT`` before giving up.
CONNECT_TIMEOUT_S = 5.0
#: Restarts of a dead actor / re-runs of a task whose worker died.
DEFAULT_RETRIES = 3
#: Upper bound on ``--workers`` with ``--ray`` (actors of one CPU each).
MAX_RAY_WORKERS = 4096
#: Environment variable of the crash test hook (see the module docstring).
TEST_CRASH_ENV = "VISFORE_RAY_TEST_CRASH"

_ADDRESS_RE = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

RAY_HELP = (
    "Run the work as Ray tasks: 'local' (a Ray started for this command), 'auto' (the "
    "running cluster), HOST:PORT or ray://HOST:PORT. Results are identical to a local run."
)


# -- connecting ------------------------------------------------------------------------
def require_ray() -> Any:
    """The :mod:`ray` module.

    Raises:
        VisforeError: Ray is not installed (:data:`RAY_MISSING`).
    """
    try:
        import ray  # lazy: an optional extra
    except ImportError:
        raise VisforeError(RAY_MISSING) from None
    return ray


def parse_address(value: str | None) -> str:
    """Check a ``--ray`` value: ``local``, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.

    Returns:
        The value, stripped (``local`` / ``auto`` lower-cased).

    Raises:
        VisforeError: anything else, or a port outside 1..65535.
    """
    text = str(value if value is not None else LOCAL).strip()
    if text.lower() in (LOCAL, AUTO):
        return text.lower()
    m = _ADDRESS_RE.match(text)
    if not m or not 0 < int(m.group(3)) < 65536:
        raise VisforeError(f"--ray {value!r} must be local, auto, HOST:PORT or ray://HOST:PORT (e.g. 10.0.0.5:6379)")
    return text


@dataclass
class RaySession:
    """A connection to Ray for one command.

    Attributes:
        address: the ``--ray`` value (``local``, ``auto`` or an address).
        started: True when this command started the Ray instance (it stops it on close).
        nodes: alive nodes of the cluster.
        cpus: CPUs of the cluster (the ``CPU`` resource, total).
        gpus: GPUs of the cluster (the ``GPU`` resource, total).
        gcs_address: the cluster's GCS address (None through Ray Client).
    """

    address: str
    started: bool
    nodes: int
    cpus: int
    gpus: int
    gcs_address: str | None = None
    closed: bool = field(default=False, repr=False)

    def record(self) -> dict[str, Any]:
        """Provenance entry: ``address``, ``nodes``, ``cpus``, ``gpus``."""
        return {"address": self.address, "nodes": self.nodes, "cpus": self.cpus, "gpus": self.gpus}

    def close(self) -> None:
        """Shut Ray down if this session started it (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.started:
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                ray.shutdown()

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_reachable(address: str) -> None:
    m = _ADDRESS_RE.match(address)
    assert m is not None
    host, port = m.group(2).strip("[]"), int(m.group(3))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise VisforeError(
            f"--ray {address}: no Ray cluster reachable there ({reason}); start one with "
            "`ray start --head` or give another address"
        ) from None


def connect(address: str | None, num_cpus: int | None = None) -> RaySession:
    """Connect to Ray for one command (see the module docstring).

    Args:
        address: ``local`` (or None), ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.
        num_cpus: CPUs of a Ray started here (``local``); None = the machine's.

    Returns:
        A :class:`RaySession`; call ``close()`` (or use it as a context manager).

    Raises:
        VisforeError: Ray is not installed, a bad address, no cluster at the address.
    """
    ray = require_ray()
    address = parse_address(address)
    started = False
    if not ray.is_initialized():
        common = dict(log_to_driver=False, logging_level=logging.ERROR)
        try:
            if address == LOCAL:
                ray.init(
                    address="local",  # a new instance, even when `ray start` runs here
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                    **common,
                )
                started = True
            else:
                env_address = os.environ.get("RAY_ADDRESS", "").strip()
                if address != AUTO:
                    _check_reachable(address)
                elif _ADDRESS_RE.match(env_address):
                    _check_reachable(env_address)  # auto follows RAY_ADDRESS when it is set
                ray.init(address=address, **common)
        except VisforeError:
            raise
        except ConnectionError as exc:
            if address == AUTO:
                raise VisforeError(
                    "--ray auto: no running Ray cluster found; start one with `ray start "
                    "--head`, set RAY_ADDRESS, or use --ray local"
                ) from None
            hint = ""
            if address != LOCAL and os.environ.get("RAY_AUTH_MODE") is None:
                # Ray turns token authentication on for an explicit address only when asked
                hint = (
                    "; a cluster with token authentication (the default of `ray start`) "
                    "needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
                )
            raise VisforeError(f"--ray {address}: cannot connect to Ray ({_one_line(exc)}){hint}") from None
        except (RuntimeError, ValueError, OSError) as exc:
            raise VisforeError(f"--ray {address}: cannot connect to Ray ({_one_line(exc)})") from None
    try:
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        try:
            gcs = ray.get_runtime_context().gcs_address
        except Exception:  # noqa: BLE001 - Ray Client has no GCS address
            gcs = None
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return RaySession(
        address=address,
        started=started,
        nodes=int(nodes),
        cpus=int(resources.get("CPU", 0)),
        gpus=int(resources.get("GPU", 0)),
        gcs_address=gcs,
    )


def resolve_workers(session: RaySession, workers: int | None, *, note: bool = True) -> int:
    """Actors of one CPU to start: ``workers``, or every CPU of the cluster when None.

    More actors than the cluster has CPUs would wait for CPUs that never come (on a
    cluster without an autoscaler), so the count is capped at ``session.cpus`` (with a
    note on stderr when ``note``). Always at least 1.
    """
    cpus = max(1, session.cpus)
    if workers is None:
        return cpus
    if workers > cpus:
        if note:
            log.info(
                "--workers %d is more than the %d CPUs of the Ray cluster; running %d workers", workers, cpus, cpus
            )
        return cpus
    return max(1, int(workers))


# -- results ---------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unwrap_error(exc: BaseException, lost: str = "") -> BaseException:
    """The exception to raise for a failed Ray result.

    A task that raised returns its own exception (``RayTaskError.cause``, e.g. the
    :class:`VisforeError` of a bad option, with its one-line message); a worker that
    died more often than it was retried becomes a one-line :class:`VisforeError`,
    followed by ``lost`` (what the caller kept). Anything else is returned unchanged.
    """
    ray = sys.modules.get("ray")
    if ray is None:
        return exc
    errors = ray.exceptions
    if isinstance(exc, errors.TaskCancelledError):
        return KeyboardInterrupt()
    if isinstance(exc, errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
        return VisforeError(f"a Ray task failed: {_one_line(exc)}")
    if isinstance(exc, errors.RayError):
        kind = type(exc).__name__
        detail = _one_line(exc)[:200]
        return VisforeError(f"a Ray worker was lost and its retries ran out ({kind}: {detail}){lost}")
    return exc


def ordered_results(
    submit: Callable[[Any], Any],
    items: Iterable[Any],
    max_in_flight: int,
    *,
    lost: str = "",
    return_exceptions: bool = False,
    cancel: Callable[[Any], None] | None = None,
    on_result: Callable[[], None] | None = None,
) -> Generator[tuple[Any, Any], None, None]:
    """Submit ``items`` and yield ``(item, result)`` in submission order.

    Args:
        submit: ``submit(item) -> ObjectRef`` (a remote call).
        items: the work; consumed lazily, so it may be long or a generator.
        max_in_flight: submitted but not yet yielded items, at most (>= 1).
        lost: appended to the message when a worker was lost for good
            (:func:`unwrap_error`).
        return_exceptions: yield ``(item, exception)`` for a failed item instead of
            raising it (the exception as :func:`unwrap_error` gives it).
        cancel: called with each outstanding reference when the caller stops early
            (an exception, Ctrl-C, ``close()``); default ``ray.cancel`` (no force).
        on_result: called when the oldest item's result is in, before the next item
            is submitted (bookkeeping of the caller).

    Raises:
        The first failed item's exception (see :func:`unwrap_error`) unless
        ``return_exceptions``; KeyboardInterrupt on Ctrl-C. Outstanding items are
        cancelled in both cases; results already yielded stay with the caller.
    """
    ray = require_ray()
    if cancel is None:

        def cancel(ref: Any) -> None:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - finished or already gone
                pass

    pending: deque[tuple[Any, Any]] = deque()
    todo = iter(items)
    try:
        for item in itertools.islice(todo, max(1, int(max_in_flight))):
            pending.append((item, submit(item)))
        while pending:
            item, ref = pending[0]
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - mapped below
                error = unwrap_error(exc, lost)
                if not return_exceptions or isinstance(error, KeyboardInterrupt):
                    raise error from None
                result = error
            pending.popleft()
            if on_result is not None:
                on_result()
            for nxt in itertools.islice(todo, 1):
                pending.append((nxt, submit(nxt)))
            del ref
            yield item, result
    finally:
        for _, ref in pending:
            cancel(ref)
        pending.clear()


# -- actors ----------------------------------------------------------------------------
def _maybe_crash_for_test(item: Any) -> None:
    """The crash test hook (see the module docstring)."""
    path = os.environ.get(TEST_CRASH_ENV)
    if not path:
        return
    marker = Path(path)
    try:
        text = marker.read_text().strip()
    except OSError:
        return
    if text == f"crash {item!r}":
        marker.write_text(f"crashed {item!r}\n")
        os._exit(1)


class _StatefulWorker:
    """The Ray actor of :class:`WorkerPool`: ``setup`` once, then ``fn(state, item)``."""

    def __init__(self, setup: Callable[..., Any], fn: Callable[[Any, Any], Any], setup_args: tuple) -> None:
        self.fn = fn
        self.state: Any = None
        self.error: BaseException | None = None
        try:
            self.state = setup(*setup_args)
        except Exception as exc:  # raised by the first item, with its own message
            self.error = exc

    def run(self, item: Any) -> Any:
        _maybe_crash_for_test(item)
        if self.error is not None:
            raise self.error
        return self.fn(self.state, item)

    def close(self) -> None:
        close = getattr(self.state, "close", None)
        if callable(close):
            close()


_ACTOR_CLASS: Any = None


def _actor_class() -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = require_ray().remote(_StatefulWorker)
    return _ACTOR_CLASS


class WorkerPool:
    """``workers`` Ray actors, each holding ``setup(*setup_args)``, running
    ``fn(state, item)`` for the items of :meth:`imap`, results in order.

    Args:
        setup: builds an actor's state (module-level, picklable: a class or function);
            an exception it raises is raised by the actor's first item.
        fn: ``fn(state, item) -> result`` (module-level, picklable); a pure function of
            ``item`` (it may run twice when a worker dies).
        workers: actors (>= 1), one CPU each.
        setup_args: arguments of ``setup``.
        num_cpus, num_gpus: resources of each actor.
        max_retries: restarts of a dead actor and re-runs of its unfinished items.
        lost: appended to the error when a worker is lost for good.

    Use as a context manager (or call :meth:`close`): the actors are killed on exit,
    which frees their CPUs for the next command on the same cluster.
    """

    def __init__(
        self,
        setup: Callable[..., Any],
        fn: Callable[[Any, Any], Any],
        workers: int,
        setup_args: tuple = (),
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = DEFAULT_RETRIES,
        lost: str = "",
    ) -> None:
        self.workers = max(1, int(workers))
        self.lost = lost
        cls = _actor_class().options(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=max_retries,
            max_task_retries=max_retries,
        )
        self.actors = [cls.remote(setup, fn, setup_args) for _ in range(self.workers)]
        self._load = [0] * self.workers

    def imap(self, items: Iterable[Any], max_in_flight: int | None = None) -> Generator[tuple[Any, Any], None, None]:
        """Yield ``(item, fn(state, item))`` in the order of ``items``.

        Each item goes to the actor with the fewest items in flight; at most
        ``max_in_flight`` (default ``2 * workers``) are in flight.

        Raises:
            The first failed item's exception (:func:`unwrap_error`); KeyboardInterrupt.
        """
        owners: deque[int] = deque()  # actor of each item in flight, in submission order

        def submit(item: Any) -> Any:
            i = min(range(self.workers), key=self._load.__getitem__)
            self._load[i] += 1
            owners.append(i)
            return self.actors[i].run.remote(item)

        limit = max_in_flight if max_in_flight is not None else 2 * self.workers

        def release() -> None:  # results come back in submission order
            self._load[owners.popleft()] -= 1

        # on an early exit the items in flight are cancelled (then close() kills the actors)
        results = ordered_results(submit, items, limit, lost=self.lost, on_result=release)
        try:
            yield from results
        finally:
            results.close()
            self._load = [0] * self.workers

    def close(self) -> None:
        """Kill the actors (their items in flight are dropped)."""
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            self.actors = []
            return
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def remote(fn: Callable[..., Any], **options: Any) -> Any:
    """``ray.remote(**options)(fn)``: a remote function (``.remote(...)``,
    ``.options(...)``); options such as ``num_cpus``, ``num_gpus``, ``max_retries``."""
    return require_ray().remote(**options)(fn)
