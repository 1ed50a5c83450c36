"""``visfore collect``: run a policy in an env and write episodes to a visfore dataset.

Pipeline: resolve the env (:mod:`visfore.data.envs`), create one env per worker, run whole
episodes of exactly ``steps`` actions (fewer only when the env terminates early, recorded
as such), and append them in episode-index order through
:class:`visfore.data.dataset.DatasetWriter` (Zarr v3, lossless zstd, pixel chunks of
``steps + 1`` whole frames so an episode fills whole chunks).

Row convention (``ROW_CONVENTION``, see :mod:`visfore.data.dataset`): an episode of T actions
has T + 1 rows; row t holds o_t, s_t, the action a_t taken after o_t and the reward r_t
it earned; the last row holds o_T with NaN action and reward. A forward model given
o_0..o_t and a_0..a_t predicts row t + 1.

Seeding (``SEEDING_SCHEME``): episode ``i`` of a run with seed ``s`` uses
``ss = numpy.random.SeedSequence([s, i])``; the env is reset with
``seed=int(ss.generate_state(1, numpy.uint32)[0])`` and the policy draws from
``numpy.random.default_rng(ss.spawn(1)[0])``. An episode therefore depends only on
(s, i): the dataset is bit-identical whatever ``workers`` is, locally or on Ray
(``--ray``: one Ray actor per worker, one task per episode, this process the only
writer; see :mod:`visfore.core.ray_backend`), and however often the run was interrupted and
resumed.

Interruption: Ctrl-C or a crash keeps every finished episode (the writer's buffer is
written on the way out; Ctrl-C is held back while a write is under way so it never cuts
one in half); episodes in flight are dropped. Running the same command again checks
that the dataset was made with the same options and continues to the requested count.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Iterator, Mapping, Optional

import numpy as np
import typer

from visfore.cli.errors import handle_errors  # moves with the command into visfore.cli
from visfore.core.errors import VisforeError
from visfore.core.ray_backend import RayOption
from visfore.core.workers import stop_executor

ROW_CONVENTION = (
    "visfore-rows-v1: episode of T actions = T+1 rows; row t = (o_t, s_t, a_t, r_t, "
    "terminated_t, truncated_t) with a_t taken after o_t; last row = o_T with NaN "
    "action/reward and False flags"
)
SEEDING_SCHEME = (
    "visfore-seeding-v1: ss = numpy.random.SeedSequence([seed, episode_index]); "
    "env.reset(seed=int(ss.generate_state(1, numpy.uint32)[0])); "
    "policy rng = numpy.random.default_rng(ss.spawn(1)[0])"
)
#: Limits on the command's options.
MAX_FRAME_SIZE = 1024
MIN_FRAME_SIZE = 8
MAX_WORKERS = 64

#: attrs compared on resume, and the option each one comes from.
_RESUME_FIELDS = {
    "env_id": "--env",
    "env_kwargs": "--env-kwargs",
    "frame_size": "--size",
    "steps_per_episode": "--steps",
    "policy": "--policy",
    "seed": "--seed",
    "obs_mode": "obs_mode",
    "seeding": "seeding scheme",
}


# -- seeding ---------------------------------------------------------------------------
def episode_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """The env reset seed and the policy RNG of episode ``index`` (see ``SEEDING_SCHEME``).

    Returns:
        (reset_seed, rng): ``reset_seed`` an int in [0, 2**32) for ``env.reset(seed=...)``,
        ``rng`` a fresh ``numpy.random.Generator`` for the policy.
    """
    ss = np.random.SeedSequence([int(seed), int(index)])
    reset_seed = int(ss.generate_state(1, np.uint32)[0])
    return reset_seed, np.random.default_rng(ss.spawn(1)[0])


# -- running episodes ------------------------------------------------------------------
class EpisodeRunner:
    """One env and one policy producing whole episodes by index.

    Args:
        env_id: a registered Gymnasium id (already resolved).
        size: frame height and width in pixels.
        steps: actions per episode (T); the env is made with ``max_episode_steps=steps``.
        env_kwargs: extra keyword arguments for ``gymnasium.make``.
        policy: a name from :data:`visfore.data.policies.POLICY_NAMES`.
        policy_params: keyword arguments of the policy.
        seed: the run seed.

    Raises:
        VisforeError: the env cannot be created with these options, its observations are
            not ``{"state", "pixels"}`` of the right frame size (visfore envs) or it
            cannot render ``size`` x ``size`` frames (other envs), or its action space is
            not a bounded 1-D Box.
    """

    def __init__(
        self,
        env_id: str,
        size: int,
        steps: int,
        env_kwargs: Mapping[str, Any] | None,
        policy: str,
        policy_params: Mapping[str, Any] | None,
        seed: int,
    ) -> None:
        from gymnasium import spaces

        from visfore.data.envs import make_env, pixel_source
        from visfore.data.policies import make_policy

        self.env_id = env_id
        self.size = int(size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.source = pixel_source(env_id)
        self.env = make_env(env_id, size=size, max_episode_steps=steps, env_kwargs=env_kwargs)
        try:
            self.policy = make_policy(policy, self.env.action_space, **dict(policy_params or {}))
            obs_space = self.env.observation_space
            if self.source == "obs":
                if not (
                    isinstance(obs_space, spaces.Dict)
                    and "state" in obs_space.spaces
                    and "pixels" in obs_space.spaces
                ):
                    raise VisforeError(
                        f"{env_id} with obs_mode='state+pixels' does not return "
                        f"{{'state', 'pixels'}} observations: {obs_space}"
                    )
                pixels_shape = tuple(obs_space["pixels"].shape)
                if pixels_shape != (self.size, self.size, 3):
                    raise VisforeError(
                        f"{env_id} renders frames of shape {pixels_shape}, "
                        f"expected {(self.size, self.size, 3)}"
                    )
                self.state_dim = int(np.prod(obs_space["state"].shape))
            else:
                if not isinstance(obs_space, spaces.Box):
                    raise VisforeError(
                        f"{env_id} has {type(obs_space).__name__} observations; collect "
                        "needs a Box state for non-visfore envs"
                    )
                self.state_dim = int(np.prod(obs_space.shape))
                self.env.reset(seed=0)
                frame = self.env.render()
                shape = None if frame is None else tuple(np.shape(frame))
                if shape != (self.size, self.size, 3):
                    raise VisforeError(
                        f"{env_id} renders frames of shape {shape}, expected "
                        f"{(self.size, self.size, 3)}"
                    )
        except BaseException:
            self.env.close()
            raise
        self.action_dim = int(self.env.action_space.shape[0])
        unwrapped = self.env.unwrapped
        self.reward_mode = getattr(unwrapped, "reward_mode", None)
        self.obs_mode = "state+pixels" if self.source == "obs" else "state+render"

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the frames."""
        return (self.size, self.size, 3)

    def run(self, index: int) -> dict[str, np.ndarray]:
        """Run episode ``index`` from its own seeds (see :func:`episode_seeds`).

        Returns:
            ``pixels`` (T + 1, H, W, 3) uint8, ``state`` (T + 1, S) float32, ``action``
            (T, A) float32, ``reward`` (T,) float32, ``terminated`` / ``truncated``
            (T,) bool, with T = ``steps`` unless the env terminated earlier.
        """
        reset_seed, rng = episode_seeds(self.seed, index)
        steps, env, policy = self.steps, self.env, self.policy
        pixels = np.empty((steps + 1, *self.frame_shape), dtype=np.uint8)
        state = np.empty((steps + 1, self.state_dim), dtype=np.float32)
        action = np.empty((steps, self.action_dim), dtype=np.float32)
        reward = np.empty(steps, dtype=np.float32)
        terminated = np.zeros(steps, dtype=bool)
        truncated = np.zeros(steps, dtype=bool)
        obs, _ = env.reset(seed=reset_seed)
        policy.reset(rng)
        length = steps
        step, act = env.step, policy.act
        if self.source == "obs":
            pixels[0] = obs["pixels"]
            state[0] = obs["state"]
            for t in range(steps):
                a = act(obs)
                obs, r, term, trunc, _ = step(a)
                action[t] = a
                reward[t] = r
                pixels[t + 1] = obs["pixels"]
                state[t + 1] = obs["state"]
                if term or trunc:
                    terminated[t], truncated[t] = term, trunc
                    length = t + 1
                    break
        else:
            render = env.render
            pixels[0] = render()
            state[0] = np.ravel(obs)
            for t in range(steps):
                a = act(obs)
                obs, r, term, trunc, _ = step(a)
                action[t] = a
                reward[t] = r
                pixels[t + 1] = render()
                state[t + 1] = np.ravel(obs)
                if term or trunc:
                    terminated[t], truncated[t] = term, trunc
                    length = t + 1
                    break
        if length < steps:
            pixels, state = pixels[: length + 1], state[: length + 1]
            action, reward = action[:length], reward[:length]
            terminated, truncated = terminated[:length], truncated[:length]
        return {
            "pixels": pixels,
            "state": state,
            "action": action,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
        }

    def close(self) -> None:
        """Close the env (idempotent)."""
        if self.env is not None:
            self.env.close()
            self.env = None


