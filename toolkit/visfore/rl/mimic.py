"""``visfore mimic``: see a pose, then do it.

A follower robot copies, as in a mirror, the pose of a leader robot it only *sees*
(``MimicReacher-v0`` / ``MimicHumanoid-v0``, :mod:`visfore_envs.mimic`):

1. each step the leader is rendered with the mimic env's ``camera="leader"`` view (the
   leader framed exactly as the single-robot env frames its robot) at the translator's
   frame size; a translator trained on multi-view frames (its dataset's env kwargs hold
   ``views``, e.g. ``("default", "side")``) gets the leader seen from each of those views,
   side by side, each ``W / len(views)`` pixels wide (:func:`leader_frame_options`);
2. a ``visfore train-translator`` run (:mod:`visfore.perception.translator_run`) reads the leader's
   key points from that frame, in the leader's own frame of reference (the one of the
   single-robot env it was trained on);
3. they are turned into world coordinates (the leader is the robot turned 180 degrees
   about z and moved by ``D`` along x) and mirrored into the follower's target key points
   (:meth:`visfore_envs.mimic.MimicEnv.mirror_keypoints`);
4. a joint-space reaching policy trained with ``visfore train-policy`` on the
   single-robot target task (``ReacherPlane-v0`` / ``TargetHumanoid-v0``, ``state``
   observations ``[proprio (P), k - k* (G), k* (G)]``) gets the follower's state with
   that target substituted for ``k*`` (:func:`policy_observation`) and acts.

Two references run on the same episode seeds (the leader's poses come from the env's
seeded generator, so every mode sees the same leader): ``true-pose`` (the same policy
given the true mirrored leader pose, i.e. the mimic env's own target) and ``random``
(uniform random actions). Reported per mode: the success rate (``is_success`` of the last
step: final key-point distance below the env's threshold, 0.02 m for the reacher), the
final key-point distance (mean, median) and the mean distance over the episode; for the
translated mode also the translator's key-point error against the true mirrored target.

``--image pose.png`` reads one image of the robot (framed as the single-robot env's
default view, or its views side by side for a multi-view translator; the translator's
frame size), mirrors the pose it shows, and lets the
follower execute it in the single-robot env (:func:`execute_image`); the picture it
writes is :func:`image_panels` (leader image | translated pose | follower, labelled).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
from rich.table import Table

from visfore.core import runs
from visfore.core.errors import VisforeError
from visfore.core.progress import episode_progress
from visfore.perception.translator_run import load_translator_run
from visfore.reports.panels import compose_panels, readable_scale
from visfore.rl import policy_run
from visfore.rl.config import MIMIC_OUT_FORMATS
from visfore.rl.train_policy import make_single_env
from visfore_envs.core.mujoco_env import parse_views
from visfore_envs.core.rewards import wrap_hinge_differences
from visfore_envs.mimic import MimicHumanoidEnv, MimicReacherEnv

__all__ = [
    "MIMIC_SINGLE_ENV",
    "MODES",
    "MimicEpisode",
    "execute_image",
    "image_panels",
    "leader_frame_options",
    "leader_keypoints_to_target",
    "policy_observation",
    "run_mimic",
]

#: Mimic env id -> the single-robot env its follower is (the policy's and translator's env).
MIMIC_SINGLE_ENV: dict[str, str] = {
    "MimicReacher-v0": "ReacherPlane-v0",
    "MimicHumanoid-v0": "TargetHumanoid-v0",
}
#: The three ways the follower is driven, in report order.
MODES = ("translated", "true-pose", "random")
LEADERS = ("hold", "trajectory")
OUT_FORMATS = MIMIC_OUT_FORMATS


# ---------------------------------------------------------------------------------------
# observation and target
# ---------------------------------------------------------------------------------------
def joint_difference(env: Any, target_qpos: Any) -> np.ndarray:
    """``q* - q`` of the env's robot (nq,) float64, hinge differences wrapped into
    [-pi, pi) as the env wraps them: the tail of a ``joint_targets=True`` state
    (:class:`visfore_envs.core.KeypointTargetEnv`), for a target of our choosing.

    Args:
        env: a key-point env (wrapped or not); ``q`` is its current configuration.
        target_qpos: (nq,) target configuration (rad).
    """
    base = env.unwrapped
    diff = np.asarray(target_qpos, dtype=np.float64) - base.data.qpos
    return wrap_hinge_differences(diff, base.angle_mask)


def policy_observation(mimic_obs: Any, target_keypoints: Any, goal_dim: int, joint_diff: Any = None) -> np.ndarray:
    """The single-robot env's ``state`` observation of the follower, for a given target.

    Args:
        mimic_obs: (2P + 2G,) float64, a mimic env ``state`` observation ``[follower
            proprio (P), leader proprio (P), k - k* (G), k* (G)]``
            (:class:`visfore_envs.mimic.MimicEnv`).
        target_keypoints: (G,) the follower's target key points ``k*'`` (metres, world).
        goal_dim: G.
        joint_diff: None, or (nq,) ``q*' - q`` (:func:`joint_difference`) for a policy
            trained with ``joint_targets=True``; it is appended.

    Returns:
        (P + 2G,) float64 ``[follower proprio, k - k*', k*']`` (plus ``q*' - q`` (nq,)
        when ``joint_diff`` is given), the layout of
        ``ReacherPlane-v0`` / ``TargetHumanoid-v0`` ``state`` observations
        (:class:`visfore_envs.core.KeypointTargetEnv`), with ``k`` the follower's key points
        recovered as ``(k - k*) + k*``. With ``k*' = k*`` it is exactly the single env's
        observation of the same follower state and target (tested).

    Raises:
        VisforeError: the shapes do not fit that layout.
    """
    obs = np.asarray(mimic_obs, dtype=np.float64)
    target = np.asarray(target_keypoints, dtype=np.float64)
    g = int(goal_dim)
    rest = obs.shape[-1] - 2 * g if obs.ndim == 1 else -1
    if rest <= 0 or rest % 2 or target.shape != (g,):
        raise VisforeError(
            f"mimic observation {obs.shape} / target {target.shape} do not fit "
            f"[proprio (P), leader proprio (P), k - k* ({g}), k* ({g})] and a ({g},) target"
        )
    p = rest // 2
    k = obs[2 * p : 2 * p + g] + obs[2 * p + g :]
    if np.array_equal(target, obs[2 * p + g :]):
        diff = obs[2 * p : 2 * p + g]  # bit-exact with the env's own k - k*
    else:
        diff = k - target
    parts = [obs[:p], diff, target]
    if joint_diff is not None:
        parts.append(np.asarray(joint_diff, dtype=np.float64))
    return np.concatenate(parts)


def leader_keypoints_to_target(env: Any, leader_local: Any) -> np.ndarray:
    """The follower's target key points from key points read in the leader's view.

    Args:
        env: a mimic env (wrapped or not).
        leader_local: (..., G) key points of the leader in its own frame (what a translator
            trained on the single-robot env predicts from a ``camera="leader"`` frame),
            metres, ``keypoint_axes`` per point.

    Returns:
        (..., G) float64 target key points: the leader's pose turned and moved into the
        world (180 degrees about z, ``leader_distance`` along x), then mirrored
        (:meth:`~visfore_envs.mimic.MimicEnv.mirror_keypoints`).
    """
    base = env.unwrapped
    kp = np.asarray(leader_local, dtype=np.float64)
    axes = list(base.keypoint_axes)
    pts = kp.reshape(kp.shape[:-1] + (base.n_keypoints, len(axes)))
    full = np.zeros(pts.shape[:-1] + (3,))
    full[..., axes] = pts
    world = base._to_world(full)[..., axes].reshape(kp.shape)
    return base.mirror_keypoints(world)


# ---------------------------------------------------------------------------------------
# loading and checks
# ---------------------------------------------------------------------------------------
def _load(policy_dir: Path, translator_dir: Path, env_id: str, device: str, checkpoint: str):
    if env_id not in MIMIC_SINGLE_ENV:
        raise VisforeError(f"unknown mimic env {env_id!r}; valid: {', '.join(MIMIC_SINGLE_ENV)}")
    single = MIMIC_SINGLE_ENV[env_id]
    for flag, path in (("--policy", policy_dir), ("--translator", translator_dir)):
        if not Path(path).is_dir():
            raise VisforeError(f"{flag} {path} is not a directory")
    policy = policy_run.load_policy_run(policy_dir, checkpoint, device="cpu" if device == "auto" else device)
    if policy.env_id != single:
        raise VisforeError(
            f"--policy {policy_dir} was trained on {policy.env_id}; {env_id} needs a policy trained "
            f"on {single} (visfore train-policy --env {single} --algo ppo)"
        )
    if policy.env_kwargs.get("obs_mode", "state") != "state":
        raise VisforeError(
            f"--policy {policy_dir} takes {policy.env_kwargs['obs_mode']} observations; mimic needs a "
            "state policy (--obs-mode state)"
        )
    translator = load_translator_run(translator_dir, device)
    if translator.env_id != single:
        raise VisforeError(
            f"--translator {translator_dir} was trained on {translator.env_id} frames; {env_id} needs "
            f"one trained on {single} frames"
        )
    return policy, translator


def leader_frame_options(frame_size: tuple[int, int], env_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The env options that render frames of a translator's layout.

    Args:
        frame_size: (H, W) of the translator's frames (pixels).
        env_kwargs: the env kwargs of its training data (``TranslatorRun.env_kwargs``);
            only ``views`` is used: None/absent (one view), a list of view names or a
            ``"+"``-joined string (``"default+side"``).

    Returns:
        ``{"width": W // n, "height": H}`` plus ``"views": (names...)`` when the data had
        views (n = number of views; 1 without): frames of that env are (H, W, 3).

    Raises:
        VisforeError: ``views`` is not a valid list of names, or W is not divisible by n.
    """
    h, w = (int(v) for v in frame_size)
    raw = (env_kwargs or {}).get("views")
    try:
        views = parse_views(raw)
    except ValueError as exc:
        raise VisforeError(f"the translator's env kwargs: {exc}") from None
    if views is None:
        return {"width": w, "height": h}
    n = len(views)
    if w % n:
        raise VisforeError(f"the translator's frames are {w} pixels wide, not divisible by its {n} views {raw!r}")
    return {"width": w // n, "height": h, "views": views}


def _make_mimic_env(
    env_id: str,
    leader: str,
    frame_size: tuple[int, int],
    hold_steps: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """The mimic env rendering the leader (``camera="leader"``) in the layout of a
    translator's frames (:func:`leader_frame_options` of ``frame_size`` and the
    translator's ``env_kwargs``): ``env.render()`` is (H, W, 3) uint8."""
    if leader not in LEADERS:
        raise VisforeError(f"--leader {leader!r} is not one of {', '.join(LEADERS)}")
    kwargs: dict[str, Any] = leader_frame_options(frame_size, env_kwargs)
    if hold_steps is not None:
        if leader != "hold":
            raise VisforeError(f"--hold-steps only applies to --leader hold, not --leader {leader}")
        if int(hold_steps) < 1:
            raise VisforeError(f"--hold-steps must be >= 1, got {hold_steps}")
        kwargs["hold_steps"] = int(hold_steps)
    if leader == "hold":
        # End every episode on the last step of a held pose (not on the first step of a
        # new move): MimicReacher-v0's 100 steps become 99 = 4 x 25 - 1.
        spec = gym.spec(env_id)
        hold = (
            hold_steps
            or {"MimicReacher-v0": MimicReacherEnv, "MimicHumanoid-v0": MimicHumanoidEnv}[env_id].default_hold_steps
        )
        if spec.max_episode_steps and spec.max_episode_steps >= hold:
            kwargs["max_episode_steps"] = (spec.max_episode_steps // hold) * hold - 1
    try:
        return make_single_env(env_id, leader=leader, camera="leader", render_mode="rgb_array", **kwargs)
    except (TypeError, ValueError, gym.error.Error) as exc:
        raise VisforeError(f"cannot make {env_id}: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------
# episodes
# ---------------------------------------------------------------------------------------
@dataclass
class MimicEpisode:
    """One episode of one mode.

    Attributes:
        mode: one of :data:`MODES`; seed: the reset seed.
        final_distance: ``||k - k*||`` at the last step (metres, against the true mirrored
            leader pose); mean_distance: its mean over the steps.
        success: ``is_success`` of the last step.
        target_error: mean ``||k*_translated - k*||`` over the steps (metres; translated
            mode only, else None).
        steps: steps run.
        pose_success: ``leader="hold"``: the fraction of held poses reached (distance below
            the threshold on the last step of each hold); else None.
    """

    mode: str
    seed: int
    final_distance: float
    mean_distance: float
    success: bool
    target_error: float | None
    steps: int
    pose_success: float | None = None


def _episode(
    env: Any,
    mode: str,
    seed: int,
    policy: Any,
    translator: Any,
    goal_dim: int,
    action_rng: np.random.Generator,
    joint_targets: bool = False,
) -> MimicEpisode:
    obs, info = env.reset(seed=seed)
    space = env.action_space
    hold = int(env.unwrapped.hold_steps) if env.unwrapped.leader_mode == "hold" else 0
    threshold = float(env.unwrapped.success_threshold)
    distances, errors, pose_ends = [], [], []
    done, steps = False, 0
    while not done:
        true_target = obs[-goal_dim:]
        if mode == "random":
            action = action_rng.uniform(space.low, space.high).astype(space.dtype)
        else:
            base = env.unwrapped
            if mode == "translated":
                pred = translator.predict(env.render())
                target = leader_keypoints_to_target(env, pred["keypoints"])
                target_qpos = base.mirror_pose(pred["qpos"]) if joint_targets else None
                errors.append(float(np.linalg.norm(target - true_target)))
            else:
                target, target_qpos = true_target, base.target_qpos if joint_targets else None
            joint_diff = joint_difference(env, target_qpos) if joint_targets else None
            action = policy.predict(policy_observation(obs, target, goal_dim, joint_diff))
        obs, _, terminated, truncated, info = env.step(action)
        distances.append(float(info["distance"]))
        steps += 1
        if hold and steps % hold == hold - 1:  # the last step of a held pose
            pose_ends.append(distances[-1] < threshold)
        done = bool(terminated or truncated)
    return MimicEpisode(
        mode=mode,
        seed=int(seed),
        final_distance=distances[-1],
        mean_distance=float(np.mean(distances)),
        success=bool(info["is_success"]),
        target_error=float(np.mean(errors)) if errors else None,
        steps=steps,
        pose_success=float(np.mean(pose_ends)) if pose_ends else None,
    )


def _summarise(episodes: list[MimicEpisode], threshold: float) -> list[dict[str, Any]]:
    rows = []
    for mode in MODES:
        eps = [e for e in episodes if e.mode == mode]
        if not eps:
            continue
        final = np.array([e.final_distance for e in eps])
        errs = [e.target_error for e in eps if e.target_error is not None]
        poses = [e.pose_success for e in eps if e.pose_success is not None]
        rows.append(
            {
                "mode": mode,
                "episodes": len(eps),
                "success_rate": float(np.mean([e.success for e in eps])),
                "pose_success_rate": float(np.mean(poses)) if poses else None,
                "final_distance_mean": float(final.mean()),
                "final_distance_median": float(np.median(final)),
                "mean_distance": float(np.mean([e.mean_distance for e in eps])),
                "target_error_mean": float(np.mean(errs)) if errs else None,
                "success_threshold": float(threshold),
            }
        )
    return rows


def run_mimic(
    policy_dir: str | Path,
    translator_dir: str | Path,
    *,
    env_id: str = "MimicReacher-v0",
    episodes: int = 20,
    seed: int = 0,
    leader: str = "hold",
    device: str = "cpu",
    checkpoint: str = "best",
    modes: tuple[str, ...] = MODES,
    progress: bool = False,
    hold_steps: int | None = None,
) -> dict[str, Any]:
    """Run the three-way comparison (see the module docstring).

    Args:
        policy_dir: ``visfore train-policy`` run on the follower's single-robot env
            (:data:`MIMIC_SINGLE_ENV`), ``state`` observations.
        translator_dir: ``visfore train-translator`` run on that env's frames.
        env_id: ``MimicReacher-v0`` or ``MimicHumanoid-v0``.
        episodes: episodes per mode (>= 1); episode ``i`` of every mode resets with seed
            ``seed + i``; random actions come from ``numpy.random.default_rng(seed)``.
        leader: ``hold`` or ``trajectory`` (the mimic env's leader process).
        device: torch device of the translator (``cpu``, ``cuda``, ``auto``).
        checkpoint: policy checkpoint, ``best`` or ``last``.
        modes: subset of :data:`MODES`.
        hold_steps: ``leader="hold"``: steps per held pose (None: the env's, 25 for the
            reacher); episodes end on the last step of the last whole hold that fits the
            env's time limit (``MimicReacher-v0``: 99 steps with 25).

    Returns:
        ``{"env_id", "policy", "translator", "leader", "episodes", "seed",
        "success_threshold", "summary": [row per mode], "episodes_detail": [...],
        "seconds"}``; a row holds ``mode``, ``episodes``, ``success_rate``,
        ``final_distance_mean``/``_median`` (m), ``mean_distance`` (m),
        ``target_error_mean`` (m, translated mode) and ``success_threshold`` (m).

    Raises:
        VisforeError: a missing or wrong run (policy or translator of another robot, a
            non-state policy), an unknown env / leader / mode, ``episodes < 1``.
    """
    if int(episodes) < 1:
        raise VisforeError(f"--episodes must be >= 1, got {episodes}")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise VisforeError(f"mode {bad[0] if bad else None!r} is not one of {', '.join(MODES)}")
    policy, translator = _load(Path(policy_dir), Path(translator_dir), env_id, device, checkpoint)
    env = _make_mimic_env(env_id, leader, translator.frame_size, hold_steps, translator.env_kwargs)
    t0 = time.monotonic()
    try:
        goal_dim = int(env.unwrapped.n_keypoints * len(env.unwrapped.keypoint_axes))
        joint_targets = bool(policy.env_kwargs.get("joint_targets", False))
        extra = int(env.unwrapped.model.nq) if joint_targets else 0
        single_dim = int(np.prod(policy.model.observation_space.shape))
        mimic_dim = int(np.prod(env.observation_space.shape))
        if mimic_dim != 2 * (single_dim - extra) - 2 * goal_dim:
            raise VisforeError(
                f"the policy of {policy_dir} takes ({single_dim},) observations; {env_id}'s follower "
                f"state has {(mimic_dim + 2 * goal_dim) // 2 + extra}"
            )
        if translator.goal_dim != goal_dim:
            raise VisforeError(
                f"--translator predicts {translator.goal_dim} key-point coordinates; {env_id} has {goal_dim}"
            )
        threshold = float(env.unwrapped.success_threshold)
        results: list[MimicEpisode] = []
        with episode_progress(progress) as bar:
            task = bar.add_task("mimic", total=len(modes) * int(episodes))
            for mode in modes:
                rng = np.random.default_rng(seed)
                for i in range(int(episodes)):
                    results.append(_episode(env, mode, int(seed) + i, policy, translator, goal_dim, rng, joint_targets))
                    bar.advance(task)
    finally:
        env.close()
    return {
        "env_id": env_id,
        "policy": str(policy_dir),
        "policy_checkpoint": checkpoint,
        "translator": str(translator_dir),
        "leader": leader,
        "hold_steps": int(env.unwrapped.hold_steps) if leader == "hold" else None,
        "episodes": int(episodes),
        "seed": int(seed),
        "success_threshold": threshold,
        "summary": _summarise(results, threshold),
        "episodes_detail": [e.__dict__ for e in results],
        "seconds": time.monotonic() - t0,
    }


# ---------------------------------------------------------------------------------------
# one image
# ---------------------------------------------------------------------------------------
def _read_image(path: Path, frame_size: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise VisforeError(f"--image {path} not found")
    try:
        img = np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - any decoder error is bad input
        raise VisforeError(f"--image {path} cannot be read as an image ({type(exc).__name__})") from None
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    h, w = frame_size
    if img.dtype != np.uint8 or img.shape != (h, w, 3):
        raise VisforeError(
            f"--image {path} is {img.dtype} {img.shape}; the translator reads uint8 RGB ({h}, {w}, 3) frames"
        )
    return img


def image_panels(leader: np.ndarray, translated: np.ndarray, follower: np.ndarray, steps: int) -> np.ndarray:
    """The ``--image`` picture: three labelled panels
    (:func:`visfore.reports.panels.compose_panels`), each upscaled by nearest neighbour
    to at least :data:`~visfore.reports.panels.MIN_PANEL_PX` pixels
    (:func:`~visfore.reports.panels.readable_scale`; 32 px frames 4x):

    * ``leader (image)``: the input image, the pose to copy;
    * ``translated pose``: the single-robot env's robot drawn at the pose the translator
      read, mirrored (the follower's target, ``render_goal()``);
    * ``follower t=<steps>``: the follower after ``steps`` actions toward it (its target
      ghost drawn at that pose).

    Args:
        leader, translated, follower: ``(H, W, 3)`` uint8 frames of one size (pixels).
        steps: actions the follower took.

    Returns:
        ``(CAPTION_HEIGHT + H * s, 3 * W * s + 2, 3)`` uint8 for the scale ``s``.
    """
    h, w = leader.shape[:2]
    captions = ["leader (image)", "translated pose", f"follower t={int(steps)}"]
    return compose_panels([leader, translated, follower], captions, readable_scale(h, w))


def execute_image(
    policy_dir: str | Path,
    translator_dir: str | Path,
    image: str | Path,
    *,
    env_id: str = "MimicReacher-v0",
    seed: int = 0,
    device: str = "cpu",
    checkpoint: str = "best",
    show: str | Path | None = None,
) -> dict[str, Any]:
    """Read one image of the robot, mirror the pose it shows, and execute it.

    The image (PNG/JPEG..., uint8 RGB of the translator's frame size (H, W, 3), the
    single-robot env's default view as seen by a follower facing it; for a translator
    trained with ``views`` those views side by side, each W / len(views) wide, as the
    single-robot env renders them) is translated once; its key points
    are mirrored as those of a leader (:func:`leader_keypoints_to_target`), and the policy
    drives the follower in the single-robot env for one episode (reset with ``seed``)
    toward them, its target ghost drawn at the mirrored translated joint configuration.

    With ``show``, a PNG of :func:`image_panels` (leader image | translated pose |
    follower, the last two rendered with the translator's views) is written there
    (atomically, its directory created).

    Returns:
        ``{"image", "translated_qpos" (nq,) rad, "target_keypoints" (G,) m,
        "final_distance" (m, to the translated target), "success" (below the env's
        threshold), "success_threshold", "steps", "show"}`` (lists of floats).

    Raises:
        VisforeError: missing/unreadable image, a frame of another size, a wrong run.
    """
    policy, translator = _load(Path(policy_dir), Path(translator_dir), env_id, device, checkpoint)
    img = _read_image(Path(image), translator.frame_size)
    pred = translator.predict(img)
    mimic = _make_mimic_env(env_id, "hold", translator.frame_size, env_kwargs=translator.env_kwargs)
    try:
        target = leader_keypoints_to_target(mimic, pred["keypoints"])
        target_qpos = mimic.unwrapped.mirror_pose(pred["qpos"])
    finally:
        mimic.close()
    layout = leader_frame_options(translator.frame_size, translator.env_kwargs)
    joint_targets = bool(policy.env_kwargs.get("joint_targets", False))
    env = make_single_env(MIMIC_SINGLE_ENV[env_id], render_mode="rgb_array", joint_targets=joint_targets, **layout)
    try:
        base = env.unwrapped
        g = int(base.n_keypoints * len(base.keypoint_axes))
        nj = int(base.model.nq) if joint_targets else 0
        obs, _ = env.reset(seed=int(seed), options={"target_qpos": target_qpos})
        done, steps = False, 0
        while not done:
            p = obs.shape[0] - 2 * g - nj
            k = obs[p : p + g] + obs[p + g : p + 2 * g]
            # The key points read from the image, not FK of the translated angles; a
            # joint-space policy also gets q* - q, q* being the translated angles.
            action = policy.predict(np.concatenate([obs[:p], k - target, target, obs[p + 2 * g :]]))
            obs, _, terminated, truncated, _ = env.step(action)
            steps += 1
            done = bool(terminated or truncated)
        k = obs[p : p + g] + obs[p + g : p + 2 * g]
        final = float(np.linalg.norm(k - target))
        shown = None
        if show is not None:
            shown = Path(show)
            shown.parent.mkdir(parents=True, exist_ok=True)
            picture = image_panels(img, base.render_goal(), env.render(), steps)
            runs.atomic_write(shown, lambda f: f.write(iio.imwrite("<bytes>", picture, extension=".png")))
        threshold = float(base.success_threshold)
    finally:
        env.close()
    return {
        "image": str(image),
        "translated_qpos": [float(v) for v in pred["qpos"]],
        "target_keypoints": [float(v) for v in target],
        "final_distance": final,
        "success": bool(final < threshold),
        "success_threshold": threshold,
        "steps": steps,
        "show": str(shown) if shown is not None else None,
    }


# ---------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------
_COLUMNS = (
    "mode",
    "episodes",
    "success_rate",
    "pose_success_rate",
    "final_distance_mean",
    "final_distance_median",
    "mean_distance",
    "target_error_mean",
)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def summary_markdown(result: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table (distances in metres)."""
    lines = [
        f"# visfore mimic: {result['env_id']} (leader {result['leader']}, {result['episodes']} episodes, "
        f"seed {result['seed']})",
        "",
        f"policy `{result['policy']}`, translator `{result['translator']}`, success = final key-point "
        f"distance < {result['success_threshold']} m",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for row in result["summary"]:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def write_report(result: Mapping[str, Any], out: str | Path) -> Path:
    """Write the comparison atomically: ``.json`` (everything), ``.csv`` (summary rows) or
    ``.md`` (:func:`summary_markdown`), chosen by the suffix of ``out``.

    Raises:
        VisforeError: another suffix.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUT_FORMATS:
        raise VisforeError(f"--out {out}: the suffix must be one of {', '.join(OUT_FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        return runs.write_json(out, dict(result))
    if suffix == ".md":
        return runs.atomic_write_text(out, summary_markdown(result))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["env_id", "leader", "seed", *_COLUMNS, "success_threshold"])
    writer.writeheader()
    for row in result["summary"]:
        writer.writerow(
            {
                "env_id": result["env_id"],
                "leader": result["leader"],
                "seed": result["seed"],
                **{c: row[c] for c in (*_COLUMNS, "success_threshold")},
            }
        )
    return runs.atomic_write_text(out, buf.getvalue())


def print_summary(result: Mapping[str, Any], console: Any) -> None:
    """Print the comparison as a rich table."""
    table = Table(
        title=f"mimic {result['env_id']} - leader {result['leader']}, {result['episodes']} episodes, "
        f"success < {result['success_threshold'] * 100:.1f} cm"
    )
    for name in (
        "mode",
        "success",
        "held poses reached",
        "final dist mean (cm)",
        "final dist median (cm)",
        "mean dist (cm)",
        "translator err (cm)",
    ):
        table.add_column(name, justify="left" if name == "mode" else "right")
    for r in result["summary"]:
        err = r["target_error_mean"]
        pose = r["pose_success_rate"]
        table.add_row(
            r["mode"],
            f"{r['success_rate'] * 100:.0f}%",
            "-" if pose is None else f"{pose * 100:.0f}%",
            f"{r['final_distance_mean'] * 100:.2f}",
            f"{r['final_distance_median'] * 100:.2f}",
            f"{r['mean_distance'] * 100:.2f}",
            "-" if err is None else f"{err * 100:.2f}",
        )
    console.print(table)
