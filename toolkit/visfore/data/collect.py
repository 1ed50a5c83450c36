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

Integrity: every episode's sha256 checksums are written with it
(:func:`visfore.data.dataset.episode_digests`). Before continuing a dataset, collect
checks that every chunk is stored and that the last episode's chunks (every array's
last chunk, the one the next write rewrites) decode and match their checksums
(:func:`visfore.data.verify.verify_tail`); a damaged dataset is refused in one line,
untouched, pointing to ``visfore dataset verify``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from gymnasium import spaces

from visfore.core import ray_backend
from visfore.core.errors import VisforeError
from visfore.core.progress import episode_progress
from visfore.core.provenance import command_line, package_versions
from visfore.core.seeding import SEEDING_SCHEME, episode_seeds
from visfore.core.workers import imap_processes
from visfore.data import storage
from visfore.data.config import CollectConfig, parse_policy_kwargs
from visfore.data.dataset import DatasetWriter, open_dataset
from visfore.data.envs import make_env, parse_env_kwargs, pixel_source, resolve_env_id
from visfore.data.policies import make_policy
from visfore.data.verify import verify_tail

__all__ = ["EpisodeRunner", "ROW_CONVENTION", "SEEDING_SCHEME", "collect", "episode_seeds", "flush_rows"]

log = logging.getLogger(__name__)