# Worker processes (workers > 1): each holds one EpisodeRunner.
_WORKER_RUNNER: EpisodeRunner | None = None
_WORKER_ERROR: BaseException | None = None


def _worker_init(config: dict[str, Any]) -> None:
    # Ctrl-C reaches the whole process group: only the main process handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER_RUNNER, _WORKER_ERROR
    try:
        _WORKER_RUNNER = EpisodeRunner(**config)
    except Exception as exc:  # reported by the first task, with its own message
        _WORKER_ERROR = exc


def _worker_run(index: int) -> tuple[int, dict[str, np.ndarray]]:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    assert _WORKER_RUNNER is not None
    return index, _WORKER_RUNNER.run(index)


# -- provenance ------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    """Versions of the packages that determine the data (None when not found)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist, module in (
        ("visfore", "visfore"),
        ("visfore-envs", "visfore_envs"),
        ("gymnasium", "gymnasium"),
        ("mujoco", "mujoco"),
        ("numpy", "numpy"),
        ("zarr", "zarr"),
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(module)
            versions[dist] = getattr(mod, "__version__", None) if mod else None
    versions["python"] = ".".join(map(str, sys.version_info[:3]))
    return versions


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line(
    env: str,
    episodes: int,
    steps: int,
    size: int,
    out: str | os.PathLike[str],
    seed: int,
    policy: str,
    workers: int,
    env_kwargs: Mapping[str, Any],
    ray: str | None = None,
    policy_params: Mapping[str, Any] | None = None,
) -> str:
    """The ``visfore collect`` command line that reproduces a run (shell-quoted); ``ray``
    the ``--ray`` address, if any; ``policy_params`` the ``--policy-kwargs``."""
    from visfore.data.storage import display_name

    args = [
        "visfore", "collect", "--env", env, "--episodes", str(episodes), "--steps",
        str(steps), "--size", str(size), "--out", display_name(out), "--seed", str(seed),
        "--policy", policy, "--workers", str(workers),
    ]  # fmt: skip
    if env_kwargs:
        args += ["--env-kwargs", json.dumps(dict(env_kwargs), sort_keys=True)]
    if policy_params:
        args += ["--policy-kwargs", json.dumps(dict(policy_params), sort_keys=True)]
    if ray is not None:
        args += ["--ray", ray]
    return shlex.join(args)


