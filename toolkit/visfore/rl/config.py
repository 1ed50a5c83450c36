"""The options of the policy commands (``train-policy``, ``evaluate``, ``mimic``), each
declared once (:mod:`visfore.core.config`).

Imported by the CLI at start-up: nothing here imports torch, gymnasium or
stable-baselines3. The pipelines are :func:`visfore.rl.train_policy.train_policy`,
:func:`visfore.rl.evaluate.evaluate` and :func:`visfore.rl.mimic.run_mimic`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, Optional, Union

from visfore.core.config import ConfigBase, option
from visfore.core.errors import VisforeError
from visfore.core.ray_backend import RAY_HELP
from visfore.data.envs import parse_env_kwargs

__all__ = [
    "EvaluateConfig",
    "MimicConfig",
    "PolicyTrainConfig",
    "RANDOMIZE_PRESETS",
    "parse_randomize",
    "parse_range",
    "parse_seeds",
    "parse_set_values",
    "parse_keys",
]

#: Randomisation presets of the locomotion envs (``--randomize NAME``).
RANDOMIZE_PRESETS = ("default", "random", "extreme")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE_RE = re.compile(rf"^\s*({_NUMBER})\s*(?:-|:|,|\.\.)\s*({_NUMBER})\s*$")


def parse_randomize(text: Any) -> str | tuple[float, float] | None:
    """Parse ``--randomize``: a preset name or a ``LOW-HIGH`` scale range.

    Args:
        text: ``None``; one of :data:`RANDOMIZE_PRESETS`; two positive numbers
            ``LOW-HIGH`` (also ``LOW:HIGH``, ``LOW,HIGH``) or a 2-sequence, ``0 < LOW <=
            HIGH``, the range of the uniform scale drawn per episode for every body-part
            length and width.

    Returns:
        None, the preset name, or ``(low, high)``.

    Raises:
        VisforeError: anything else.
    """
    if text is None:
        return None
    if isinstance(text, (list, tuple)) and len(text) == 2:
        text = f"{text[0]}-{text[1]}"
    key = str(text).strip()
    if key.lower() in RANDOMIZE_PRESETS:
        return key.lower()
    match = _RANGE_RE.match(key)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        if 0.0 < low <= high and math.isfinite(high):
            return (low, high)
    raise VisforeError(
        f"--randomize {text!r} is neither a preset ({', '.join(RANDOMIZE_PRESETS)}) nor a "
        "scale range LOW-HIGH with 0 < LOW <= HIGH (e.g. 0.8-1.2)"
    )


def _lower(text: str) -> str:
    return str(text).strip().lower()


class PolicyTrainConfig(ConfigBase, command="train-policy"):
    """Every option of ``visfore train-policy``: train a TD3, PPO or SAC policy
    (stable-baselines3) with tuned RL-Zoo hyperparameters and evaluate it on the nominal
    body.

    The run directory is ``--out``, else ``RUNS_ROOT/train-policy-<--name or UTC time>``.
    ``--resume`` continues the run there from ``checkpoints/last_model.zip`` with its
    saved options; only :data:`visfore.rl.train_policy.RUNTIME_OPTIONS` may change
    (``--timesteps`` may raise the total; ``--time-budget`` limits the new session).
    """

    env: Optional[str] = option(
        default=None,
        help="Env id: PerturbHopper-v0, PerturbWalker2d-v0, PerturbAnt-v0, PerturbHalfCheetah-v0, a short name of visfore.data.envs, or any registered Gymnasium id (e.g. Hopper-v5, Pendulum-v1).",
    )
    algo: Optional[Literal["td3", "ppo", "sac"]] = option(
        default=None, help="td3, ppo or sac (td3 and sac are off-policy: replay buffer, HER).", parse=_lower
    )
    timesteps: Optional[int] = option(
        default=None,
        help="Total environment steps (replaces the zoo's n_timesteps; required for a new run; on --resume it may raise the total). The upper bound with --time-budget, and the length of linear (lin) schedules.",
    )
    time_budget: Optional[float] = option(
        default=None,
        help="Stop training after this many minutes (wall clock, > 0) of this session, then evaluate and write the run as a finished one (metrics.json: stopped_by). On --resume it applies to the new session (none unless given again).",
        metavar="MINUTES",
    )
    seed: int = option(
        default=0, help="Seeds the model, the training envs (seed + rank) and the evaluation env (seed + 10000)."
    )
    backend: Optional[Literal["mujoco", "pybullet"]] = option(
        default=None, help="Physics of the visfore locomotion envs: mujoco or pybullet (default: the env's)."
    )
    randomize: Union[str, tuple[float, float], None] = option(
        default=None,
        help="Randomise the body in training: default, random, extreme, or a scale range LOW-HIGH applied to every body-part length and width (e.g. 0.8-1.2). Evaluation is always nominal.",
        parse=parse_randomize,
        metavar="PRESET|LOW-HIGH",
    )
    obs_mode: Literal["state", "pixels", "state+pixels"] = option(
        default="state", help="state, pixels or state+pixels (pixels: visfore envs only)."
    )
    size: int = option(default=64, help="Frame width and height in pixels (pixel observation modes).")
    n_envs: Optional[int] = option(default=None, help="Parallel training envs (default: the zoo's n_envs, else 1).")
    hp: list[str] = option(
        help="Hyperparameter override key=value (YAML value), repeatable: --hp learning_rate=1e-3 --hp batch_size=64.",
        default_factory=list,
        repeatable=True,
    )
    hyperparams: Optional[str] = option(
        default=None,
        help="Use the entry KEY of hyperparams/<algo>.yml instead of the env id's own (default: the robot's zoo entry, else the entry named by the env id, else stable-baselines3 defaults); recorded in config.yaml (hyperparameters.zoo_key). An unknown key lists the file's keys.",
        metavar="KEY",
    )
    eval_freq: int = option(
        default=10_000,
        help="Evaluate every this many env steps, and at the end (0: only at the end); every evaluation goes to logs/evaluations.npz.",
    )
    eval_episodes: int = option(default=5, help="Deterministic episodes per evaluation (periodic and final).")
    save_freq: Optional[int] = option(
        default=None,
        help="Save last_model.zip every this many env steps (default: --eval-freq, or 10000 when that is 0).",
    )
    env_kwargs: dict[str, Any] = option(
        help="Extra env options of the training and evaluation envs: JSON or key=value[,key=value], repeatable, e.g. --env-kwargs potential_shaping=true; over the hyperparameter entry's env_kwargs (yours win), under the options above.",
        default_factory=dict,
        parse=parse_env_kwargs,
        repeatable=True,
        flags=("--env-kwargs",),
    )
    out: Optional[str] = option(
        default=None, help="Run directory (default RUNS_ROOT/train-policy-<--name or UTC time>).", flags=("--out", "-o")
    )
    name: Optional[str] = option(default=None, help="Run name: RUNS_ROOT/train-policy-NAME.")
    runs_root: str = option(
        default="runs",
        help="Parent directory of the run directories named by --name or the time.",
        flags=("--runs-root",),
        deprecated=("--out-dir",),
    )
    resume: bool = option(
        default=False,
        help="Continue the run in --out (or --name) from checkpoints/last_model.zip (its options come from its config.yaml). The old form --resume RUN_DIR still works.",
        flags=("--resume",),
    )
    device: str = option(default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N.")
    progress: bool = option(
        default=True,
        help="Show the progress bar and the summary (--quiet: neither).",
        flags=("--progress/--quiet", " /-q"),
        deprecated=(" /--no-progress",),
    )


# -- evaluate ----------------------------------------------------------------------------
_EVAL_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_EVAL_RANGE_RE = re.compile(rf"^\s*({_EVAL_NUMBER})\s*[-,]\s*({_EVAL_NUMBER})\s*$")


def parse_range(text: Any) -> tuple[float, float]:
    """Parse ``--perturb LO-HI`` (e.g. ``0.5-1.5``; also ``0.5,1.5`` or a 2-sequence).

    Returns:
        (lo, hi) scale factors with 0 < lo < hi.

    Raises:
        VisforeError: not ``LO-HI`` with two positive numbers and lo < hi.
    """
    if isinstance(text, (list, tuple)) and len(text) == 2:
        text = f"{text[0]}-{text[1]}"
    m = _EVAL_RANGE_RE.match(str(text))
    if not m:
        raise VisforeError(f"--perturb {text!r} must be LO-HI with 0 < LO < HI, e.g. 0.5-1.5")
    lo, hi = float(m.group(1)), float(m.group(2))
    if not (0 < lo < hi) or not math.isfinite(hi):
        raise VisforeError(f"--perturb {text!r} must be LO-HI with 0 < LO < HI, e.g. 0.5-1.5")
    return lo, hi


def parse_seeds(seeds: Any) -> tuple[int, ...]:
    """``"0,1,2"`` (or ints) -> (0, 1, 2).

    Raises:
        VisforeError: empty, not non-negative integers, or repeated.
    """
    import numpy as np  # lazy: the CLI imports this config at start-up

    if isinstance(seeds, str):
        parts = [p.strip() for p in seeds.split(",") if p.strip()]
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            raise VisforeError(f"--seeds {seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    else:
        values = tuple(seeds)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values):
        raise VisforeError(f"--seeds must be non-negative integers, got {seeds!r}")
    if len(set(values)) != len(values):
        raise VisforeError(f"--seeds has repeated values: {seeds!r}")
    return tuple(int(v) for v in values)


def positive_scale(name: str, value: Any) -> float:
    """``value`` as a positive finite float.

    Raises:
        VisforeError: ``"{name} must be a positive number, got ..."``.
    """
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise VisforeError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise VisforeError(f"{name} must be a positive number, got {value!r}")
    return scale


def parse_set_values(items: Any) -> dict[str, float]:
    """``--set key=value`` items (each may hold several, comma-separated; or a mapping)
    -> {key: scale}.

    Raises:
        VisforeError: an item is not ``key=value``, a value is not a positive number, or
            a key is given twice.
    """
    if isinstance(items, dict):
        return {str(k): positive_scale(f"--set {k}", v) for k, v in items.items()}
    if isinstance(items, str):
        items = [items]
    values: dict[str, float] = {}
    for item in items or ():
        for part in str(item).split(","):
            if not part.strip():
                continue
            key, sep, text = part.partition("=")
            key = key.strip()
            if not sep or not key:
                raise VisforeError(f"--set {part!r} must be key=value, e.g. thigh.length=1.2")
            if key in values:
                raise VisforeError(f"--set gives {key!r} twice")
            values[key] = positive_scale(f"--set {key}", text.strip())
    return values


def parse_keys(text: Any) -> list[str]:
    """``"thigh.length, torso.mass"`` (or a sequence) -> ``["thigh.length", "torso.mass"]``
    (empty items dropped; ``"all"`` stays ``["all"]``)."""
    if isinstance(text, str):
        return [p.strip() for p in text.split(",") if p.strip()]
    return [str(p).strip() for p in text]


#: The body-part shortcut options of ``evaluate`` (``--Ltorso 1.2`` = ``--set torso.length=1.2``): option name -> canonical perturbation key.
BODY_PART_SHORTCUTS: dict[str, str] = {
    f"{dim}{part}": f"{part}.{'length' if dim == 'L' else 'width'}"
    for part in ("torso", "thigh", "leg", "foot")
    for dim in ("L", "W")
}


class EvaluateConfig(ConfigBase, command="evaluate"):
    """Every option of ``visfore evaluate``: evaluate the policy of a ``train-policy`` run
    under body-part perturbations (1-D sweeps, a 2-D grid or one fixed perturbation), or
    with none of those options on the nominal env only (any env), and write a report
    (CSV, JSON, Markdown, HTML, plots); goal-reaching envs add the success rate and the
    final distance.

    Episode ``k`` of evaluation seed ``s`` is reset from ``(s, k)`` in every cell
    (:mod:`visfore.core.seeding`): results do not depend on ``workers`` or ``ray``.
    """

    run_dir: str = option(help="Policy run directory (visfore train-policy).", argument=True, metavar="RUN")
    perturb: Optional[tuple[float, float]] = option(
        default=None,
        help="Range of scale factors LO-HI, e.g. 0.5-1.5 (sweeps). Without it or --set: the nominal env only.",
        parse=parse_range,
        metavar="LO-HI",
    )
    points: int = option(
        default=11,
        help="Scale factors per parameter, evenly spaced over the range; nominal (1.0) is always evaluated too.",
    )
    params: Optional[list[str]] = option(
        default=None,
        help="Comma-separated keys (thigh.length,torso.mass), or 'all'. Default: every <part>.length and <part>.width.",
        parse=parse_keys,
        metavar="KEYS",
    )
    grid: Optional[list[str]] = option(
        default=None, help="A,B: 2-D sweep of two parameters over points x points.", parse=parse_keys, metavar="A,B"
    )
    episodes: int = option(default=10, help="Episodes per seed in every cell.")
    seeds: tuple[int, ...] = option(
        default=(0, 1, 2),
        help="Comma-separated evaluation seeds; episode k of seed s is reset from (s, k) in every cell.",
        parse=parse_seeds,
        metavar="SEEDS",
    )
    workers: Optional[int] = option(
        default=None,
        help="Processes running (cell, seed) tasks (default 1; with --ray, Ray workers, default one per CPU of the cluster); results do not depend on it.",
    )
    backend: Optional[Literal["mujoco", "pybullet"]] = option(
        default=None, help="Physics backend: mujoco or pybullet (default: the run's)."
    )
    checkpoint: Literal["best", "last"] = option(default="best", help="Policy checkpoint: best or last.")
    out: Optional[str] = option(
        default=None,
        help="Report directory (default RUN/eval-<UTC time>); must not exist or be empty.",
        flags=("--out", "-o"),
    )
    fixed: dict[str, float] = option(
        help="Fixed perturbation key=value (repeatable, or comma-separated) instead of a sweep.",
        default_factory=dict,
        parse=parse_set_values,
        repeatable=True,
        flags=("--set",),
    )
    ray: Optional[str] = option(default=None, help=RAY_HELP, flags=("--ray",), metavar="ADDRESS")
    progress: bool = option(
        default=True, help="Show the progress bar and notes (--quiet: neither).", flags=("--progress/--quiet", " /-q")
    )


# -- mimic -------------------------------------------------------------------------------
#: Report formats of ``visfore mimic --out`` (by suffix).
MIMIC_OUT_FORMATS = (".json", ".csv", ".md")


class MimicConfig(ConfigBase, command="mimic"):
    """Every option of ``visfore mimic``: see a pose, then do it. The follower of a mimic
    env copies the leader it sees through a translator, compared with the same policy given
    the true pose and with a random policy (same seeds in every mode)."""

    policy: str = option(
        help="visfore train-policy run on the follower's single-robot env (ReacherPlane-v0 / TargetHumanoid-v0, state observations)."
    )
    translator: str = option(help="visfore train-translator run on that env's frames.")
    env: Literal["MimicReacher-v0", "MimicHumanoid-v0"] = option(
        default="MimicReacher-v0", help="Mimic env: MimicReacher-v0 or MimicHumanoid-v0."
    )
    episodes: int = option(
        default=20, help="Episodes per mode (translated, true-pose, random); same seeds in every mode."
    )
    seed: int = option(default=0, help="Episode i resets with seed + i; the random policy's generator seed.")
    leader: Literal["hold", "trajectory"] = option(
        default="hold", help="Leader process: hold (random held poses) or trajectory (smooth random motion)."
    )
    hold_steps: Optional[int] = option(
        default=None, help="--leader hold: steps per held pose (default: the env's, 25 = 0.5 s for the reacher)."
    )
    image: Optional[str] = option(
        default=None, help="Execute the (mirrored) pose shown in this image instead (the translator's frame size)."
    )
    checkpoint: Literal["best", "last"] = option(default="best", help="Policy checkpoint: best or last.")
    device: str = option(default="cpu", help="Translator device: cpu, cuda or auto.")
    out: Optional[str] = option(
        default=None,
        help="Write the comparison to this .json, .csv or .md file (--image: .json; the PNG image | result goes next to it as <stem>-mimic.png).",
        flags=("--out", "-o"),
    )
    progress: bool = option(
        default=True, help="Show the progress bar (--quiet: no bar).", flags=("--progress/--quiet", " /-q")
    )
