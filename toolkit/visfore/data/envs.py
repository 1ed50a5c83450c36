"""Environment names for the toolkit: short names, registered ids and env creation.

``--env`` accepts a short name (``reacher`` -> ``ReacherPlane-v0``, ``reacher3d`` ->
``Reacher3D-v0``, ``hopper`` -> ``PerturbHopper-v0``, ``walker2d``, ``ant``, ``halfcheetah``), any id registered by :mod:`visfore_envs`, or any other registered
Gymnasium id. visfore envs are created with ``obs_mode="state+pixels"`` and return the
frame in the observation; other Gymnasium envs are created with
``render_mode="rgb_array"`` and their frame comes from ``env.render()`` (MuJoCo envs
accept ``width``/``height``; envs that do not are rejected with a clear error).

``--env-kwargs`` (and ``--policy-kwargs``, :mod:`visfore.data.policies`) are checked
against the constructor's signature (:func:`keyword_parameters`): a value of the wrong
type for its annotation is refused before the env is built, naming key, value and type;
an unknown key that the env refuses is reported with the valid keys, their types and
defaults (:func:`env_creation_error`).
"""

from __future__ import annotations

import functools
import inspect
import json
import numbers
import re
import typing
from typing import Any, Iterable, Literal, Mapping, Union, get_args, get_origin

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


# -- keyword arguments checked against a constructor's signature --------------------------


#: The default of a key whose default cannot be told (shown without one).
_NO_DEFAULT_INFO: Any = object()