#: Bytes of episodes the writer buffers before it writes them (see :func:`flush_rows`).
FLUSH_BYTES = 64 << 20


def flush_rows(frame_shape: tuple[int, int, int], steps: int) -> int:
    """Rows the writer buffers between writes: about :data:`FLUSH_BYTES` of frames.

    Each write pays a fixed cost per array (resizes, read-modify-write of the small
    arrays' open chunk), so fewer, larger writes are faster; the buffer holds at least
    one episode (``steps + 1`` rows) and at most 4096 rows. The writer also writes every
    ``flush_seconds`` (5 s), which bounds what a hard kill can lose.
    """
    row_bytes = int(np.prod(frame_shape))
    return max(steps + 1, min(4096, FLUSH_BYTES // row_bytes))


def _check_options(
    episodes: int, steps: int, size: int, seed: int, workers: int, max_workers: int = MAX_WORKERS
) -> None:
    def positive(name: str, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise VisforeError(f"{name} must be a positive integer, got {value!r}")

    positive("--episodes", episodes)
    positive("--steps", steps)
    positive("--size", size)
    positive("--workers", workers)
    if not MIN_FRAME_SIZE <= size <= MAX_FRAME_SIZE or size % 4:
        raise VisforeError(
            f"--size {size} must be a multiple of 4 between {MIN_FRAME_SIZE} and "
            f"{MAX_FRAME_SIZE}"
        )
    if workers > max_workers:
        raise VisforeError(f"--workers {workers} is more than {max_workers}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VisforeError(f"--seed must be a non-negative integer, got {seed!r}")


def _check_resume(path: Path | str, attrs: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise VisforeError naming the first option that differs from the dataset's."""
    for key, option in _RESUME_FIELDS.items():
        have = attrs.get(key)
        want = expected[key]
        if json.dumps(have, sort_keys=True) != json.dumps(want, sort_keys=True):
            raise VisforeError(
                f"{path} was collected with a different {option} ({key}: "
                f"{json.dumps(have, sort_keys=True)} in the dataset, "
                f"{json.dumps(want, sort_keys=True)} requested); nothing was changed: use "
                "the original options to continue it or another --out"
            )


def _progress_bar(enabled: bool):
    from visfore.core.progress import episode_progress

    return episode_progress(enabled, "episodes {task.fields[fps]:>6.0f} frames/s")


# -- the pipeline ----------------------------------------------------------------------
def collect(
    env: str,
    episodes: int,
    steps: int,
    size: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    policy: str = "smooth",
    workers: int | None = None,
    env_kwargs: Mapping[str, Any] | str | list[str] | None = None,
    progress: bool = True,
    policy_params: Mapping[str, Any] | str | list[str] | None = None,
    ray: str | None = None,
) -> dict[str, Any]:
    """Collect ``episodes`` episodes of ``steps`` actions into the dataset at ``out``.

    If ``out`` exists and was made with the same options (env, env kwargs, size, steps,
    policy and its parameters, seed), collection continues from its last complete episode
    up to ``episodes``; the result is the same dataset an uninterrupted run gives.

    Args:
        env: short name (``reacher``, ``reacher3d``) or registered Gymnasium id.
        episodes: total episodes the dataset should hold (E), > 0.
        steps: actions per episode (T), > 0; each episode stores T + 1 frames.
        size: frame height = width in pixels, a multiple of 4 in [8, 1024].
        out: dataset directory (``*.zarr``), created with its parents when missing; or an
            fsspec URL (``s3://bucket/name.zarr``, whose bucket must exist; ``file://`` URLs
            are local paths; see :mod:`visfore.data.storage` for credentials and endpoints).
        seed: run seed, >= 0 (see ``SEEDING_SCHEME``).
        policy: ``random`` or ``smooth`` (:mod:`visfore.data.policies`).
        workers: env processes; 1 runs in this process, N > 1 uses a pool of N
            ``spawn`` processes that each run whole episodes (a script calling this
            with N > 1 needs the ``if __name__ == "__main__":`` guard, as any
            ``multiprocessing`` spawn user does). None = 1, or with ``ray`` one Ray
            worker per CPU of the cluster (capped at its CPUs).
        env_kwargs: extra ``gymnasium.make`` arguments: a dict, or ``--env-kwargs``
            strings (:func:`visfore.data.envs.parse_env_kwargs`).
        progress: show a rich progress bar (episodes, frames/s) and messages on stderr.
        policy_params: policy parameters (``theta``, ``sigma``, ``scale``, ``min_scale``
            for ``smooth``; :mod:`visfore.data.policies`): a dict, or ``--policy-kwargs``
            strings (``key=value`` pairs or a JSON object).
        ray: run the episodes on Ray (:mod:`visfore.core.ray_backend`): ``local``, ``auto``,
            ``HOST:PORT`` or ``ray://HOST:PORT``. One Ray actor per worker holds an
            :class:`EpisodeRunner`; every task is one whole episode; this process writes
            them in episode order as for a local run, so the dataset is the same bit for
            bit. An actor whose process dies is restarted and its episodes re-run. The
            run's ``collect_runs`` entry records ``ray`` (address, nodes, CPUs, GPUs).

    Returns:
        Summary dict: ``path``, ``env_id``, ``episodes`` (complete episodes in the
        dataset now), ``episodes_requested``, ``new_episodes`` and ``frames`` (rows
        written by this call), ``seconds`` (collection wall time, s), ``frames_per_s``,
        ``seconds_total`` (including env and dataset setup), ``resumed_from`` (episodes
        already there), ``already_complete`` (bool).

    Raises:
        VisforeError: bad option values, unknown env, env kwargs the env rejects, ``out``
            exists but is not a visfore dataset or was collected with different options
            (nothing on disk is created or changed in all these cases); a worker process
            died (finished episodes are kept); ``ray`` without Ray installed, a bad
            address or no cluster there (nothing is written).
        KeyboardInterrupt: after keeping every finished episode.
    """
    from visfore.data import storage
    from visfore.data.dataset import DatasetWriter, open_dataset
    from visfore.data.envs import parse_env_kwargs, parse_kwargs, resolve_env_id
    from visfore.data.policies import POLICY_NAMES

    t_start = time.perf_counter()
    if ray is not None:
        from visfore.core import ray_backend

        ray_backend.require_ray()  # one line, exit 2, before anything is built
        ray = ray_backend.parse_address(ray)
        max_workers = ray_backend.MAX_RAY_WORKERS
    else:
        workers = 1 if workers is None else workers
        max_workers = MAX_WORKERS
    _check_options(episodes, steps, size, seed, 1 if workers is None else workers, max_workers)
    if policy not in POLICY_NAMES:
        raise VisforeError(f"unknown --policy {policy!r}; valid: {', '.join(POLICY_NAMES)}")
    env_id = resolve_env_id(env)
    kwargs = parse_env_kwargs(env_kwargs)
    policy_params = parse_kwargs(policy_params, "--policy-kwargs")
    out = storage.normalize(out)  # a Path, or a URL string (s3://...)
    existing_attrs: dict[str, Any] | None = None
    done = 0
    if storage.exists(out):
        dataset = open_dataset(out)  # raises VisforeError for a non-visfore path
        existing_attrs, done = dataset.attrs, dataset.num_episodes
    else:
        storage.check_bucket(out)  # a missing bucket fails before the env is built

    config = dict(
        env_id=env_id, size=size, steps=steps, env_kwargs=kwargs, policy=policy,
        policy_params=policy_params, seed=seed,
    )  # fmt: skip
    runner = EpisodeRunner(**config)  # validates env, kwargs and spaces; no frame yet
    ray_session = None
    try:
        expected = {
            "env_id": env_id,
            "env_kwargs": kwargs,
            "frame_size": [size, size],
            "steps_per_episode": steps,
            "policy": runner.policy.describe(),
            "seed": int(seed),
            "obs_mode": runner.obs_mode,
            "seeding": SEEDING_SCHEME,
        }
        if ray is not None and not (existing_attrs is not None and done >= episodes):
            if existing_attrs is not None:
                _check_resume(out, existing_attrs, expected)  # before starting Ray
            ray_session = ray_backend.connect(ray, num_cpus=workers)
            workers = ray_backend.resolve_workers(ray_session, workers, note=progress)
        versions = package_versions()
        cmd = command_line(
            env, episodes, steps, size, out, seed, policy, workers or 1, kwargs, ray=ray,
            policy_params=policy_params,
        )
        run_record = {
            "started": _utc_now(),
            "episodes_before": done,
            "episodes_requested": episodes,
            "workers": workers,
            "command": cmd,
            "versions": versions,
        }
        if ray_session is not None:
            run_record["ray"] = ray_session.record()
        summary: dict[str, Any] = {
            "path": storage.display_name(out),
            "env_id": env_id,
            "episodes": done,
            "episodes_requested": episodes,
            "new_episodes": 0,
            "frames": 0,
            "seconds": 0.0,
            "frames_per_s": 0.0,
            "seconds_total": 0.0,
            "resumed_from": done,
            "already_complete": False,
        }
        if existing_attrs is not None:
            _check_resume(out, existing_attrs, expected)
            if done >= episodes:
                summary["already_complete"] = True
                summary["seconds_total"] = time.perf_counter() - t_start
                return summary
            old = existing_attrs.get("versions") or {}
            changed = [k for k, v in versions.items() if k in old and old[k] != v]
            if changed and progress:
                print(
                    "warning: package versions differ from the dataset's ("
                    + ", ".join(f"{k} {old[k]} -> {versions[k]}" for k in changed)
                    + "); new episodes may not match a fresh run bit for bit",
                    file=sys.stderr,
                )
            writer = DatasetWriter.open(out)
            writer.update_attrs(
                {
                    "episodes_requested": episodes,
                    "collect_runs": [*existing_attrs.get("collect_runs", []), run_record],
                }
            )
        else:
            attrs = {
                **expected,
                "reward_mode": runner.reward_mode,
                "pixel_source": runner.source,
                "episodes_requested": episodes,
                "action_low": runner.policy.low.tolist(),
                "action_high": runner.policy.high.tolist(),
                "versions": versions,
                "created": run_record["started"],
                "command": cmd,
                "row_convention": ROW_CONVENTION,
                "collect_runs": [run_record],
            }
            try:
                if isinstance(out, Path):
                    out.parent.mkdir(parents=True, exist_ok=True)
                writer = DatasetWriter.create(
                    out,
                    frame_shape=runner.frame_shape,
                    state_dim=runner.state_dim,
                    action_dim=runner.action_dim,
                    attrs=attrs,
                    chunk_frames=steps + 1,
                )
            except OSError as exc:
                raise VisforeError(f"cannot create {out}: {exc.strerror or exc}") from None

        writer.flush_rows = flush_rows(runner.frame_shape, steps)
        todo = range(done, episodes)
        frames = 0
        t0 = time.perf_counter()
        bar = _progress_bar(progress)
        try:
            # Episodes are appended in this thread: a writer thread was measured slower on
            # this 2-core machine under load (GIL hand-offs), and large batched writes
            # (flush_rows) keep Zarr at about 10% of the time of collecting. Ctrl-C is
            # held back while the writer writes, so a write is never cut in half.
            try:
                with bar:
                    task = bar.add_task(env_id, total=episodes, completed=done, fps=0.0)

                    def write(result: dict[str, np.ndarray]) -> None:
                        nonlocal frames
                        with _defer_sigint():
                            writer.append_episode(**result)
                        frames += len(result["pixels"])
                        summary["new_episodes"] += 1
                        bar.update(
                            task, advance=1, fps=frames / max(time.perf_counter() - t0, 1e-9)
                        )

                    n_workers = min(workers or 1, len(todo))
                    if ray_session is not None:
                        runner.close()
                        _run_ray(config, todo, n_workers, write)
                    elif n_workers <= 1:
                        for index in todo:
                            write(runner.run(index))
                    else:
                        runner.close()
                        _run_pool(config, todo, n_workers, write)
            finally:
                with _defer_sigint():
                    writer.close()  # writes the buffered episodes, also on Ctrl-C / errors
        except KeyboardInterrupt:
            if progress:
                print(
                    f"interrupted: kept {writer.num_episodes} of {episodes} episodes in "
                    f"{out}; run the same command again to continue",
                    file=sys.stderr,
                )
            raise
    finally:
        runner.close()
        if ray_session is not None:
            ray_session.close()  # stops a Ray started for this command
    seconds = time.perf_counter() - t0
    summary.update(
        episodes=writer.num_episodes,
        frames=frames,
        seconds=seconds,
        frames_per_s=frames / seconds if seconds > 0 else 0.0,
        seconds_total=time.perf_counter() - t_start,
    )
    return summary


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) inside the block; deliver it (KeyboardInterrupt) after.

    Used around dataset writes: :meth:`DatasetWriter.flush` commits an episode batch in
    several steps, and an interrupt between them must not leave it half done. Outside
    the main thread (where Python cannot install handlers) the block runs unprotected.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # not the main thread, or SIGINT ignored / default: nothing to defer
        return
    received: list[Any] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        previous(*received[0])  # Python's default handler raises KeyboardInterrupt


def _run_pool(config: dict[str, Any], todo: range, workers: int, write: Any) -> None:
    """Run episodes ``todo`` on ``workers`` spawned processes; ``write`` them in order.

    At most ``2 * workers`` episodes are in flight, so memory stays bounded even when
    writing is slower than collecting. On any exception (Ctrl-C included) the workers
    are stopped and their episodes in flight dropped.

    Raises:
        VisforeError: a worker process died (crash, out of memory).
    """
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init,
        initargs=(config,),
    )
    pending: deque = deque()
    try:
        indices = iter(todo)
        for index in itertools.islice(indices, 2 * workers):
            pending.append(executor.submit(_worker_run, index))
        while pending:
            _, result = pending.popleft().result()
            write(result)
            nxt = next(indices, None)
            if nxt is not None:
                pending.append(executor.submit(_worker_run, nxt))
    except BrokenProcessPool as exc:
        stop_executor(executor, pending)
        raise VisforeError(
            f"a collection worker process died ({exc}); finished episodes are kept, run "
            "the same command again to continue"
        ) from None
    except BaseException:
        stop_executor(executor, pending)
        raise
    executor.shutdown(wait=True)


def _ray_runner(config: dict[str, Any]) -> EpisodeRunner:
    return EpisodeRunner(**config)


def _ray_episode(runner: EpisodeRunner, index: int) -> dict[str, np.ndarray]:
    return runner.run(index)


def _run_ray(config: dict[str, Any], todo: range, workers: int, write: Any) -> None:
    """Run episodes ``todo`` on ``workers`` Ray actors; ``write`` them in episode order.

    Each actor holds one :class:`EpisodeRunner` (built once); one task is one whole
    episode, a pure function of (seed, index). At most ``2 * workers`` episodes are in
    flight. An actor that dies is restarted and its episodes re-run
    (:data:`visfore.core.ray_backend.DEFAULT_RETRIES` times); an episode is written only once
    it has come back whole. On any exception (Ctrl-C included) the actors are killed
    and their episodes in flight dropped.

    Raises:
        VisforeError: a worker was lost more often than it was retried, or could not
            build its env (finished episodes are kept).
    """
    from visfore.core.ray_backend import WorkerPool

    lost = "; finished episodes are kept, run the same command again to continue"
    with WorkerPool(_ray_runner, _ray_episode, workers, (config,), lost=lost) as pool:
        for _, result in pool.imap(todo):
            write(result)


# -- the command -----------------------------------------------------------------------
@handle_errors
def collect_command(
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o",
            help="Dataset directory to create or continue (*.zarr), or a URL (s3://bucket/name.zarr).",
        ),
    ],
    env: Annotated[
        str, typer.Option(help="Short name (reacher, reacher3d) or registered Gymnasium id.")
    ] = "reacher",
    episodes: Annotated[int, typer.Option(help="Episodes the dataset should hold.")] = 200,
    steps: Annotated[int, typer.Option(help="Actions per episode (T); T+1 frames each.")] = 50,
    size: Annotated[int, typer.Option(help="Frame height and width in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Run seed (>= 0); episode i is seeded from (seed, i) alone.")] = 0,
    policy: Annotated[
        str, typer.Option(help="Collection policy: random (uniform) or smooth (OU process).")
    ] = "smooth",
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="Env processes running in parallel (default 1); with --ray, Ray workers "
            "(default: one per CPU of the cluster).",
        ),
    ] = None,
    env_kwargs: Annotated[
        Optional[list[str]],
        typer.Option(
            "--env-kwargs",
            help="Extra env arguments: a JSON object or key=value[,key=value]; repeatable.",
        ),
    ] = None,
    policy_kwargs: Annotated[
        Optional[list[str]],
        typer.Option(
            "--policy-kwargs",
            help="Policy parameters: a JSON object or key=value[,key=value]; repeatable. smooth: "
            "theta, sigma, scale (default 0.3, 0.3, 0.3) and min_scale (per-episode amplitude "
            "log-uniform in [min_scale, scale]).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ray: RayOption = None,
) -> None:
    """Collect episodes from an env into a Zarr dataset; rerun the same command to resume."""
    summary = collect(
        env=env,
        episodes=episodes,
        steps=steps,
        size=size,
        out=out,
        seed=seed,
        policy=policy,
        workers=workers,
        env_kwargs=env_kwargs,
        progress=not quiet,
        policy_params=policy_kwargs,
        ray=ray,
    )
    if summary["already_complete"]:
        typer.echo(
            f"{summary['path']} already holds {summary['episodes']} episodes "
            f"(requested {summary['episodes_requested']}); nothing to do"
        )
        return
    resumed = (
        f" (resumed after {summary['resumed_from']})" if summary["resumed_from"] else ""
    )
    typer.echo(
        f"collected {summary['new_episodes']} episodes{resumed}, {summary['frames']} frames "
        f"in {summary['seconds']:.1f} s ({summary['frames_per_s']:.0f} frames/s) -> "
        f"{summary['path']} ({summary['episodes']} episodes)"
    )
