"""``visfore evaluate``: robustness of a trained policy under morphology perturbations, or
its performance on new episodes of the nominal env.

Pipeline (:func:`evaluate`; the Typer command :func:`evaluate_command` is a thin wrapper):

1. Validate every option and load the policy run (:func:`visfore.rl.policy_run.load_policy_run`)
   *before* anything is written; bad input is a :class:`~visfore.core.errors.VisforeError`
   (one line, exit 2, nothing on disk).
2. Build the cells (:class:`Cell`) of one of four modes:

   - **sweep** (``--perturb LO-HI --points P [--params ...]``): for each parameter, P
     scale factors evenly spaced over [LO, HI] (``numpy.linspace``, rounded to 10
     decimals), the other parameters at 1;
   - **grid** (``--grid A,B``): the P x P combinations of the scales of A and B;
   - **fixed** (``--set key=value`` / the body-part shortcut options ``--Ltorso 1.2 ...``): a
     single perturbed model;
   - **nominal** (none of ``--perturb``, ``--params``, ``--grid``, ``--set`` / shortcuts):
     the nominal cell only: the policy on new episodes of the env it was trained on. This
     works for any env, also one that cannot be perturbed (``TargetHumanoid-v0``, the
     reachers, a plain Gymnasium id); asking such an env for a perturbation is an error
     naming it.

   Cell 0 is always the nominal model (no perturbation), the reference for normalising.
   A cell whose every scale is 1.0 *is* the nominal model: it is not run again but
   repeats the nominal cell's episodes.
3. Run ``episodes`` episodes for each seed of ``seeds`` in every cell with the policy's
   deterministic actions. Seeding (:data:`SEEDING_SCHEME`): episode ``k`` of seed ``s``
   is reset with ``int(numpy.random.SeedSequence([s, k]).generate_state(1, numpy.uint32)[0])``
   in *every* cell, so cells see the same initial states (common random numbers) and a
   rerun gives the same numbers. Work is split into (cell, seed) tasks, run in this
   process (``workers=1``) or on a ``spawn`` process pool whose workers each load the
   run once, or on Ray actors (``--ray``, :mod:`visfore.core.ray_backend`) that each load it
   once; results are put back in task order, so they are identical for any ``workers``
   and on Ray. When the last step's ``info`` has ``is_success`` / ``distance`` (the
   goal-reaching envs), the episode records ``success`` and ``final_distance`` (metres),
   and the report adds the success rate with its Wilson 95% interval and the final
   distance mean / std / median per cell.
4. Write the report (:mod:`visfore.reports.robustness_report`): raw episodes, per-cell summary,
   Markdown, self-contained HTML and PNG plots, into ``RUN/eval-<UTC time>/`` or ``--out``.

Ctrl-C: the cells finished so far are written as a report (marked as interrupted), the
command says so and exits 130.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from rich.table import Table

import visfore_envs
from visfore.core import ray_backend
from visfore.core.console import stdout_console
from visfore.core.errors import VisforeError
from visfore.core.progress import episode_progress
from visfore.core.provenance import command_line, package_versions
from visfore.core.runs import utc_timestamp
from visfore.core.seeding import episode_reset_seed
from visfore.core.workers import imap_processes
from visfore.reports.robustness_report import (
    cell_label,
    damage_text,
    fmt,
    fmt_scale,
    goal_cells,
    goal_header,
    perturbation_of,
    std_text,
    write_report,
)
from visfore.rl import policy_run
from visfore.rl.config import EvaluateConfig, parse_keys, parse_range, parse_seeds
from visfore.rl.config import positive_scale as _positive_scale

log = logging.getLogger(__name__)

COMMAND = "evaluate"
SEEDING_SCHEME = (
    "visfore-eval-seeding-v1: episode k of seed s is reset with "
    "int(numpy.random.SeedSequence([s, k]).generate_state(1, numpy.uint32)[0]) in every cell"
)
#: Limits on the command's options.
MAX_WORKERS = 64
MAX_POINTS = 101
BACKENDS = ("mujoco", "pybullet")
CHECKPOINTS = ("best", "last")
#: An episode longer than this without ``terminated``/``truncated`` is an error (an env
#: made without a time limit would otherwise run forever).
MAX_EPISODE_STEPS = 100_000


# -- cells and grids ----------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One perturbed model evaluated with every seed.

    Attributes:
        index: position in the evaluation (0 = nominal).
        kind: ``nominal``, ``sweep`` (one parameter), ``grid`` (two parameters) or
            ``fixed`` (``--set`` / body-part shortcut options).
        params: canonical perturbation keys, e.g. ``("thigh.length",)``; empty for nominal.
        scales: the scale factor of each key (dimensionless, 1 = nominal).
    """

    index: int
    kind: str
    params: tuple[str, ...] = ()
    scales: tuple[float, ...] = ()

    @property
    def perturbation(self) -> dict[str, float]:
        """{key: scale}; empty for the nominal cell."""
        return dict(zip(self.params, self.scales))

    @property
    def is_nominal_model(self) -> bool:
        """True when every scale is 1.0 (the unperturbed model)."""
        return all(s == 1.0 for s in self.scales)

    @property
    def label(self) -> str:
        """``nominal`` or ``key=scale[, key=scale]``."""
        if not self.params:
            return "nominal"
        return ", ".join(f"{k}={s:g}" for k, s in zip(self.params, self.scales))

    def row(self) -> dict[str, Any]:
        """Identifying fields of the cell in the report: ``cell``, ``kind``, ``param``
        (``nominal``, the key, or for > 2 keys the keys joined by ``+``), ``scale``,
        ``param2`` / ``scale2`` (the second key of a two-key cell, else None) and
        ``perturbation`` {key: scale}."""
        n = len(self.params)
        if n == 0:
            param, scale = "nominal", 1.0
        elif n <= 2:
            param, scale = self.params[0], self.scales[0]
        else:
            param, scale = "+".join(self.params), None
        return {
            "cell": self.index,
            "kind": self.kind,
            "param": param,
            "scale": scale,
            "param2": self.params[1] if n == 2 else None,
            "scale2": self.scales[1] if n == 2 else None,
            "perturbation": self.perturbation,
        }


