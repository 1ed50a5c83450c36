"""rl-baselines3-zoo hyperparameters: lookup per robot and backend (or a named entry,
``--hyperparams KEY``), ``--hp`` overrides, and the zoo's conventions turned into
stable-baselines3 constructor arguments.

The YAML files in ``visfore/rl/hyperparams/``: ``td3.yml`` and ``ppo.yml`` hold entries
copied verbatim from rl-baselines3-zoo 2.9.2 (and visfore's own, marked as such);
``sac.yml`` is visfore's own file. They are read as the zoo reads them
(``rl_zoo3/exp_manager.py``): ``normalize`` -> VecNormalize options, ``noise_type`` /
``noise_std`` -> action noise, ``lin_<x>`` -> a linear schedule from ``x`` to 0,
``policy_kwargs`` strings such as ``"dict(net_arch=[400, 300], activation_fn=nn.ReLU)"``
parsed safely (an AST walk over literals and an allow-list of names, never ``eval``),
``replay_buffer_class: HerReplayBuffer`` (an allow-list of names) with
``replay_buffer_kwargs`` (a mapping or a ``"dict(...)"`` string, same parser). A visfore
extension of the format: ``env_kwargs`` (a mapping) holds env options of the entry; it is
no constructor argument (:attr:`Hyperparameters.env_kwargs`, applied by
:mod:`visfore.rl.train_policy` under the user's ``--env-kwargs``).
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
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import stable_baselines3
import torch
import yaml
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.utils import LinearSchedule

from visfore.core.errors import VisforeError

#: Algorithms of ``--algo`` and their stable-baselines3 class names.
ALGOS: dict[str, str] = {"td3": "TD3", "ppo": "PPO", "sac": "SAC"}
OFF_POLICY_ALGOS = ("td3", "sac")
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
#: Where the entries of a hyperparameter file come from (:func:`hyperparams_source`);
#: algorithms not listed here have rl-baselines3-zoo files (:data:`ZOO_SOURCE`).
OWN_SOURCES: dict[str, str] = {"sac": "visfore's own visfore/rl/hyperparams/sac.yml (zoo format)"}
#: Zoo keys that are not constructor arguments of the algorithm (``env_kwargs``: visfore's
#: extension, env options of the entry).
ZOO_SPECIAL_KEYS = ("n_timesteps", "policy", "n_envs", "normalize", "noise_type", "noise_std", "env_kwargs")
#: Keys of an entry left out of :attr:`Hyperparameters.resolved`.
NON_RESOLVED_KEYS = ("n_timesteps", "policy", "n_envs", "env_kwargs")
#: ``replay_buffer_class`` names accepted (no other class can be named).
REPLAY_BUFFER_CLASSES: dict[str, type] = {"HerReplayBuffer": HerReplayBuffer}
#: HerReplayBuffer arguments visfore (or the algorithm) sets itself.
_HER_SET_BY_ALGO = ("self", "buffer_size", "observation_space", "action_space", "env", "device", "n_envs")
#: Keys of the goal-conditioned Dict observation HerReplayBuffer needs.
GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
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
            (use --n-envs), ``env_kwargs`` (use --env-kwargs) or an argument visfore sets
            itself.
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
        if key == "env_kwargs":
            raise VisforeError("--hp env_kwargs: use --env-kwargs")
        if key in RESERVED_ALGO_KWARGS:
            raise VisforeError(f"--hp {key}: visfore sets it (use noise_type/noise_std for action noise)")
        result[key] = _parse_hp_value(raw)
    return result


_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "GELU", "LeakyReLU", "SiLU", "Sigmoid", "Softplus", "SELU", "Mish", "Identity")
_OPTIMIZERS = ("Adam", "AdamW", "RMSprop", "SGD")


def _resolve_dotted(parts: list[str], text: str, what: str = "policy_kwargs") -> Any:
    """``nn.ReLU``, ``th.nn.ReLU``, ``torch.nn.ReLU``, ``th.optim.Adam``... (allowlisted)."""
    if len(parts) >= 2 and parts[-2] == "nn" and parts[:-2] in ([], ["th"], ["torch"]):
        if parts[-1] in _ACTIVATIONS:
            return getattr(torch.nn, parts[-1])
    if len(parts) >= 2 and parts[-2] == "optim" and parts[:-2] in ([], ["th"], ["torch"]):
        if parts[-1] in _OPTIMIZERS:
            return getattr(torch.optim, parts[-1])
    raise VisforeError(
        f"{what} {text!r}: {'.'.join(parts)} is not allowed (use nn.<{'|'.join(_ACTIVATIONS)}> "
        f"or th.optim.<{'|'.join(_OPTIMIZERS)}>)"
    )


def _literal(node: ast.AST, text: str, what: str = "policy_kwargs") -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, text, what) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        keys = [_literal(k, text, what) if k is not None else None for k in node.keys]
        if not all(isinstance(k, str) for k in keys):
            raise VisforeError(f"{what} {text!r}: dictionary keys must be strings")
        return {k: _literal(v, text, what) for k, v in zip(keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, text, what)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args or any(k.arg is None for k in node.keywords):
            raise VisforeError(f"{what} {text!r}: use dict(key=value, ...)")
        return {k.arg: _literal(k.value, text, what) for k in node.keywords}
    if isinstance(node, ast.Attribute):
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.insert(0, cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            return _resolve_dotted([cur.id, *parts], text, what)
    raise VisforeError(
        f"{what} {text!r}: only dict(...), lists, numbers, strings, booleans and nn.<Activation> are allowed"
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
    return parse_policy_kwargs(parse_dict_literal(value, "policy_kwargs"))


def parse_dict_literal(text: str, what: str) -> dict[str, Any]:
    """A ``"dict(a=1, b=[2, 3])"`` or ``"{'a': 1}"`` string as a dict, by the AST walk of
    :func:`parse_policy_kwargs` (literals and allow-listed names only, never ``eval``).

    Raises:
        VisforeError: a syntax error, a non-literal expression or not a dict, naming ``what``.
    """
    text = " ".join(str(text).split())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise VisforeError(f"{what} {text!r} is not a valid expression") from None
    result = _literal(tree.body, text, what)
    if not isinstance(result, dict):
        raise VisforeError(f"{what} {text!r} must be a dict(...)")
    return result


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
    return {str(k): dict(v or {}) for k, v in data.items()}


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
        zoo_key: the entry used (None = stable-baselines3 defaults).
        zoo: that entry as in the file.
        overrides: the ``--hp`` values.
        resolved: the entry without ``n_timesteps``/``policy``/``n_envs``/``env_kwargs``,
            plus overrides.
        n_envs: the entry's ``n_envs`` (1 without one).
        env_kwargs: the entry's ``env_kwargs`` (visfore's extension: env options, under
            the user's ``--env-kwargs``); ``{}`` without one.
        selected: how the entry was chosen: ``"--hyperparams"`` (a named entry) or
            ``"env id"`` (the lookup of :func:`zoo_key`).
    """

    zoo_key: str | None
    zoo: dict[str, Any]
    overrides: dict[str, Any]
    resolved: dict[str, Any]
    n_envs: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    selected: str = "env id"


