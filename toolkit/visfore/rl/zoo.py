"""rl-baselines3-zoo hyperparameters: lookup per robot and backend, ``--hp`` overrides, and
the zoo's conventions turned into stable-baselines3 constructor arguments.

The YAML files in ``visfore/hyperparams/`` are copied verbatim from rl-baselines3-zoo 2.9.2
(``hyperparams/td3.yml``, ``hyperparams/ppo.yml``). They are read as the zoo reads them
(``rl_zoo3/exp_manager.py``): ``normalize`` -> VecNormalize options, ``noise_type`` /
``noise_std`` -> action noise, ``lin_<x>`` -> a linear schedule from ``x`` to 0, and
``policy_kwargs`` strings such as ``"dict(net_arch=[400, 300], activation_fn=nn.ReLU)"``
parsed safely (an AST walk over literals and an allow-list of names, never ``eval``).
Errors are :class:`~visfore.core.errors.VisforeError` (one line).
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import stable_baselines3
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.utils import LinearSchedule

from visfore.core.errors import VisforeError

#: Algorithms of ``--algo`` and their stable-baselines3 class names.
ALGOS: dict[str, str] = {"td3": "TD3", "ppo": "PPO"}
OFF_POLICY_ALGOS = ("td3",)
#: Robots with tuned hyperparameters, and their zoo entries per physics backend.
ROBOTS = ("Hopper", "Walker2d", "Ant", "HalfCheetah")
ZOO_MUJOCO_KEYS: dict[str, str] = {r: f"{r}-v4" for r in ROBOTS}
ZOO_PYBULLET_KEYS: dict[str, str] = {
    "Hopper": "HopperBulletEnv-v0",
    "Walker2d": "Walker2DBulletEnv-v0",
    "Ant": "AntBulletEnv-v0",
    "HalfCheetah": "HalfCheetahBulletEnv-v0",
}
ZOO_SOURCE = "rl-baselines3-zoo 2.9.2, hyperparams/{algo}.yml (https://github.com/DLR-RM/rl-baselines3-zoo)"
#: Zoo keys that are not constructor arguments of the algorithm.
ZOO_SPECIAL_KEYS = ("n_timesteps", "policy", "n_envs", "normalize", "noise_type", "noise_std")
#: Constructor arguments visfore sets itself (``--hp`` may not set them).
RESERVED_ALGO_KWARGS = (
    "policy",
    "env",
    "verbose",
    "seed",
    "device",
    "tensorboard_log",
    "_init_setup_model",
    "action_noise",
)
#: Hyperparameters that accept a ``lin_<x>`` schedule string.
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
#: VecNormalize options accepted in a ``normalize`` mapping.
NORMALIZE_OPTIONS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")

_FLOAT_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?(?:inf|nan)$", re.I)


def _parse_hp_value(text: str) -> Any:
    """A ``--hp`` value: YAML, with YAML-1.1 corner cases fixed (``1e-3`` is a float)."""
    raw = text.strip()
    if _FLOAT_RE.match(raw) and not re.fullmatch(r"[-+]?\d+", raw):
        return float(raw)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        return raw  # e.g. a "dict(a=1, b=[2, 3])" string with YAML-special characters
    return value


def parse_hp_overrides(values: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """Parse ``--hp key=value`` options (values as YAML: ``1e-3``, ``64``, ``true``,
    ``[1, episode]``, ``lin_3e-4``, ``"dict(net_arch=[64, 64])"``); later ones win.

    Raises:
        VisforeError: an item is not ``key=value`` with an identifier key, or sets
            ``n_timesteps`` (use --timesteps), ``policy`` (use --obs-mode), ``n_envs``
            (use --n-envs) or an argument visfore sets itself.
    """
    result: dict[str, Any] = {}
    for item in values or ():
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise VisforeError(f"--hp {item!r} is not key=value (e.g. --hp learning_rate=1e-3)")
        if key == "n_timesteps":
            raise VisforeError("--hp n_timesteps: use --timesteps")
        if key == "policy":
            raise VisforeError("--hp policy: the policy follows --obs-mode")
        if key == "n_envs":
            raise VisforeError("--hp n_envs: use --n-envs")
        if key in RESERVED_ALGO_KWARGS:
            raise VisforeError(f"--hp {key}: visfore sets it (use noise_type/noise_std for action noise)")
        result[key] = _parse_hp_value(raw)
    return result


_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "GELU", "LeakyReLU", "SiLU", "Sigmoid", "Softplus", "SELU", "Mish", "Identity")
_OPTIMIZERS = ("Adam", "AdamW", "RMSprop", "SGD")


def _resolve_dotted(parts: list[str], text: str) -> Any:
    """``nn.ReLU``, ``th.nn.ReLU``, ``torch.nn.ReLU``, ``th.optim.Adam``... (allowlisted)."""
    if len(parts) >= 2 and parts[-2] == "nn" and parts[:-2] in ([], ["th"], ["torch"]):
        if parts[-1] in _ACTIVATIONS:
            return getattr(torch.nn, parts[-1])
    if len(parts) >= 2 and parts[-2] == "optim" and parts[:-2] in ([], ["th"], ["torch"]):
        if parts[-1] in _OPTIMIZERS:
            return getattr(torch.optim, parts[-1])
    raise VisforeError(
        f"policy_kwargs {text!r}: {'.'.join(parts)} is not allowed (use nn.<{'|'.join(_ACTIVATIONS)}> "
        f"or th.optim.<{'|'.join(_OPTIMIZERS)}>)"
    )


def _literal(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, text) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        keys = [_literal(k, text) if k is not None else None for k in node.keys]
        if not all(isinstance(k, str) for k in keys):
            raise VisforeError(f"policy_kwargs {text!r}: dictionary keys must be strings")
        return {k: _literal(v, text) for k, v in zip(keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args or any(k.arg is None for k in node.keywords):
            raise VisforeError(f"policy_kwargs {text!r}: use dict(key=value, ...)")
        return {k.arg: _literal(k.value, text) for k in node.keywords}
    if isinstance(node, ast.Attribute):
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.insert(0, cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            return _resolve_dotted([cur.id, *parts], text)
    raise VisforeError(
        f"policy_kwargs {text!r}: only dict(...), lists, numbers, strings, booleans and nn.<Activation> are allowed"
    )


def parse_policy_kwargs(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse the zoo's ``policy_kwargs`` safely (an AST walk, never ``eval``).

    Args:
        value: a string such as ``"dict(log_std_init=-2, ortho_init=False,
            activation_fn=nn.ReLU, net_arch=dict(pi=[256, 256], vf=[256, 256]))"`` or
            ``"{'net_arch': [64, 64]}"``; or a mapping (from ``--hp``), whose
            ``activation_fn`` / ``optimizer_class`` may be strings like ``"nn.ReLU"``.

    Returns:
        The keyword arguments of the policy, with ``torch.nn`` / ``torch.optim`` classes.

    Raises:
        VisforeError: a syntax error, a non-literal expression, or a class outside the
            allowlist (activations of ``torch.nn``, optimisers of ``torch.optim``).
    """
    if value is None:
        return {}
    if isinstance(value, Mapping):
        out = dict(value)
        for key in ("activation_fn", "optimizer_class"):
            if isinstance(out.get(key), str):
                out[key] = parse_policy_kwargs(f"dict(x={out[key]})")["x"]
        return out
    text = " ".join(str(value).split())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise VisforeError(f"policy_kwargs {text!r} is not a valid expression") from None
    result = _literal(tree.body, text)
    if not isinstance(result, dict):
        raise VisforeError(f"policy_kwargs {text!r} must be a dict(...)")
    return parse_policy_kwargs(result)