@dataclass(frozen=True)
class EvalGrid:
    """The cells of an evaluation.

    Attributes:
        mode: ``sweep``, ``grid``, ``fixed`` or ``nominal``.
        params: the swept keys (sweep), (A, B) (grid) or the fixed keys; empty for nominal.
        scales: the swept scale factors (empty for fixed and nominal).
        cells: every cell, ``cells[0]`` the nominal one (the only one for nominal).
    """

    mode: str
    params: tuple[str, ...]
    scales: tuple[float, ...]
    cells: tuple[Cell, ...]

    @property
    def fixed(self) -> dict[str, float]:
        """The perturbation of a fixed evaluation ({} otherwise)."""
        return self.cells[1].perturbation if self.mode == "fixed" else {}


def grid_scales(lo: float, hi: float, points: int) -> tuple[float, ...]:
    """``points`` scale factors evenly spaced over [lo, hi], both ends included, rounded
    to 10 decimals (so 0.5-1.5 with 11 points gives exactly 0.5, 0.6, ..., 1.0, ..., 1.5).

    Raises:
        VisforeError: points < 2 or > :data:`MAX_POINTS`.
    """
    _check_int("--points", points, 2, MAX_POINTS)
    return tuple(float(round(x, 10)) for x in np.linspace(lo, hi, int(points)))


def sweep_grid(params: Sequence[str], scales: Sequence[float]) -> EvalGrid:
    """Nominal cell, then for each parameter (in order) one cell per scale."""
    cells = [Cell(0, "nominal")]
    for p in params:
        for s in scales:
            cells.append(Cell(len(cells), "sweep", (p,), (float(s),)))
    return EvalGrid("sweep", tuple(params), tuple(scales), tuple(cells))


def grid_2d(a: str, b: str, scales: Sequence[float]) -> EvalGrid:
    """Nominal cell, then the ``len(scales)**2`` cells (a x sa, b x sb), b varying fastest."""
    cells = [Cell(0, "nominal")]
    for sa in scales:
        for sb in scales:
            cells.append(Cell(len(cells), "grid", (a, b), (float(sa), float(sb))))
    return EvalGrid("grid", (a, b), tuple(scales), tuple(cells))


def nominal_grid() -> EvalGrid:
    """The nominal cell only (no perturbation)."""
    return EvalGrid("nominal", (), (), (Cell(0, "nominal"),))


def fixed_grid(perturbation: Mapping[str, float]) -> EvalGrid:
    """Nominal cell and one cell with ``perturbation`` {key: scale}."""
    keys = tuple(perturbation)
    cell = Cell(1, "fixed", keys, tuple(float(perturbation[k]) for k in keys))
    return EvalGrid("fixed", keys, (), (Cell(0, "nominal"), cell))


# -- option parsing --------------------------------------------------------------------
def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise VisforeError(f"{name} must be an integer {bound}, got {value!r}")


# -- env lookups (visfore_envs; replaced in tests) ---------------------------------------
def _perturbation_keys(env_id: str) -> tuple[str, ...]:
    """The perturbation keys of ``env_id`` (:func:`visfore_envs.perturbation_keys`).

    Raises:
        VisforeError: visfore_envs has no perturbations for ``env_id``.
    """
    fn = getattr(visfore_envs, "perturbation_keys", None)
    if fn is None:
        raise VisforeError("this visfore-envs has no perturbable envs (perturbation_keys missing)")
    try:
        keys = tuple(fn(env_id))
    except (KeyError, ValueError) as exc:
        raise VisforeError(f"{env_id} cannot be perturbed ({str(exc).splitlines()[0]})") from None
    if not keys:
        raise VisforeError(f"{env_id} has no perturbation parameters")
    return keys