def hyperparams_file(algo: str) -> str:
    """The file of ``algo``'s entries, as named in messages: ``hyperparams/<algo>.yml``."""
    return f"hyperparams/{algo}.yml"


def hyperparams_source(algo: str, key: str | None = None) -> str:
    """Where the entries of ``hyperparams/<algo>.yml`` come from (config.yaml's
    ``hyperparameters.source``); with ``key``, where that entry comes from: only the
    robots' zoo keys (:data:`ZOO_MUJOCO_KEYS`, :data:`ZOO_PYBULLET_KEYS`) are zoo copies,
    other entries of the zoo files (e.g. ``TargetHumanoid-v0``) are visfore's own."""
    own = OWN_SOURCES.get(algo)
    if own:
        return own
    if key is not None and key not in (*ZOO_MUJOCO_KEYS.values(), *ZOO_PYBULLET_KEYS.values()):
        return f"visfore's entry {key} of visfore/rl/hyperparams/{algo}.yml (not a zoo env; its comment there says where its values come from)"
    return ZOO_SOURCE.format(algo=algo)


def hyperparams_keys(algo: str) -> list[str]:
    """The entry keys of ``hyperparams/<algo>.yml``, in file order."""
    return list(_zoo_file(algo))


def _entry_env_kwargs(algo: str, key: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    value = entry.get("env_kwargs")
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise VisforeError(
            f"{hyperparams_file(algo)} {key}: env_kwargs must be a mapping of env options, got {value!r}"
        )
    return json.loads(json.dumps(dict(value)))


def resolve_hyperparameters(
    algo: str, env_id: str, backend: str | None, overrides: Mapping[str, Any], key: str | None = None
) -> Hyperparameters:
    """Look up the entry for ``env_id`` (:func:`zoo_key`), or the entry named ``key``
    (``--hyperparams``), and apply ``overrides``.

    Raises:
        VisforeError: ``key`` is not an entry of ``hyperparams/<algo>.yml`` (the message
            lists its keys), or the entry's ``env_kwargs`` is not a mapping.
    """
    if key is not None:
        keys = hyperparams_keys(algo)
        if key not in keys:
            raise VisforeError(
                f"--hyperparams {key!r} is not an entry of {hyperparams_file(algo)}; its keys: "
                f"{', '.join(keys) if keys else '(none)'}"
            )
        chosen: str | None = key
    else:
        chosen = zoo_key(algo, env_id, backend)
    zoo = load_zoo_hyperparams(algo).get(chosen, {}) if chosen else {}
    resolved = {k: v for k, v in zoo.items() if k not in NON_RESOLVED_KEYS}
    resolved.update(json.loads(json.dumps(dict(overrides))))
    n_envs = int(zoo.get("n_envs", 1))
    env_kwargs = _entry_env_kwargs(algo, str(chosen), zoo)
    selected = "--hyperparams" if key is not None else "env id"
    return Hyperparameters(chosen, zoo, dict(overrides), resolved, n_envs, env_kwargs, selected)


def algo_class(algo: str) -> type[BaseAlgorithm]:
    """The stable-baselines3 class of ``--algo`` (``td3`` -> :class:`~stable_baselines3.TD3`)."""
    return getattr(stable_baselines3, ALGOS[algo])


def build_algo_kwargs(
    algo: str, resolved: Mapping[str, Any], action_space: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn zoo-format hyperparameters into constructor arguments of the algorithm.

    Args:
        algo: ``td3``, ``ppo`` or ``sac``.
        resolved: :attr:`Hyperparameters.resolved`.
        action_space: the env's action space (a Box) for the action noise.

    Returns:
        ``(algo_kwargs, normalize_kwargs)``: keyword arguments of ``TD3``/``PPO``/``SAC``
        (schedules, action noise, policy_kwargs, train_freq, replay_buffer_class and
        replay_buffer_kwargs converted), and the VecNormalize options.

    Raises:
        VisforeError: an unknown hyperparameter (with the valid names), a bad schedule,
            noise, policy_kwargs or replay buffer value, or action noise or a replay
            buffer for an on-policy algorithm.
    """
    params = dict(resolved)
    if params.get("replay_buffer_class") is not None and algo not in OFF_POLICY_ALGOS:
        raise VisforeError(
            f"replay_buffer_class {params['replay_buffer_class']!r}: a replay buffer is for off-policy "
            f"algorithms ({', '.join(OFF_POLICY_ALGOS)}), not {algo}"
        )
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
        elif key == "replay_buffer_class":
            kwargs[key] = parse_replay_buffer_class(value)
        elif key == "replay_buffer_kwargs":
            kwargs[key] = parse_replay_buffer_kwargs(value)
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
    if kwargs.get("replay_buffer_class") is HerReplayBuffer:
        check_her_kwargs(kwargs.get("replay_buffer_kwargs") or {})
    return kwargs, normalize


def parse_replay_buffer_class(value: Any) -> type | None:
    """``replay_buffer_class``: a name of :data:`REPLAY_BUFFER_CLASSES` (``HerReplayBuffer``,
    also as ``stable_baselines3.HerReplayBuffer``) -> the class; None stays None (the
    algorithm's default buffer).

    Raises:
        VisforeError: any other value.
    """
    if value is None:
        return None
    name = str(value).strip()
    for prefix in ("stable_baselines3.her.", "stable_baselines3."):
        name = name.removeprefix(prefix)
    if not isinstance(value, str) or name not in REPLAY_BUFFER_CLASSES:
        raise VisforeError(
            f"replay_buffer_class {value!r} is not allowed; valid: {', '.join(REPLAY_BUFFER_CLASSES)} "
            "(or leave it out for the default buffer)"
        )
    return REPLAY_BUFFER_CLASSES[name]


def parse_replay_buffer_kwargs(value: Any) -> dict[str, Any]:
    """``replay_buffer_kwargs``: a mapping, or a ``"dict(n_sampled_goal=4,
    goal_selection_strategy='future')"`` string (:func:`parse_dict_literal`); None -> ``{}``.

    Raises:
        VisforeError: another type, or a string that is not a literal dict.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        return parse_dict_literal(value, "replay_buffer_kwargs")
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return dict(value)
    raise VisforeError(f"replay_buffer_kwargs must be a mapping or a dict(...) string, got {value!r}")


def check_her_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Check ``replay_buffer_kwargs`` of a :class:`~stable_baselines3.HerReplayBuffer`:
    its own arguments only (``n_sampled_goal``, ``goal_selection_strategy``, ...), a
    known strategy and a positive ``n_sampled_goal``.

    Raises:
        VisforeError: the first bad key or value.
    """
    valid = [p for p in inspect.signature(HerReplayBuffer.__init__).parameters if p not in _HER_SET_BY_ALGO]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise VisforeError(
            f"replay_buffer_kwargs: unknown HerReplayBuffer option(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    strategy = kwargs.get("goal_selection_strategy", "future")
    strategies = ("future", "final", "episode")
    if not isinstance(strategy, str) or strategy.lower() not in strategies:
        raise VisforeError(
            f"replay_buffer_kwargs: goal_selection_strategy {strategy!r} must be one of {', '.join(strategies)}"
        )
    n_goal = kwargs.get("n_sampled_goal", 4)
    if isinstance(n_goal, bool) or not isinstance(n_goal, int) or n_goal < 1:
        raise VisforeError(f"replay_buffer_kwargs: n_sampled_goal must be an integer >= 1, got {n_goal!r}")