def keyword_parameters(target: Any, skip: Iterable[str] = ()) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword arguments that calling ``target`` (a class or a function) accepts.

    A class's are those of every ``__init__`` along its MRO that passes ``**kwargs`` on
    (the rule of ``visfore_envs``' ``option_names``), in signature order, less the
    required positional parameters of the base classes (the subclass passes those
    itself); a class with an ``option_names()`` classmethod (the visfore envs) gives the
    names itself, and its ``v5_defaults`` the defaults of names no signature has.
    Annotations are resolved where they can be (``"float | None"`` -> ``Optional[float]``).

    Args:
        target: the class or function.
        skip: names the caller sets itself (left out).

    Returns:
        ``(name -> inspect.Parameter, open)``; ``open`` is True when ``target`` is a
        function that takes ``**kwargs`` (or has no signature), so that any other key may
        be valid too.
    """
    skipped = set(skip) | {"self"}
    found: dict[str, inspect.Parameter] = {}
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    is_class = inspect.isclass(target)
    if is_class:
        functions = [k.__dict__["__init__"] for k in target.__mro__ if k is not object and "__init__" in k.__dict__]
    else:
        functions = [target]
    is_open = False
    for depth, function in enumerate(functions):
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # a builtin without a signature
            return found, True
        try:
            hints = typing.get_type_hints(function)
        except Exception:  # noqa: BLE001 - an annotation that does not resolve: keep its text
            hints = {}
        passes_on = False
        for p in signature.parameters.values():
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                passes_on = True
            elif p.kind in keyword and p.name not in skipped and p.name not in found:
                supplied_by_subclass = (
                    depth > 0 and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is p.empty
                )
                if not supplied_by_subclass:
                    found[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
        if not passes_on:
            break
        is_open = not is_class
    names = getattr(target, "option_names", None) if is_class else None
    if callable(names):
        try:
            valid = [n for n in names() if n not in skipped]
        except Exception:  # noqa: BLE001 - not the classmethod we know: keep the signatures
            return found, is_open
        defaults = getattr(target, "v5_defaults", None)
        defaults = defaults if isinstance(defaults, Mapping) else {}
        params: dict[str, inspect.Parameter] = {}
        for n in valid:
            if n in defaults:  # the class's own default wins (the hopper's frame_skip is 4, not 2)
                value = defaults[n]
                plain = type(value) if type(value) in (bool, int, float, str) else inspect.Parameter.empty
                params[n] = inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=plain)
            else:
                params[n] = found.get(n) or inspect.Parameter(
                    n, inspect.Parameter.KEYWORD_ONLY, default=_NO_DEFAULT_INFO
                )
        found = params
    return found, is_open


def _type_text(tp: Any) -> str:
    if tp is inspect.Parameter.empty:
        return ""
    if tp is type(None):
        return "None"
    if isinstance(tp, str):
        return tp
    if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
        return " | ".join(_type_text(a) for a in get_args(tp))
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def describe_parameters(params: Mapping[str, inspect.Parameter]) -> str:
    """``"theta (float, default 0.3), run (str, required)"``: each key with its type and
    default, for error messages; ``"none"`` when there are none."""
    items = []
    for name, p in params.items():
        parts = [t for t in (_type_text(p.annotation),) if t]
        if p.default is inspect.Parameter.empty:
            parts.append("required")
        elif p.default is not _NO_DEFAULT_INFO:
            parts.append(f"default {p.default!r}")
        items.append(f"{name} ({', '.join(parts)})" if parts else name)
    return ", ".join(items) or "none"


def _value_matches(value: Any, tp: Any) -> bool | None:
    """Whether ``value`` fits the annotation ``tp``: True/False for the plain types (bool,
    int, float, str, None, Literal and unions of them), None when it cannot be told."""
    if tp is Any or tp is inspect.Parameter.empty or isinstance(tp, str):
        return None
    if tp is type(None):
        return value is None
    if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
        results = [_value_matches(value, a) for a in get_args(tp)]
        if any(results):
            return True
        return None if None in results else False
    if get_origin(tp) is Literal:
        return value in get_args(tp)
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"
    if tp is bool:
        return is_bool
    if tp is int:
        return isinstance(value, numbers.Integral) and not is_bool
    if tp is float:
        return isinstance(value, numbers.Real) and not is_bool
    if tp is str:
        return isinstance(value, str)
    return None


def check_keyword_values(kwargs: Mapping[str, Any], params: Mapping[str, inspect.Parameter]) -> None:
    """Check each value of ``kwargs`` whose key is in ``params`` against its annotation
    (plain types only, see :func:`_value_matches`; ints are accepted for floats).

    Raises:
        VisforeError: ``"theta='abc': expected float, got str"`` for the first bad value.
    """
    for key, value in kwargs.items():
        p = params.get(key)
        if p is not None and _value_matches(value, p.annotation) is False:
            raise VisforeError(f"{key}={value!r}: expected {_type_text(p.annotation)}, got {type(value).__name__}")


def unknown_keys_error(kwargs: Mapping[str, Any], params: Mapping[str, inspect.Parameter]) -> str | None:
    """``"unknown key 'foo'; valid keys: a (int, default 1), ..."`` when ``kwargs`` has keys
    that are not in ``params``, else None."""
    unknown = [k for k in kwargs if k not in params]
    if not unknown:
        return None
    plural = "s" if len(unknown) > 1 else ""
    return f"unknown key{plural} {', '.join(map(repr, unknown))}; valid keys: {describe_parameters(params)}"


def env_parameters(
    env_id: str, env_kwargs: Mapping[str, Any] | None = None
) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword arguments of registered ``env_id``'s constructor, less those the
    toolkit sets (:data:`RESERVED_ENV_KWARGS`): :func:`keyword_parameters` of the registry
    entry point, or for a factory function that passes ``**kwargs`` on (the visfore
    locomotion ids) of the class of the env it makes (built once per process, with the
    factory's own arguments of ``env_kwargs``, e.g. ``backend``).

    Returns:
        ``(name -> inspect.Parameter, open)`` as :func:`keyword_parameters`; ``({}, True)``
        when ``env_id`` has no usable entry point.
    """
    import gymnasium as gym  # lazy: see the note at the top
    from gymnasium.envs.registration import load_env_creator

    _import_visfore_envs()
    try:
        spec = gym.spec(env_id)
        creator: Any = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    except Exception:  # noqa: BLE001 - no usable entry point
        return {}, True
    params, is_open = keyword_parameters(creator, RESERVED_ENV_KWARGS)
    if not is_open or inspect.isclass(creator):
        return params, is_open
    own = {k: v for k, v in (env_kwargs or {}).items() if k in params}
    try:
        made, is_open = _made_class_parameters(env_id, json.dumps(own, sort_keys=True, default=repr))
    except Exception:  # noqa: BLE001 - its defaults do not build: keep what we know
        return params, True
    # the class's keys, with what the factory's own signature tells of its keys (backend)
    merged = {**params, **made}
    return {n: params[n] if n in params and p.default is _NO_DEFAULT_INFO else p for n, p in merged.items()}, is_open


@functools.lru_cache(maxsize=32)
def _made_class_parameters(env_id: str, own_json: str) -> tuple[dict[str, inspect.Parameter], bool]:
    """:func:`keyword_parameters` of the class of the env that ``env_id``'s factory makes
    with its own arguments ``own_json`` (the env is built once, then closed)."""
    import gymnasium as gym  # lazy: see the note at the top
    from gymnasium.envs.registration import load_env_creator

    spec = gym.spec(env_id)
    creator: Any = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    env = creator(**{**spec.kwargs, **json.loads(own_json)})
    try:
        return keyword_parameters(type(getattr(env, "unwrapped", env)), RESERVED_ENV_KWARGS)
    finally:
        env.close()


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
        VisforeError: a value of the wrong type for the constructor's annotation (key,
            value and expected type), an unknown key (listing the valid keys with their
            types and defaults), or the env rejects the keyword arguments (its message).
    """
    import gymnasium as gym  # lazy: see the note at the top

    if env_kwargs:
        params, _ = env_parameters(env_id, env_kwargs)
        try:
            check_keyword_values(env_kwargs, params)
        except VisforeError as exc:
            raise VisforeError(f"--env-kwargs for {env_id}: {exc}") from None
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
        ``from None``. When the env refused keys it does not know (a ``TypeError`` or an
        "unknown option" error), MESSAGE names them and lists the valid keys with their
        types and defaults (:func:`env_parameters`).
    """
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    message = message.split(" was raised from the environment creator")[0]
    if isinstance(exc, TypeError) or "unknown option" in message:
        params, is_open = env_parameters(env_id, kwargs)
        given = {k: v for k, v in kwargs.items() if k not in RESERVED_ENV_KWARGS}
        unknown = None if is_open else unknown_keys_error(given, params)
        refused = re.search(r"unexpected keyword argument '(\w+)'", message)
        if unknown is not None:
            message = unknown
        elif refused and refused.group(1) in RESERVED_ENV_KWARGS:
            key = refused.group(1)
            why = (
                " (frames of a chosen size need an env that takes width and height)"
                if key in ("width", "height")
                else ""
            )
            message = f"it takes no {key!r} argument, which visfore passes{why}"
    return VisforeError(f"cannot create {env_id} with {label}{json.dumps(dict(kwargs))}: {message}")


def pixel_source(env_id: str) -> str:
    """``"obs"`` for visfore envs (the frame is ``obs["pixels"]``), else ``"render"``."""
    return "obs" if is_visfore_env(env_id) else "render"