def _resolve_key(env_id: str, key: str) -> str:
    """Canonical key of ``key`` (aliases such as ``Ltorso`` allowed); ValueError if unknown."""
    return visfore_envs.resolve_perturbation_key(env_id, key)


def resolve_keys(env_id: str, names: Iterable[str], option: str) -> tuple[str, ...]:
    """Canonical keys of ``names`` (order kept, duplicates dropped).

    Raises:
        VisforeError: an unknown key; the one line lists the valid keys of ``env_id``.
    """
    valid = _perturbation_keys(env_id)
    keys: list[str] = []
    for name in names:
        name = name.strip()
        key: str | None = name
        if name not in valid:
            try:
                key = _resolve_key(env_id, name)
            except (ValueError, KeyError):
                key = None
        if key is None or key not in valid:
            raise VisforeError(f"unknown {option} parameter {name!r} for {env_id}; valid: {', '.join(valid)}")
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def default_params(keys: Sequence[str]) -> tuple[str, ...]:
    """The default swept parameters: every ``<part>.length`` and ``<part>.width`` key."""
    return tuple(k for k in keys if k.endswith((".length", ".width")))


def build_grid(
    env_id: str,
    perturb: tuple[float, float] | str | None,
    points: int,
    params: Sequence[str] | str | None,
    grid: Sequence[str] | str | None,
    fixed: Mapping[str, float] | None,
) -> EvalGrid:
    """The cells of an evaluation from the command's options (see :func:`evaluate`);
    ``perturb``, ``params`` and ``grid`` may also be their command-line strings. With
    none of ``perturb``, ``params``, ``grid`` and ``fixed``: the nominal cell only
    (:func:`nominal_grid`, any env).

    Raises:
        VisforeError: conflicting modes, a bad ``--perturb`` / ``--points``, unknown
            parameters (the message lists the valid ones), ``--grid`` not two distinct
            parameters, any perturbation option for an env that cannot be perturbed (the
            message names it).
    """
    if fixed:
        if perturb is not None or params is not None or grid is not None:
            raise VisforeError(
                "fixed values (--set / --Ltorso ...) evaluate one perturbed model: drop "
                "--perturb, --params and --grid, or drop the fixed values to sweep"
            )
        keys = resolve_keys(env_id, list(fixed), "--set")
        if len(keys) != len(fixed):
            raise VisforeError("the fixed values name the same parameter twice")
        return fixed_grid(dict(zip(keys, fixed.values())))
    if perturb is None:
        if params is None and grid is None:
            return nominal_grid()
        _perturbation_keys(env_id)  # an env that cannot be perturbed: say so first
        raise VisforeError(
            "give --perturb LO-HI (e.g. 0.5-1.5) for a sweep, or fixed values with --set key=value / --Ltorso ..."
        )
    lo, hi = parse_range(perturb)
    scales = grid_scales(lo, hi, points)
    if grid is not None:
        if params is not None:
            raise VisforeError("give --params (1-D sweeps) or --grid A,B (a 2-D sweep), not both")
        names = parse_keys(grid)
        grid = ",".join(names)
        if len(names) != 2:
            raise VisforeError(f"--grid {grid!r} must name exactly two parameters, e.g. thigh.length,torso.mass")
        keys = resolve_keys(env_id, names, "--grid")
        if len(keys) != 2:
            raise VisforeError(f"--grid {grid!r} must name two different parameters")
        return grid_2d(keys[0], keys[1], scales)
    if params is None:
        keys = default_params(_perturbation_keys(env_id))
        if not keys:
            raise VisforeError(f"{env_id} has no length/width parameters; choose --params")
    elif [p.lower() for p in parse_keys(params)] == ["all"]:
        keys = _perturbation_keys(env_id)
    else:
        names = parse_keys(params)
        if not names:
            raise VisforeError("--params is empty; give keys such as thigh.length,torso.mass or all")
        keys = resolve_keys(env_id, names, "--params")
    return sweep_grid(keys, scales)


# -- running episodes ------------------------------------------------------------------
def load_run(run_dir: str | os.PathLike[str], checkpoint: str) -> Any:
    """Default run loader: :func:`visfore.rl.policy_run.load_policy_run` (VisforeError if
    ``run_dir`` is not a policy run)."""
    return policy_run.load_policy_run(run_dir, checkpoint=checkpoint)