ROW_CONVENTION = (
    "visfore-rows-v1: episode of T actions = T+1 rows; row t = (o_t, s_t, a_t, r_t, "
    "terminated_t, truncated_t) with a_t taken after o_t; last row = o_T with NaN "
    "action/reward and False flags"
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
        self.env_id = env_id
        self.size = int(size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.source = pixel_source(env_id)
        self.env = make_env(env_id, size=size, max_episode_steps=steps, env_kwargs=env_kwargs)
        # views= puts several cameras side by side: frames are size x (n_views * size)
        self.width = self.size * int(getattr(self.env.unwrapped, "n_views", 1))
        try:
            self.policy = make_policy(policy, self.env.action_space, **dict(policy_params or {}))
            obs_space = self.env.observation_space
            if self.source == "obs":
                if not (
                    isinstance(obs_space, spaces.Dict)
                    and isinstance(obs_space.spaces.get("state"), spaces.Box)
                    and isinstance(obs_space.spaces.get("pixels"), spaces.Box)
                ):
                    raise VisforeError(
                        f"{env_id} with obs_mode='state+pixels' does not return "
                        f"{{'state', 'pixels'}} observations: {obs_space}"
                    )
                pixels_space, state_space = obs_space["pixels"], obs_space["state"]
                assert isinstance(pixels_space, spaces.Box) and isinstance(state_space, spaces.Box)  # checked above
                pixels_shape = tuple(pixels_space.shape)
                if pixels_shape != self.frame_shape:
                    raise VisforeError(f"{env_id} renders frames of shape {pixels_shape}, expected {self.frame_shape}")
                self.state_dim = int(np.prod(state_space.shape))
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
                if shape != self.frame_shape:
                    raise VisforeError(f"{env_id} renders frames of shape {shape}, expected {self.frame_shape}")
        except BaseException:
            self.env.close()
            raise
        self.action_dim = int(self.env.action_space.shape[0])
        unwrapped = self.env.unwrapped
        self.reward_mode = getattr(unwrapped, "reward_mode", None)
        self.obs_mode = "state+pixels" if self.source == "obs" else "state+render"

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the frames: W = ``size`` x the env's number of views (``views=``)."""
        return (self.size, self.width, 3)

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


def _worker_run(index: int) -> dict[str, np.ndarray]:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    assert _WORKER_RUNNER is not None
    return _WORKER_RUNNER.run(index)


# -- provenance ------------------------------------------------------------------------
def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        raise VisforeError(f"--size {size} must be a multiple of 4 between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}")
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
    return episode_progress(enabled, "episodes {task.fields[fps]:>6.0f} frames/s")


# -- the pipeline ----------------------------------------------------------------------
@dataclass
class _Collection:
    """A validated collection, before anything is written."""

    config: CollectConfig
    env_id: str
    out: Any  #: a Path, or a URL string (s3://...)
    runner: EpisodeRunner
    expected: dict[str, Any]  #: the attrs a dataset to continue must have
    existing_attrs: dict[str, Any] | None
    done: int  #: complete episodes already in the dataset
    workers: int | None
    t_start: float

    @property
    def runner_config(self) -> dict[str, Any]:
        """The :class:`EpisodeRunner` arguments (sent to every worker)."""
        return _runner_config(self.config, self.env_id)


def _runner_config(c: CollectConfig, env_id: str) -> dict[str, Any]:
    """The :class:`EpisodeRunner` arguments of a collection (the driver's and every worker's)."""
    return dict(
        env_id=env_id,
        size=c.size,
        steps=c.steps,
        env_kwargs=c.env_kwargs,
        policy=c.policy,
        policy_params=c.policy_kwargs,
        seed=c.seed,
    )


def _prepare(config: CollectConfig) -> _Collection:
    """Step 1: check every option, resolve the env, open the dataset to continue, build
    the episode runner (which validates the env and its spaces). Nothing is written."""
    t_start = time.perf_counter()
    c = config
    workers = c.workers
    if c.ray is not None:
        ray_backend.require_ray()  # one line, exit 2, before anything is built
        c = c.replace(ray=ray_backend.parse_address(c.ray))
        max_workers = ray_backend.MAX_RAY_WORKERS
    else:
        workers = 1 if workers is None else workers
        max_workers = MAX_WORKERS
    _check_options(c.episodes, c.steps, c.size, c.seed, 1 if workers is None else workers, max_workers)
    env_id = resolve_env_id(c.env)
    out = storage.normalize(c.out)
    existing_attrs: dict[str, Any] | None = None
    done = 0
    if storage.exists(out):
        # VisforeError for a non-visfore path; DatasetDamaged for a missing chunk
        dataset = open_dataset(out)
        existing_attrs, done = dataset.attrs, dataset.num_episodes
        if done < c.episodes:
            # the chunks the next write rewrites decode and match their checksums
            verify_tail(dataset, check_chunks=False)  # open_dataset checked that all are stored
    else:
        storage.check_bucket(out)  # a missing bucket fails before the env is built
    runner = EpisodeRunner(**_runner_config(c, env_id))
    expected = {
        "env_id": env_id,
        "env_kwargs": c.env_kwargs,
        "frame_size": list(runner.frame_shape[:2]),
        "steps_per_episode": c.steps,
        "policy": runner.policy.describe(),
        "seed": int(c.seed),
        "obs_mode": runner.obs_mode,
        "seeding": SEEDING_SCHEME,
    }
    return _Collection(
        config=c,
        env_id=env_id,
        out=out,
        runner=runner,
        expected=expected,
        existing_attrs=existing_attrs,
        done=done,
        workers=workers,
        t_start=t_start,
    )


def _summary(col: _Collection) -> dict[str, Any]:
    return {
        "path": storage.display_name(col.out),
        "env_id": col.env_id,
        "episodes": col.done,
        "episodes_requested": col.config.episodes,
        "new_episodes": 0,
        "frames": 0,
        "seconds": 0.0,
        "frames_per_s": 0.0,
        "seconds_total": 0.0,
        "resumed_from": col.done,
        "already_complete": False,
    }


def _run_record(col: _Collection, versions: Mapping[str, Any], ray_session: Any) -> dict[str, Any]:
    """This call's entry of the dataset's ``collect_runs``: when, how many, the command
    line that reproduces it, the versions (and the Ray cluster)."""
    c = col.config
    cmd = command_line(
        "collect",
        c.replace(workers=col.workers or 1),
        exclude=("progress",),
        text={"out": storage.display_name(col.out)},
    )
    record = {
        "started": _utc_now(),
        "episodes_before": col.done,
        "episodes_requested": c.episodes,
        "workers": col.workers,
        "command": cmd,
        "versions": dict(versions),
    }
    if ray_session is not None:
        record["ray"] = ray_session.record()
    return record


def _continue_writer(col: _Collection, record: dict[str, Any]) -> Any:
    """Step 3 (continue): a writer on the existing dataset, its ``collect_runs`` extended."""
    assert col.existing_attrs is not None
    old = col.existing_attrs.get("versions") or {}
    versions = record["versions"]
    changed = [k for k, v in versions.items() if k in old and old[k] != v]
    if changed:
        log.warning(
            "package versions differ from the dataset's (%s); new episodes may not match a fresh run bit for bit",
            ", ".join(f"{k} {old[k]} -> {versions[k]}" for k in changed),
        )
    writer = DatasetWriter.open(col.out)
    writer.update_attrs(
        {
            "episodes_requested": col.config.episodes,
            "collect_runs": [*col.existing_attrs.get("collect_runs", []), record],
        }
    )
    return writer


def _create_writer(col: _Collection, record: dict[str, Any]) -> Any:
    """Step 3 (new): create the dataset with its attrs (the first write)."""
    runner, c = col.runner, col.config
    attrs = {
        **col.expected,
        "reward_mode": runner.reward_mode,
        "pixel_source": runner.source,
        "episodes_requested": c.episodes,
        "action_low": runner.policy.low.tolist(),
        "action_high": runner.policy.high.tolist(),
        "versions": record["versions"],
        "created": record["started"],
        "command": record["command"],
        "row_convention": ROW_CONVENTION,
        "collect_runs": [record],
    }
    try:
        if isinstance(col.out, Path):
            col.out.parent.mkdir(parents=True, exist_ok=True)
        return DatasetWriter.create(
            col.out,
            frame_shape=runner.frame_shape,
            state_dim=runner.state_dim,
            action_dim=runner.action_dim,
            attrs=attrs,
            chunk_frames=c.steps + 1,
        )
    except OSError as exc:
        raise VisforeError(f"cannot create {col.out}: {exc.strerror or exc}") from None


class _EpisodeSink:
    """Appends finished episodes to the writer (Ctrl-C held back during a write) and
    counts what it wrote; updates the progress bar."""

    def __init__(self, writer: Any, bar: Any, task: Any) -> None:
        self.writer, self.bar, self.task = writer, bar, task
        self.frames = 0
        self.episodes = 0
        self.t0 = time.perf_counter()

    def __call__(self, result: dict[str, np.ndarray]) -> None:
        with _defer_sigint():
            self.writer.append_episode(**result)
        self.frames += len(result["pixels"])
        self.episodes += 1
        self.bar.update(self.task, advance=1, fps=self.frames / max(time.perf_counter() - self.t0, 1e-9))


def _write_episodes(col: _Collection, writer: Any, ray_session: Any) -> _EpisodeSink:
    """Step 4: run the missing episodes (here, on a process pool or on Ray) and append
    them in episode order. The writer is closed (its buffer written) on the way out,
    also on Ctrl-C and errors.

    Episodes are appended in this thread: a writer thread was measured slower on this
    2-core machine under load (GIL hand-offs), and large batched writes (flush_rows)
    keep Zarr at about 10% of the time of collecting.
    """
    c = col.config
    writer.flush_rows = flush_rows(col.runner.frame_shape, c.steps)
    todo = range(col.done, c.episodes)
    bar = _progress_bar(c.progress)
    try:
        with bar:
            sink = _EpisodeSink(writer, bar, bar.add_task(col.env_id, total=c.episodes, completed=col.done, fps=0.0))
            n_workers = min(col.workers or 1, len(todo))
            if ray_session is not None:
                col.runner.close()
                _run_ray(col.runner_config, todo, n_workers, sink)
            elif n_workers <= 1:
                for index in todo:
                    sink(col.runner.run(index))
            else:
                col.runner.close()
                _run_pool(col.runner_config, todo, n_workers, sink)
    finally:
        with _defer_sigint():
            writer.close()  # writes the buffered episodes, also on Ctrl-C / errors
    return sink


def collect(config: CollectConfig | None = None, /, **options: Any) -> dict[str, Any]:
    """Collect ``episodes`` episodes of ``steps`` actions into the dataset at ``out``.

    If ``out`` exists and was made with the same options (env, env kwargs, size, steps,
    policy and its parameters, seed), collection continues from its last complete episode
    up to ``episodes``; the result is the same dataset an uninterrupted run gives.

    Args:
        config: the options (:class:`~visfore.data.config.CollectConfig`); or give its
            fields as keywords instead (``collect(env="reacher", episodes=4, ..., out=p)``;
            ``policy_params`` is the old name of ``policy_kwargs``). Notably:

            - ``episodes`` E > 0, ``steps`` T > 0 (each episode stores T + 1 frames),
              ``size`` a multiple of 4 in [8, 1024] (frame height = width, pixels);
            - ``out``: dataset directory (``*.zarr``), created with its parents when
              missing; or an fsspec URL (``s3://bucket/name.zarr``, whose bucket must
              exist; see :mod:`visfore.data.storage`);
            - ``workers``: 1 runs in this process, N > 1 a pool of N ``spawn`` processes
              that each run whole episodes (a script calling this with N > 1 needs the
              ``if __name__ == "__main__":`` guard). None = 1, or with ``ray`` one Ray
              worker per CPU of the cluster (capped at its CPUs);
            - ``ray``: run the episodes on Ray (:mod:`visfore.core.ray_backend`): one actor
              per worker holds an :class:`EpisodeRunner`, every task is one whole episode,
              this process writes them in episode order, so the dataset is the same bit for
              bit; the run's ``collect_runs`` entry records the cluster.

    Returns:
        Summary dict: ``path``, ``env_id``, ``episodes`` (complete episodes in the
        dataset now), ``episodes_requested``, ``new_episodes`` and ``frames`` (rows
        written by this call), ``seconds`` (collection wall time, s), ``frames_per_s``,
        ``seconds_total`` (including env and dataset setup), ``resumed_from`` (episodes
        already there), ``already_complete`` (bool).

    Raises:
        VisforeError: bad option values, unknown env, env kwargs the env rejects, ``out``
            exists but is not a visfore dataset, was collected with different options or
            is damaged (a missing chunk anywhere, or its last episode undecodable or not
            matching its checksums: :class:`~visfore.data.dataset.DatasetDamaged`)
            (nothing on disk is created or changed in all these cases); a worker process
            died (finished episodes are kept); ``ray`` without Ray installed, a bad
            address or no cluster there (nothing is written).
        KeyboardInterrupt: after keeping every finished episode.
    """
    if config is None:
        if "policy_params" in options:
            options["policy_kwargs"] = options.pop("policy_params")
        options = {k: v for k, v in options.items() if v is not None or k in ("workers", "ray")}
        config = CollectConfig.from_dict(options)
    elif options:
        config = config.replace(**options)
    config = config.replace(
        env_kwargs=parse_env_kwargs(config.env_kwargs), policy_kwargs=parse_policy_kwargs(config.policy_kwargs)
    )
    col = _prepare(config)
    ray_session = None
    try:
        if col.config.ray is not None and not (col.existing_attrs is not None and col.done >= config.episodes):
            if col.existing_attrs is not None:
                _check_resume(col.out, col.existing_attrs, col.expected)  # before starting Ray
            ray_session = ray_backend.connect(col.config.ray, num_cpus=col.workers)
            col.workers = ray_backend.resolve_workers(ray_session, col.workers)
        record = _run_record(col, package_versions(), ray_session)
        summary = _summary(col)
        if col.existing_attrs is not None:
            _check_resume(col.out, col.existing_attrs, col.expected)
            if col.done >= config.episodes:
                summary.update(already_complete=True, seconds_total=time.perf_counter() - col.t_start)
                return summary
            writer = _continue_writer(col, record)
        else:
            writer = _create_writer(col, record)
        try:
            sink = _write_episodes(col, writer, ray_session)
        except KeyboardInterrupt:
            # The CLI prints this note on its one "interrupted" line.
            raise KeyboardInterrupt(
                f"kept {writer.num_episodes} of {config.episodes} episodes in {col.out}; "
                "run the same command again to continue"
            ) from None
    finally:
        col.runner.close()
        if ray_session is not None:
            ray_session.close()  # stops a Ray started for this command
    seconds = time.perf_counter() - sink.t0
    summary.update(
        episodes=writer.num_episodes,
        new_episodes=sink.episodes,
        frames=sink.frames,
        seconds=seconds,
        frames_per_s=sink.frames / seconds if seconds > 0 else 0.0,
        seconds_total=time.perf_counter() - col.t_start,
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
    """Run episodes ``todo`` on ``workers`` spawned processes; ``write`` them in order
    (:func:`visfore.core.workers.imap_processes`: at most ``2 * workers`` in flight; on any
    exception, Ctrl-C included, the workers are stopped and their episodes dropped).

    Raises:
        VisforeError: a worker process died (crash, out of memory).
    """
    lost = "; finished episodes are kept, run the same command again to continue"
    results = imap_processes(_worker_run, todo, workers, initializer=_worker_init, initargs=(config,), lost=lost)
    with contextlib.closing(results):
        for _, result in results:
            write(result)


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
    lost = "; finished episodes are kept, run the same command again to continue"
    with ray_backend.WorkerPool(_ray_runner, _ray_episode, workers, (config,), lost=lost) as pool:
        for _, result in pool.imap(todo):
            write(result)
