"""Run directories: creation, ``config.yaml``, atomic checkpoints and ``--resume``.

Layout of a run directory::

    runs/<command>-<UTC timestamp or name>/
      config.yaml            every option, resolved (written atomically)
      checkpoints/last.pt    latest training state (model, optimizer, scheduler, epoch,
      checkpoints/best.pt    step, RNG states, metrics); best = lowest validation loss
      logs/                  TensorBoard event files
      images/                prediction grids (``train-model`` only: created by the
                             first image written there, so no run has an empty one)
      metrics.json           final evaluation (written atomically)

Durability: every file here is written to a temporary file in the *same* directory,
flushed and ``fsync``-ed, then moved over the destination with :func:`os.replace` (atomic
on POSIX and Windows), and the directory entry is ``fsync``-ed where the OS allows it. A
crash or an exception mid-write therefore leaves the previous file intact and no partial
file under the final name; a stale ``.*.tmp-*`` file may remain after a hard kill and is
ignored.

Torch is imported inside the checkpoint functions so that importing this module (and
``visfore --help``) stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TypeVar

from visfore.core.errors import VisforeError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: Sub-directories created in every run directory. ``images/`` is not one of them: the
#: commands that write images create it with the first one (an empty ``images/`` in a
#: policy run was a surprise).
RUN_SUBDIRS = ("checkpoints", "logs")
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
#: Default parent directory of run directories (relative to the working directory).
DEFAULT_RUNS_ROOT = Path("runs")

C = TypeVar("C", bound="DataclassInstance")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def utc_timestamp() -> str:
    """UTC time as ``YYYYMMDD-HHMMSS`` (sortable, safe in file names)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def resolve_run_dir(
    command: str,
    *,
    out: str | os.PathLike[str] | None = None,
    name: str | None = None,
    root: str | os.PathLike[str] = DEFAULT_RUNS_ROOT,
) -> Path:
    """The run directory for ``command``; nothing is created.

    ``out`` wins (used as given); otherwise ``root/<command>-<name>``, or
    ``root/<command>-<UTC timestamp>`` when no name is given.

    Raises:
        VisforeError: both ``out`` and ``name`` given, or ``name`` is not a plain file name
            (letters, digits, ``.``, ``_``, ``-``).
    """
    if out is not None and name is not None:
        raise VisforeError("give either --out or --name, not both")
    if out is not None:
        return Path(out)
    if name is not None:
        if not _NAME_RE.match(name):
            raise VisforeError(f"run name {name!r} must be letters, digits, '.', '_' or '-' (no path separators)")
        return Path(root) / f"{command}-{name}"
    return Path(root) / f"{command}-{utc_timestamp()}"