def run_episodes(
    run: Any,
    perturbation: Mapping[str, float] | None,
    seed: int,
    episodes: int,
    backend: str | None = None,
    on_episode: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``episodes`` episodes of one (cell, seed) task in a fresh env.

    Args:
        run: a :class:`visfore.rl.policy_run.PolicyRun` (``make_env``, ``predict``).
        perturbation: {key: scale}; None or {} for the nominal model.
        seed: the evaluation seed; episode k is reset with :func:`episode_reset_seed`.
        episodes: episodes to run (>= 1).
        backend: physics backend, None for the run's own.
        on_episode: called after each episode (progress).

    Returns:
        One record per episode: ``seed``, ``episode``, ``reset_seed``, ``return`` (sum of
        rewards, float), ``length`` (steps), ``terminated``, ``truncated``,
        ``applied_perturbation`` (``info["perturbation"]`` at reset, {} if absent) and
        ``body_mass`` ({body: kg} from ``info["body_mass"]`` at reset, {} if absent);
        and only when the last step's ``info`` has them (goal-reaching envs), ``success``
        (bool, its ``info["is_success"]``) and ``final_distance`` (float, its
        ``info["distance"]``, metres).

    Raises:
        VisforeError: an episode ran :data:`MAX_EPISODE_STEPS` steps without ending.
    """
    kwargs: dict[str, Any] = {"perturbation": dict(perturbation) if perturbation else None}
    if backend is not None:
        kwargs["backend"] = backend
    env = run.make_env(**kwargs)
    records = []
    try:
        for k in range(int(episodes)):
            reset_seed = episode_reset_seed(seed, k)
            obs, info = env.reset(seed=reset_seed)
            applied = {str(a): float(b) for a, b in dict(info.get("perturbation") or {}).items()}
            masses = {str(a): float(b) for a, b in dict(info.get("body_mass") or {}).items()}
            total, length = 0.0, 0
            terminated = truncated = False
            while not (terminated or truncated):
                obs, reward, terminated, truncated, info = env.step(run.predict(obs))
                total += float(reward)
                length += 1
                if length >= MAX_EPISODE_STEPS and not (terminated or truncated):
                    raise VisforeError(
                        f"an episode ran {MAX_EPISODE_STEPS} steps without ending; the env needs a time limit"
                    )
            record = {
                "seed": int(seed), "episode": k, "reset_seed": reset_seed, "return": total,
                "length": length, "terminated": bool(terminated), "truncated": bool(truncated),
                "applied_perturbation": applied, "body_mass": masses,
            }  # fmt: skip
            record.update(goal_outcome(info))
            records.append(record)
            if on_episode is not None:
                on_episode()
    finally:
        env.close()
    return records


def goal_outcome(info: Mapping[str, Any]) -> dict[str, Any]:
    """``success`` (bool of ``info["is_success"]``) and ``final_distance`` (float of
    ``info["distance"]``, metres) of an episode's last step ``info``, each only when the
    key is there ({} for envs without them, e.g. locomotion)."""
    out: dict[str, Any] = {}
    success, distance = np.asarray(info.get("is_success")), np.asarray(info.get("distance"))
    if "is_success" in info and success.size == 1:
        out["success"] = bool(success.item())
    if "distance" in info and distance.size == 1:
        out["final_distance"] = float(distance.item())
    return out


def check_env(run: Any, backend: str | None) -> None:
    """Make the nominal env once (on ``backend``) and check that the policy fits it.

    Raises:
        VisforeError: the env cannot be made, or its observation or action shape is not
            the policy's (e.g. a policy trained on MuJoCo evaluated on a PyBullet port
            whose observations differ).
    """
    env = run.make_env(perturbation=None, **({"backend": backend} if backend else {}))
    try:
        model = getattr(run, "model", None)
        where = f"{run.env_id}" + (f" with --backend {backend}" if backend else "")
        for name in ("observation_space", "action_space"):
            want = getattr(getattr(model, name, None), "shape", None)
            have = getattr(getattr(env, name, None), "shape", None)
            if want is not None and have is not None and tuple(want) != tuple(have):
                what = name.replace("_space", "s")
                raise VisforeError(
                    f"{where} has {what} of shape {tuple(have)} but the policy was trained on {tuple(want)}"
                )
    finally:
        env.close()


def _single_thread_torch() -> int | None:
    """Set torch to one CPU thread if torch is loaded; return the previous count."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return previous


# Worker processes (workers > 1): each holds the loaded run.
_WORKER_RUN: Any = None
_WORKER_ERROR: BaseException | None = None


def _worker_init(loader: Callable[[Any, str], Any], run_dir: str, checkpoint: str) -> None:
    # Ctrl-C reaches the whole process group: only the main process handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER_RUN, _WORKER_ERROR
    try:
        _WORKER_RUN = loader(run_dir, checkpoint)
        _single_thread_torch()  # N workers on N cores: no oversubscription
    except Exception as exc:  # reported by the first task, with its own message
        _WORKER_ERROR = exc


def _worker_task(item: tuple[tuple[int, int], dict[str, float], int, str | None]) -> list[dict[str, Any]]:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    task, perturbation, episodes, backend = item
    return run_episodes(_WORKER_RUN, perturbation, task[1], episodes, backend)


