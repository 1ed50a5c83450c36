"""Environment names for the toolkit: short names, registered ids and env creation.

``--env`` accepts a short name (``reacher`` -> ``ReacherPlane-v0``, ``reacher3d`` ->
``Reacher3D-v0``, ``hopper`` -> ``PerturbHopper-v0``, ``walker2d``, ``ant``, ``halfcheetah``), any id registered by :mod:`visfore_envs`, or any other registered
Gymnasium id. visfore envs are created with ``obs_mode="state+pixels"`` and return the
frame in the observation; other Gymnasium envs are created with
``render_mode="rgb_array"`` and their frame comes from ``env.render()`` (MuJoCo envs
accept ``width``/``height``; envs that do not are rejected with a clear error).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from visfore.core.errors import VisforeError

# The data and rl configs import this module at CLI start-up (parse_env_kwargs), so it
# stays light: gymnasium and visfore_envs are imported inside the functions that use them.

#: Short names accepted by ``--env`` and the visfore ids they stand for.
SHORT_NAMES: dict[str, str] = {
    "reacher": "ReacherPlane-v0",
    "reacher3d": "Reacher3D-v0",
    "hopper": "PerturbHopper-v0",
    "walker2d": "PerturbWalker2d-v0",
    "ant": "PerturbAnt-v0",
    "halfcheetah": "PerturbHalfCheetah-v0",
}

#: Keyword arguments the toolkit sets itself when it creates an env.
RESERVED_ENV_KWARGS = ("obs_mode", "width", "height", "render_mode", "max_episode_steps")


def _import_visfore_envs() -> bool:
    """Import :mod:`visfore_envs` (registers its ids); False when it is not installed."""
    try:  # lazy: may be missing (False), and it picks the GL backend when first imported
        import visfore_envs  # noqa: F401
    except ImportError:
        return False
    return True


def visfore_env_ids() -> list[str]:
    """Sorted ids registered by :mod:`visfore_envs` (empty when it is not installed)."""
    if not _import_visfore_envs():
        return []
    import gymnasium as gym  # lazy: see the note at the top

    ids = []
    for env_id, spec in gym.registry.items():
        entry = spec.entry_point
        module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
        if str(module).startswith("visfore_envs"):
            ids.append(env_id)
    return sorted(ids)


def is_visfore_env(env_id: str) -> bool:
    """True when ``env_id`` is registered by :mod:`visfore_envs`."""
    return env_id in visfore_env_ids()


def resolve_env_id(name: str) -> str:
    """Turn an ``--env`` value into a registered Gymnasium id.

    Args:
        name: a short name (case-insensitive, see :data:`SHORT_NAMES`), a visfore id or
            any registered Gymnasium id (exact spelling).

    Returns:
        The registered id, e.g. ``"ReacherPlane-v0"`` for ``"reacher"``.

    Raises:
        VisforeError: the name is neither a short name nor a registered id; the message
            lists the valid short names and visfore ids.
    """
    import gymnasium as gym  # lazy: see the note at the top

    have_envs = _import_visfore_envs()
    key = name.strip()
    if key.lower() in SHORT_NAMES:
        env_id = SHORT_NAMES[key.lower()]
        if env_id in gym.registry:
            return env_id
        if not have_envs:
            raise VisforeError(f"env {name!r} needs the visfore_envs package, which is not importable")
        raise VisforeError(f"env {name!r} ({env_id}) is not registered by visfore_envs")
    if key in gym.registry:
        return key
    short = ", ".join(SHORT_NAMES)
    ids = ", ".join(visfore_env_ids()) or "none: visfore_envs is not importable"
    raise VisforeError(
        f"unknown env {name!r}; valid short names: {short}; visfore ids: {ids} (any registered Gymnasium id also works)"
    )


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split_pairs(text: str) -> list[str]:
    """Split ``a=1,b=[1,2]`` at the commas that are not inside brackets or quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def parse_env_kwargs(values: str | Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse ``--env-kwargs`` values into a JSON-serialisable dict (:func:`parse_kwargs`
    with the keys the toolkit sets, :data:`RESERVED_ENV_KWARGS`, refused)."""
    return parse_kwargs(values, "--env-kwargs", RESERVED_ENV_KWARGS)


def parse_kwargs(
    values: str | Iterable[str] | Mapping[str, Any] | None, flag: str, reserved_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """Parse the values of a keyword-argument option (``flag``, e.g. ``--env-kwargs``,
    ``--policy-kwargs``) into a JSON-serialisable dict.

    Each value is either a JSON object (``'{"reward_mode": "pixels"}'``) or one or more
    ``key=value`` pairs separated by commas (``reward_mode=pixels,frame_skip=2``); a
    value is read as JSON when it parses (numbers, ``true``, lists), else as a string.
    Later values override earlier ones. A mapping is returned as a plain dict.

    Raises:
        VisforeError: a value is neither a JSON object nor ``key=value`` pairs, a key is
            in ``reserved_keys``, or the result is not JSON-serialisable; named with ``flag``.
    """
    if values is None:
        return {}
    result: dict[str, Any] = {}
    if isinstance(values, Mapping):
        result.update(values)
    else:
        if isinstance(values, str):
            values = [values]
        for value in values:
            text = value.strip()
            if not text:
                continue
            if text.startswith("{"):
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise VisforeError(f"{flag} {value!r} is not valid JSON ({exc.msg})") from None
                if not isinstance(parsed, dict):
                    raise VisforeError(f"{flag} {value!r} is not a JSON object")
                result.update(parsed)
                continue
            for pair in _split_pairs(text):
                key, sep, raw = pair.partition("=")
                if not sep or not key.strip().isidentifier():
                    raise VisforeError(f"{flag} {pair!r} is not key=value or a JSON object")
                result[key.strip()] = _parse_value(raw)
    reserved = sorted(set(result) & set(reserved_keys))
    if reserved:
        raise VisforeError(f"{flag} may not set {', '.join(reserved)}: the toolkit sets it")
    try:
        return json.loads(json.dumps(result, sort_keys=True))
    except (TypeError, ValueError):
        raise VisforeError(f"{flag} {result!r} is not JSON-serialisable") from None


def make_env(
    env_id: str,
    *,
    size: int,
    max_episode_steps: int,
    env_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """Create ``env_id`` for collection with square frames of ``size`` pixels.

    visfore envs get ``obs_mode="state+pixels"`` and return ``{"state": (S,) float,
    "pixels": (size, size, 3) uint8}``; other Gymnasium envs get
    ``render_mode="rgb_array"`` (see :func:`pixel_source`). Episodes are truncated after
    ``max_episode_steps`` actions.

    Raises:
        VisforeError: the env rejects the keyword arguments (the env's own message).
    """
    import gymnasium as gym  # lazy: see the note at the top

    kwargs = dict(env_kwargs or {})
    if is_visfore_env(env_id):
        kwargs.update(obs_mode="state+pixels", width=size, height=size)
    else:
        kwargs.update(render_mode="rgb_array", width=size, height=size)
    try:
        return gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)
    except (TypeError, ValueError, gym.error.Error) as exc:
        raise env_creation_error(env_id, env_kwargs or {}, exc, label="env kwargs ") from None


def env_creation_error(env_id: str, kwargs: Mapping[str, Any], exc: BaseException, *, label: str = "") -> VisforeError:
    """The one-line error of an env that ``gym.make`` could not create.

    Args:
        env_id: the env id.
        kwargs: the keyword arguments it was given (shown as JSON).
        exc: what ``gym.make`` raised; the first line of its message is kept, without
            Gymnasium's "was raised from the environment creator" suffix.
        label: text before the JSON (e.g. ``"env kwargs "``).

    Returns:
        ``VisforeError("cannot create ENV with {label}{kwargs}: MESSAGE")``, to raise
        ``from None``.
    """
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    message = message.split(" was raised from the environment creator")[0]
    return VisforeError(f"cannot create {env_id} with {label}{json.dumps(dict(kwargs))}: {message}")


def pixel_source(env_id: str) -> str:
    """``"obs"`` for visfore envs (the frame is ``obs["pixels"]``), else ``"render"``."""
    return "obs" if is_visfore_env(env_id) else "render"