def make_schedule(key: str, value: Any) -> Any:
    """A zoo hyperparameter value that may be a schedule: ``lin_<x>`` -> a linear schedule
    from ``x`` (progress remaining 1) to 0 (progress remaining 0), as the zoo's
    ``SimpleLinearSchedule``; numbers are returned as floats.

    Raises:
        VisforeError: a string that is not ``lin_<number>``, or a non-number.
    """
    if isinstance(value, str):
        match = re.fullmatch(r"lin_(.+)", value.strip())
        if match and _FLOAT_RE.match(match.group(1)):
            return LinearSchedule(start=float(match.group(1)), end=0.0, end_fraction=1.0)
        raise VisforeError(f"{key} {value!r} must be a number or lin_<number> (a linear schedule to 0)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VisforeError(f"{key} must be a number or lin_<number>, got {value!r}")
    return float(value)


def parse_normalize(value: Any, gamma: Any = None) -> dict[str, Any]:
    """VecNormalize options of the zoo's ``normalize`` key (``true``/``false``, a mapping,
    or a ``"dict(norm_obs=False, norm_reward=True)"`` string). As in the zoo, the
    reward-normalisation discount is the algorithm's ``gamma`` when one is set.

    Returns:
        ``{"norm_obs": bool, "norm_reward": bool, ...}`` (without ``norm_obs_keys``).

    Raises:
        VisforeError: another type or an unknown option.
    """
    if value is None or value is False:
        return {"norm_obs": False, "norm_reward": False}
    if value is True:
        kwargs: dict[str, Any] = {}
    elif isinstance(value, str):
        kwargs = parse_policy_kwargs(value)  # same literal grammar
    elif isinstance(value, Mapping):
        kwargs = dict(value)
    else:
        raise VisforeError(f"normalize must be true, false or a dict of VecNormalize options, got {value!r}")
    unknown = sorted(set(kwargs) - set(NORMALIZE_OPTIONS))
    if unknown:
        raise VisforeError(
            f"normalize: unknown VecNormalize option(s) {', '.join(unknown)}; valid: {', '.join(NORMALIZE_OPTIONS)}"
        )
    out = {"norm_obs": True, "norm_reward": True, **kwargs}
    if gamma is not None:
        out["gamma"] = float(gamma)
    return out


# ---------------------------------------------------------------------------------------
# hyperparameters
# ---------------------------------------------------------------------------------------
@functools.cache
def _zoo_file(algo: str) -> dict[str, dict[str, Any]]:
    text = importlib.resources.files("visfore.rl").joinpath("hyperparams", f"{algo}.yml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    return {str(k): dict(v) for k, v in data.items()}


def load_zoo_hyperparams(algo: str) -> dict[str, dict[str, Any]]:
    """The zoo entries shipped in ``visfore/hyperparams/<algo>.yml`` (a fresh copy):
    ``{zoo env id: {hyperparameter: value}}``, YAML anchors merged."""
    return json.loads(json.dumps(_zoo_file(algo)))


def robot_name(env_id: str) -> str | None:
    """The robot of an env id: ``PerturbHopper-v0``, ``Hopper-v5``,
    ``HopperBulletEnv-v0`` -> ``Hopper`` (``Walker2D`` -> ``Walker2d``); None otherwise."""
    base = env_id.split(":")[-1].split("/")[-1]
    base = re.sub(r"-v\d+$", "", base)
    base = re.sub(r"^Perturb", "", base)
    base = re.sub(r"Bullet(?:Env)?$", "", base)
    for robot in ROBOTS:
        if base.lower() == robot.lower():
            return robot
    return None


def zoo_key(algo: str, env_id: str, backend: str | None = None) -> str | None:
    """The zoo entry used for ``env_id``: the robot's PyBullet entry with
    ``backend="pybullet"`` (or a ``*BulletEnv`` id), else its MuJoCo entry; else the exact
    env id when the file has it; else None."""
    entries = _zoo_file(algo)
    robot = robot_name(env_id)
    if robot is not None:
        bullet = backend == "pybullet" or "BulletEnv" in env_id
        key = (ZOO_PYBULLET_KEYS if bullet else ZOO_MUJOCO_KEYS)[robot]
        if key in entries:
            return key
    return env_id if env_id in entries else None


@dataclass
class Hyperparameters:
    """Resolved hyperparameters (plain YAML values, zoo format).

    Attributes:
        zoo_key: the zoo entry used (None = stable-baselines3 defaults).
        zoo: that entry as in the file.
        overrides: the ``--hp`` values.
        resolved: zoo entry without ``n_timesteps``/``policy``/``n_envs``, plus overrides.
        n_envs: the zoo's ``n_envs`` (1 without one).
    """

    zoo_key: str | None
    zoo: dict[str, Any]
    overrides: dict[str, Any]
    resolved: dict[str, Any]
    n_envs: int


def resolve_hyperparameters(
    algo: str, env_id: str, backend: str | None, overrides: Mapping[str, Any]
) -> Hyperparameters:
    """Look up the zoo entry for ``env_id`` (:func:`zoo_key`) and apply ``overrides``."""
    key = zoo_key(algo, env_id, backend)
    zoo = load_zoo_hyperparams(algo).get(key, {}) if key else {}
    resolved = {k: v for k, v in zoo.items() if k not in ("n_timesteps", "policy", "n_envs")}
    resolved.update(json.loads(json.dumps(dict(overrides))))
    n_envs = int(zoo.get("n_envs", 1))
    return Hyperparameters(key, zoo, dict(overrides), resolved, n_envs)


def algo_class(algo: str) -> type[BaseAlgorithm]:
    """The stable-baselines3 class of ``--algo`` (``td3`` -> :class:`~stable_baselines3.TD3`)."""
    return getattr(stable_baselines3, ALGOS[algo])


def build_algo_kwargs(
    algo: str, resolved: Mapping[str, Any], action_space: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn zoo-format hyperparameters into constructor arguments of the algorithm.

    Args:
        algo: ``td3`` or ``ppo``.
        resolved: :attr:`Hyperparameters.resolved`.
        action_space: the env's action space (a Box) for the action noise.

    Returns:
        ``(algo_kwargs, normalize_kwargs)``: keyword arguments of ``TD3``/``PPO`` (schedules,
        action noise, policy_kwargs and train_freq converted), and the VecNormalize options.

    Raises:
        VisforeError: an unknown hyperparameter (with the valid names), a bad schedule,
            noise or policy_kwargs value, or action noise for an on-policy algorithm.
    """
    params = dict(resolved)
    valid = [
        p for p in inspect.signature(algo_class(algo).__init__).parameters if p not in ("self", *RESERVED_ALGO_KWARGS)
    ]
    special = ("normalize", "noise_type", "noise_std")
    unknown = sorted(k for k in params if k not in valid and k not in special)
    if unknown:
        raise VisforeError(
            f"unknown {algo} hyperparameter(s) {', '.join(unknown)}; valid: {', '.join(sorted([*valid, *special]))}"
        )
    normalize = parse_normalize(params.pop("normalize", False), params.get("gamma"))
    noise_type = params.pop("noise_type", None)
    noise_std = params.pop("noise_std", None)
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key in SCHEDULE_KEYS:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                kwargs[key] = value  # e.g. clip_range_vf=-1 is passed as is (zoo)
            else:
                kwargs[key] = make_schedule(key, value)
        elif key == "policy_kwargs":
            kwargs[key] = parse_policy_kwargs(value)
        elif key == "train_freq" and isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    if noise_type is not None:
        if algo not in OFF_POLICY_ALGOS:
            raise VisforeError(f"noise_type: action noise is for off-policy algorithms, not {algo}")
        try:
            std = float(noise_std if noise_std is not None else 0.1)
        except (TypeError, ValueError):
            raise VisforeError(f"noise_std must be a number, got {noise_std!r}") from None
        if not (std >= 0 and math.isfinite(std)):
            raise VisforeError(f"noise_std must be >= 0, got {noise_std!r}")
        n = int(np.prod(action_space.shape))
        kind = str(noise_type).strip()
        if kind == "normal":
            kwargs["action_noise"] = NormalActionNoise(mean=np.zeros(n), sigma=std * np.ones(n))
        elif kind == "ornstein-uhlenbeck":
            kwargs["action_noise"] = OrnsteinUhlenbeckActionNoise(mean=np.zeros(n), sigma=std * np.ones(n))
        else:
            raise VisforeError(f"noise_type {noise_type!r} must be normal or ornstein-uhlenbeck")
    elif noise_std is not None:
        raise VisforeError("noise_std needs noise_type (normal or ornstein-uhlenbeck)")
    return kwargs, normalize