def run_cells(
    run: Any,
    cells: Sequence[Cell],
    seeds: Sequence[int],
    episodes: int,
    results: dict[tuple[int, int], list[dict[str, Any]]],
    *,
    backend: str | None = None,
    workers: int = 1,
    loader: Callable[[Any, str], Any] = load_run,
    run_dir: str | os.PathLike[str] | None = None,
    checkpoint: str = "best",
    on_episodes: Callable[[int], None] | None = None,
    ray: Any = None,
) -> None:
    """Run every (cell, seed) task of ``cells`` whose model differs from the nominal one.

    Cells with every scale 1.0 other than cell 0 are skipped (they repeat cell 0; see
    :func:`cell_episodes`). Finished tasks are stored in ``results[(cell index, seed)]``
    as they come in, so a caller interrupted by Ctrl-C keeps them.

    Args:
        run: the loaded run (used when ``workers == 1``).
        cells: the cells; ``cells[0]`` the nominal one.
        seeds: evaluation seeds.
        episodes: episodes per (cell, seed).
        results: filled in place.
        backend: physics backend (None = the run's).
        workers: 1 = this process; N > 1 = a pool of N ``spawn`` processes, each calling
            ``loader(run_dir, checkpoint)`` once (``loader`` must be picklable, i.e. a
            module-level function).
        on_episodes: called with the number of episodes just finished (progress).
        ray: a connected :class:`visfore.core.ray_backend.RaySession`: run the tasks on
            ``workers`` Ray actors instead (each loads the run once; a dead actor is
            restarted and its tasks re-run); ``run_dir`` must be readable there.

    Raises:
        VisforeError: a worker process died (on Ray: more often than it was retried) or
            an episode did not end.
        KeyboardInterrupt: after stopping the workers; ``results`` holds the finished tasks.
    """
    tasks = [
        (cell.index, seed)
        for cell in cells
        if cell.index == 0 or not cell.is_nominal_model
        for seed in seeds
        if (cell.index, seed) not in results
    ]
    perturbations = {cell.index: cell.perturbation for cell in cells}
    if ray is not None:
        if run_dir is None:
            raise TypeError("run_cells(ray=...) needs run_dir (each Ray actor loads the run)")
        if tasks:
            _run_ray(tasks, perturbations, episodes, results, backend, min(workers, len(tasks)),
                     loader, str(Path(run_dir).resolve()), checkpoint, on_episodes)  # fmt: skip
        return
    if workers <= 1 or len(tasks) <= 1:
        previous = _single_thread_torch()
        try:
            for task in tasks:
                tick = (lambda: on_episodes(1)) if on_episodes else None
                results[task] = run_episodes(run, perturbations[task[0]], task[1], episodes, backend, tick)
        finally:
            if previous is not None:
                sys.modules["torch"].set_num_threads(previous)
        return
    _run_pool(tasks, perturbations, episodes, results, backend, min(workers, len(tasks)),
              loader, str(run_dir), checkpoint, on_episodes)  # fmt: skip


def _run_pool(
    tasks: list[tuple[int, int]],
    perturbations: Mapping[int, dict[str, float]],
    episodes: int,
    results: dict[tuple[int, int], list[dict[str, Any]]],
    backend: str | None,
    workers: int,
    loader: Callable[[Any, str], Any],
    run_dir: str,
    checkpoint: str,
    on_episodes: Callable[[int], None] | None,
) -> None:
    """Run ``tasks`` on ``workers`` spawned processes (:func:`visfore.core.workers.imap_processes`,
    at most ``2 * workers`` in flight); ``results`` filled as tasks finish."""
    items = [(task, perturbations[task[0]], episodes, backend) for task in tasks]
    pool = imap_processes(
        _worker_task, items, workers, initializer=_worker_init, initargs=(loader, run_dir, checkpoint), ordered=False
    )
    with contextlib.closing(pool):
        for (task, *_), records in pool:
            results[task] = records
            if on_episodes is not None:
                on_episodes(len(records))


def _ray_setup(loader: Callable[[Any, str], Any], run_dir: str, checkpoint: str) -> Any:
    run = loader(run_dir, checkpoint)
    _single_thread_torch()  # one CPU per actor: no oversubscription
    return run


def _ray_task(run: Any, item: tuple) -> list[dict[str, Any]]:
    (cell, seed), perturbation, episodes, backend = item
    return run_episodes(run, perturbation, seed, episodes, backend)