def last_checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    """``run_dir/checkpoints/last.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def best_checkpoint_path(run_dir: str | os.PathLike[str]) -> Path:
    """``run_dir/checkpoints/best.pt``."""
    return Path(run_dir) / CHECKPOINT_DIR / BEST_CHECKPOINT


def check_run_dir(run_dir: str | os.PathLike[str], *, resume: bool) -> None:
    """Validate ``run_dir`` for a new run or a resumed one; touches nothing.

    Raises:
        VisforeError: without ``resume``: the path exists (the run is left untouched).
            With ``resume``: the directory or its ``checkpoints/last.pt`` is missing.
    """
    run_dir = Path(run_dir)
    if not resume:
        if run_dir.exists() or run_dir.is_symlink():
            raise VisforeError(
                f"run directory {run_dir} already exists; pass --resume to continue it, or choose another --out/--name"
            )
        return
    if not run_dir.is_dir():
        raise VisforeError(f"cannot resume: run directory {run_dir} does not exist")
    if not last_checkpoint_path(run_dir).is_file():
        raise VisforeError(
            f"cannot resume: {run_dir} has no checkpoint ({CHECKPOINT_DIR}/{LAST_CHECKPOINT} "
            "is missing); start a new run instead"
        )
    if not (run_dir / CONFIG_NAME).is_file():
        raise VisforeError(f"cannot resume: {run_dir} has no {CONFIG_NAME}")


def create_run_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Create ``run_dir`` and its sub-directories :data:`RUN_SUBDIRS` (``checkpoints``,
    ``logs``).

    The top directory must not exist (``mkdir`` without ``exist_ok``, so two processes
    cannot share a run); its parents are created as needed.

    Raises:
        VisforeError: the directory exists or cannot be created.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        raise VisforeError(f"run directory {run_dir} already exists") from None
    except OSError as exc:
        raise VisforeError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    for sub in RUN_SUBDIRS:
        (run_dir / sub).mkdir(exist_ok=True)
    return run_dir


def ensure_run_subdirs(run_dir: str | os.PathLike[str]) -> None:
    """Recreate missing sub-directories of an existing run (for ``--resume``)."""
    for sub in RUN_SUBDIRS:
        (Path(run_dir) / sub).mkdir(parents=True, exist_ok=True)


# -- atomic writes -----------------------------------------------------------------------
def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None]) -> Path:
    """Write a file atomically: ``write(f)`` on a binary temp file in the same directory,
    flush + fsync, then :func:`os.replace` onto ``path``.

    If ``write`` (or anything before the rename) raises, the temp file is removed, the
    exception propagates, and an existing ``path`` is left exactly as it was.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path`` (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def write_config(run_dir: str | os.PathLike[str], config: Mapping[str, Any]) -> Path:
    """Atomically write ``config`` as ``run_dir/config.yaml`` (YAML, keys in given order).

    Values must be YAML-representable plain types (str, int, float, bool, None, lists,
    dicts).
    """
    import yaml  # lazy: the CLI imports this module at start-up

    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None, width=100)
    return atomic_write_text(Path(run_dir) / CONFIG_NAME, text)


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``run_dir/config.yaml``.

    Raises:
        VisforeError: the file is missing or is not a YAML mapping.
    """
    import yaml  # lazy: the CLI imports this module at start-up

    path = Path(run_dir) / CONFIG_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VisforeError(f"{path} not found") from None
    except yaml.YAMLError as exc:
        raise VisforeError(f"{path} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise VisforeError(f"{path} is not a YAML mapping")
    return data


def read_run_config(run_dir: str | os.PathLike[str], command: str, kind: str) -> dict[str, Any]:
    """``config.yaml`` of a run directory written by ``command`` (e.g. ``"train-policy"``).

    Args:
        kind: how messages name the expected run, e.g. ``"train-policy run"``.

    Raises:
        VisforeError: not a directory, no config.yaml, a config of another command, or one
            without an ``options`` mapping (one line naming the directory).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VisforeError(f"{run_dir} is not a directory (expected a {kind})")
    if not (run_dir / CONFIG_NAME).is_file():
        raise VisforeError(f"{run_dir} is not a {kind} (no {CONFIG_NAME})")
    saved = read_config(run_dir)
    if saved.get("command") != command or not isinstance(saved.get("options"), dict):
        raise VisforeError(
            f"{run_dir} is not a {kind} ({CONFIG_NAME} is from {saved.get('command') or 'another tool'})"
        )
    return saved


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def merge_resumed_options(
    saved_options: Mapping[str, Any],
    given: C,
    *,
    runtime: Iterable[str],
    skip: Iterable[str] = (),
) -> tuple[C, list[str]]:
    """The options of a resumed run: the saved ones, with the runtime options of ``given``.

    The one ``--resume`` rule of every command that writes a run directory: a resumed
    run trains exactly what it was started with, so its saved options win; only the
    ``runtime`` options (device, progress, a time budget, the epoch or timestep target:
    what does not change *what* is trained) are taken from ``given``. Any other option
    that the caller set to something other than its default and that differs from the
    run's value is reported back (the caller logs them as ignored).

    Args:
        saved_options: the ``options`` mapping of the run's ``config.yaml``; keys the
            config class no longer has (options of an older version) are dropped.
        given: the config of this invocation (a dataclass, usually a
            :func:`~visfore.core.config.config` class; its ``from_dict`` is used when
            present, so saved strings and lists load into the typed fields).
        runtime: field names taken from ``given``.
        skip: field names neither taken nor reported (e.g. ``out``, ``name``: they only
            locate the run).

    Returns:
        ``(merged, ignored)``: the merged config (same class as ``given``) and one text
        per ignored option, ``"--lr 0.01 (the run uses 0.001)"``.
    """
    cls = type(given)
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    values = {k: v for k, v in saved_options.items() if str(k).replace("-", "_") in known}
    from_dict = getattr(cls, "from_dict", None)
    merged = from_dict(values) if callable(from_dict) else cls(**values)
    keep, leave = set(runtime), set(skip)
    ignored = []
    for f in fields:
        if f.name in keep or f.name in leave:
            continue
        mine, theirs = getattr(given, f.name), getattr(merged, f.name)
        if mine != theirs and mine != _field_default(f):
            ignored.append(f"--{f.name.replace('_', '-')} {mine} (the run uses {theirs})")
    merged = dataclasses.replace(merged, **{k: getattr(given, k) for k in keep if k in known})
    return merged, ignored


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NaN/inf are rejected)."""
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


# -- checkpoints -------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Atomically ``torch.save`` ``state`` to ``path`` (temp file, fsync, ``os.replace``).

    ``state`` should hold only tensors and plain Python containers/scalars so that
    :func:`load_checkpoint` can read it with ``weights_only=True``.

    Raises:
        Whatever ``torch.save`` or the file system raises; the previous file at ``path``
        is then intact.
    """
    import torch  # lazy: the CLI imports this module at start-up (no torch for --help)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save(dict(state), f))


def load_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Args:
        path: the ``.pt`` file.
        map_location: passed to ``torch.load`` (default: CPU).

    Raises:
        VisforeError: the file is missing or cannot be unpickled.
    """
    import torch  # lazy: the CLI imports this module at start-up (no torch for --help)

    path = Path(path)
    if not path.is_file():
        raise VisforeError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, wrong format, unsafe pickle
        raise VisforeError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(state, dict):
        raise VisforeError(f"checkpoint {path} does not hold a dict")
    return state