def _run_ray(
    tasks: list[tuple[int, int]],
    perturbations: Mapping[int, dict[str, float]],
    episodes: int,
    results: dict[tuple[int, int], list[dict[str, Any]]],
    backend: str | None,
    workers: int,
    loader: Callable[[Any, str], Any],
    run_dir: str,
    checkpoint: str,
    on_episodes: Callable[[int], None] | None,
) -> None:
    """Run ``tasks`` on ``workers`` Ray actors, at most ``2 * workers`` in flight;
    ``results`` filled in task order (Ctrl-C keeps the finished ones)."""
    items = (((cell, seed), perturbations[cell], episodes, backend) for cell, seed in tasks)
    setup_args = (loader, run_dir, checkpoint)
    with ray_backend.WorkerPool(_ray_setup, _ray_task, workers, setup_args) as pool:
        for item, records in pool.imap(items):
            results[item[0]] = records
            if on_episodes is not None:
                on_episodes(len(records))


def cell_episodes(
    cells: Sequence[Cell],
    seeds: Sequence[int],
    results: Mapping[tuple[int, int], list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[int]]:
    """Episode records of every finished cell, in (cell, seed, episode) order.

    A cell is finished when all its seeds are; a cell with every scale 1.0 takes the
    nominal cell's episodes (marked ``source_cell = 0``). Each record gets the cell's
    fields (:meth:`Cell.row`) and ``source_cell``.

    Returns:
        (episodes, indices of the finished cells).
    """
    episodes: list[dict[str, Any]] = []
    finished: list[int] = []
    for cell in cells:
        source = 0 if cell.is_nominal_model else cell.index
        if not all((source, s) in results for s in seeds):
            continue
        finished.append(cell.index)
        row = cell.row()
        for seed in seeds:
            for record in results[(source, seed)]:
                episodes.append({**row, **record, "source_cell": source})
    return episodes, finished


def _progress_bar(enabled: bool):
    return episode_progress(enabled, "episodes")


def _default_out(run_dir: Path) -> Path:
    base = run_dir / f"eval-{utc_timestamp()}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


# -- the pipeline ----------------------------------------------------------------------
@dataclass
class _Evaluation:
    """A validated evaluation, before anything runs or is written."""

    config: EvaluateConfig
    run_dir: Path
    run: Any
    grid: EvalGrid
    report_dir: Path
    loader: Callable[[Any, str], Any]
    workers: int | None


def _check_options(c: EvaluateConfig) -> EvaluateConfig:
    """Option values that need no run (``ray`` normalised). Raises VisforeError."""
    _check_int("--episodes", c.episodes, 1)
    if c.ray is not None:
        ray_backend.require_ray()  # one line, exit 2, before anything is loaded
        c = c.replace(ray=ray_backend.parse_address(c.ray))
        if c.workers is not None:
            _check_int("--workers", c.workers, 1, ray_backend.MAX_RAY_WORKERS)
    else:
        c = c.replace(workers=1 if c.workers is None else c.workers)
        _check_int("--workers", c.workers, 1, MAX_WORKERS)
    _check_int("--points", c.points, 2, MAX_POINTS)
    c = c.replace(seeds=parse_seeds(c.seeds))
    if c.perturb is not None and not c.fixed:
        c = c.replace(perturb=parse_range(c.perturb))  # fail on a bad range before loading the run
    if c.fixed:
        c = c.replace(fixed={k: _positive_scale(f"--set {k}", v) for k, v in c.fixed.items()})
    return c


def _prepare(config: EvaluateConfig, loader: Callable[[Any, str], Any] | None) -> _Evaluation:
    """Step 1: check the options, load the run, build the grid, check the env and the
    report directory. Nothing is written."""
    c = _check_options(config)
    loader = loader or load_run
    run_dir = Path(c.run_dir)
    if not run_dir.is_dir():
        raise VisforeError(f"run directory {run_dir} does not exist")
    run = loader(run_dir, c.checkpoint)
    eval_grid = build_grid(run.env_id, c.perturb, c.points, c.params, c.grid, c.fixed or None)
    check_env(run, c.backend)
    report_dir = Path(c.out) if c.out is not None else _default_out(run_dir)
    if report_dir.exists() and (not report_dir.is_dir() or any(report_dir.iterdir())):
        raise VisforeError(f"report directory {report_dir} already exists and is not empty; choose another --out")
    return _Evaluation(
        config=c, run_dir=run_dir, run=run, grid=eval_grid, report_dir=report_dir, loader=loader, workers=c.workers
    )


def _run(ev: _Evaluation) -> tuple[dict[tuple[int, int], list[dict[str, Any]]], float, bool, Any]:
    """Step 2: run every (cell, seed) task (here, on processes or on Ray) with a progress
    bar. Returns (results, seconds, interrupted, Ray record or None); Ctrl-C keeps the
    finished tasks."""
    c, cells = ev.config, ev.grid.cells
    to_run = [cell for cell in cells if cell.index == 0 or not cell.is_nominal_model]
    total = len(to_run) * len(c.seeds) * c.episodes
    results: dict[tuple[int, int], list[dict[str, Any]]] = {}
    interrupted = False
    ray_session = None
    if c.ray is not None:
        ray_session = ray_backend.connect(c.ray, num_cpus=ev.workers)
        ev.workers = ray_backend.resolve_workers(ray_session, ev.workers)
    assert ev.workers is not None  # 1 by default (_check_options); with --ray, the cluster's CPUs
    ray_record = ray_session.record() if ray_session is not None else None
    t0 = time.perf_counter()
    bar = _progress_bar(c.progress)
    try:
        with bar:
            task = bar.add_task(f"evaluate {ev.run.env_id}", total=total)
            run_cells(
                ev.run,
                cells,
                c.seeds,
                c.episodes,
                results,
                backend=c.backend,
                workers=ev.workers,
                loader=ev.loader,
                run_dir=ev.run_dir,
                checkpoint=c.checkpoint,
                on_episodes=lambda n: bar.update(task, advance=n),
                ray=ray_session,
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if ray_session is not None:
            ray_session.close()  # stops a Ray started for this command
    return results, time.perf_counter() - t0, interrupted, ray_record


def _meta(
    ev: _Evaluation,
    finished: Sequence[int],
    ran: list[dict[str, Any]],
    seconds: float,
    interrupted: bool,
    ray_record: Any,
) -> dict[str, Any]:
    """The report's ``meta``: what was evaluated, how, the command line and versions."""
    c, run, cells, eval_grid = ev.config, ev.run, ev.grid.cells, ev.grid
    run_config = dict(getattr(run, "config", None) or {})
    options = dict(run_config.get("options") or {})  # train-policy's resolved options
    env_kwargs = dict(getattr(run, "env_kwargs", None) or {})
    sweep = eval_grid.mode in ("sweep", "grid")
    perturb = parse_range(c.perturb) if sweep else None
    text: dict[str, str | None] = {"run_dir": str(ev.run_dir), "out": str(ev.report_dir), "workers": str(ev.workers)}
    if perturb is not None:  # a sweep
        text.update(perturb=f"{perturb[0]:g}-{perturb[1]:g}", fixed=None)
        text["grid" if eval_grid.mode == "grid" else "params"] = ",".join(eval_grid.params)
        text["params" if eval_grid.mode == "grid" else "grid"] = None
    else:
        text.update(perturb=None, points=None, params=None, grid=None)
    return {
        "run_dir": str(ev.run_dir),
        "run_name": ev.run_dir.resolve().name,
        "env_id": run.env_id,
        "env_kwargs": env_kwargs,
        "algo": getattr(run, "algo", None),
        "checkpoint": c.checkpoint,
        "backend": c.backend or env_kwargs.get("backend") or options.get("backend") or "mujoco",
        "training_timesteps": options.get("timesteps", run_config.get("timesteps")),
        "mode": eval_grid.mode,
        "params": list(eval_grid.params),
        "perturb_range": list(perturb) if perturb is not None else None,
        "points": c.points if sweep else None,
        "scales": list(eval_grid.scales),
        "fixed": eval_grid.fixed,
        "seeds": list(c.seeds),
        "episodes": c.episodes,
        "cells_total": len(cells),
        "cells_finished": len(finished),
        "cells_run": sum(1 for i in finished if i == 0 or not cells[i].is_nominal_model),
        "episodes_run": len(ran),
        "steps_run": int(sum(r["length"] for r in ran)),
        "workers": ev.workers,
        "ray": ray_record,
        "seconds": seconds,
        "interrupted": interrupted,
        "seeding": SEEDING_SCHEME,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(COMMAND, c, exclude=("progress",), text=text),
        "versions": package_versions(),
    }


def evaluate(
    config: EvaluateConfig | str | os.PathLike[str] | None = None,
    /,
    *,
    loader: Callable[[Any, str], Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate the policy of ``run_dir`` on perturbed models (or, with no perturbation
    option, on the nominal env only) and write a report.

    Args:
        config: the options (:class:`~visfore.rl.config.EvaluateConfig`); or give its
            fields as keywords instead: ``evaluate(run_dir=RUN, perturb=(0.5, 1.5),
            params=["torso.length"], seeds=(0, 1))`` (the command-line strings
            ``"0.5-1.5"``, ``"a,b"``, ``"0,1"`` are parsed too). Notably:

            - ``perturb``: (LO, HI) scale factors for sweeps (0 < LO < HI); ``points``
              scale factors per parameter, evenly spaced (2..101);
            - ``params``: keys (aliases allowed), ``["all"]``, or None for every
              ``<part>.length`` and ``<part>.width`` key; ``grid``: two keys, a 2-D sweep;
            - ``fixed``: {key: scale}, one fixed perturbation instead of a sweep;
            - none of ``perturb``, ``params``, ``grid``, ``fixed``: the nominal cell only
              (``mode`` ``nominal``; any env, also one that cannot be perturbed);
            - ``seeds``: evaluation seeds (see :data:`SEEDING_SCHEME`); ``episodes`` per
              seed and cell (>= 1);
            - ``workers``: 1 = this process; N > 1 = N ``spawn`` processes (scripts need
              the ``if __name__ == "__main__":`` guard). None = 1, or with ``ray`` one Ray
              worker per CPU of the cluster;
            - ``ray``: run the (cell, seed) tasks on Ray (the run directory must be readable
              by every node); results are identical, ``meta["ray"]`` records the cluster;
            - ``out``: report directory (default ``RUN/eval-<UTC time>``); must not exist
              or be empty.
        loader: ``loader(run_dir, checkpoint) -> PolicyRun`` (module-level, picklable);
            default :func:`load_run`.

    ``evaluate(RUN, perturb=..., ...)`` (the run directory first) works too.

    Returns:
        ``report_dir``, ``files`` {name: path}, ``summary`` (rows, see
        :func:`visfore.reports.robustness_report.summarize`; with ``success_rate``,
        ``success_ci_low`` / ``_high``, ``final_distance_mean`` ... for goal-reaching envs),
        ``most_damaging`` (row or None),
        ``episodes`` (records), ``mode``, ``interrupted`` (always False on return),
        ``seconds`` (wall time of the episodes, s), ``meta``.

    Raises:
        VisforeError: bad input (nothing is written; also ``ray`` without Ray installed,
            a bad address or no cluster there), or a worker died.
        KeyboardInterrupt: after writing the report of the finished cells (if any).
    """
    if config is not None and not isinstance(config, EvaluateConfig):
        options["run_dir"], config = config, None
    if config is None:
        options = {k: (dict(v) if k == "fixed" and v is not None else v) for k, v in options.items()}
        if options.get("fixed") is None:
            options.pop("fixed", None)
        config = EvaluateConfig.from_dict({k: str(v) if isinstance(v, os.PathLike) else v for k, v in options.items()})
    elif options:
        config = config.replace(**options)
    ev = _prepare(config, loader)
    results, seconds, interrupted, ray_record = _run(ev)
    cells = ev.grid.cells
    episode_records, finished = cell_episodes(cells, ev.config.seeds, results)
    if interrupted and not finished:
        raise KeyboardInterrupt("before any cell finished; no report written")
    ran = [r for records in results.values() for r in records]
    meta = _meta(ev, finished, ran, seconds, interrupted, ray_record)
    report = write_report(ev.report_dir, meta, [c.row() for c in cells], episode_records)
    if interrupted:
        # The CLI prints this note on its one "interrupted" line.
        raise KeyboardInterrupt(
            f"wrote the report of the {len(finished)} finished of {len(cells)} cells to {ev.report_dir}"
        )
    return {
        "report_dir": ev.report_dir,
        "files": report["files"],
        "summary": report["summary"],
        "most_damaging": report["most_damaging"],
        "episodes": episode_records,
        "mode": ev.grid.mode,
        "interrupted": interrupted,
        "seconds": seconds,
        "meta": meta,
    }


def print_summary(result: Mapping[str, Any], console: Any = None) -> None:
    """Print the summary as a rich table (param, scale, mean, median, std, min, max,
    normalised; for goal-reaching envs also success, its Wilson 95% CI and the final
    distance mean, std and median) and the report path. The std of a cell with one
    episode is undefined and shows as ``n/a``. A nominal-only evaluation names no most
    damaging perturbation."""
    console = console or stdout_console()
    meta = result["meta"]
    summary = result["summary"]
    table = Table(title=f"visfore evaluate: {meta['run_name']} on {meta['env_id']}")
    grid = meta["mode"] == "grid"
    goal = (any("success_rate" in r for r in summary), any("final_distance_mean" in r for r in summary))
    # a 2-D grid shows one scale column per parameter, headed by its name
    for name in meta["params"] if grid else ("param", "scale"):
        table.add_column(name, no_wrap=True)
    for name in ("mean", "median", "std", "min", "max", "normalised", *goal_header(*goal)):
        table.add_column(name, justify="right")
    for r in summary:
        if grid:
            ids = ["nominal", "1"] if r["kind"] == "nominal" else [fmt_scale(r["scale"]), fmt_scale(r["scale2"])]
        elif r["kind"] == "fixed" and len(perturbation_of(r)) > 1:
            ids = [cell_label(r), "-"]
        else:
            ids = [r["param"], fmt_scale(r["scale"])]
        style = "italic" if r["kind"] == "nominal" else None
        table.add_row(
            *ids, fmt(r["mean"]), fmt(r["median"]), std_text(r), fmt(r["min"]),
            fmt(r["max"]), fmt(r["normalized_mean"], 3), *goal_cells(r, *goal), style=style,
        )  # fmt: skip
    console.print(table)
    if meta["mode"] != "nominal":
        console.print(f"most damaging: {damage_text(summary)}", highlight=False)
    console.print(f"report: {result['report_dir']}/report.html", highlight=False, soft_wrap=True)


# -- the command -----------------------------------------------------------------------
