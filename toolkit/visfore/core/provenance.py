"""Provenance of a run: the package versions and the command line that reproduce it.

Every pipeline that writes results (a dataset's attrs, a run's ``config.yaml``, a
report's ``meta``) records the same two things with these two functions:

- :func:`package_versions`: the installed versions of the packages that determine the
  numbers, one fixed list (:data:`PACKAGES`) for every command, so two records can be
  compared key by key;
- :func:`command_line`: the ``visfore <command> ...`` line that reproduces the run from
  its typed config, every option explicit (flags from the config's
  :func:`~visfore.core.config.option` declarations), shell-quoted.

Nothing here imports the packages it reports on (the versions come from the installed
distributions' metadata), so recording provenance never loads torch or Ray.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from visfore.core.config import ConfigBase, option_spec

__all__ = ["PACKAGES", "command_line", "invocation", "package_versions"]

#: Distributions whose versions are recorded (distribution name -> import name, used as
#: a fallback when the distribution has no metadata, e.g. a source checkout on sys.path).
PACKAGES: dict[str, str] = {
    "visfore": "visfore",
    "visfore-envs": "visfore_envs",
    "gymnasium": "gymnasium",
    "mujoco": "mujoco",
    "pybullet": "pybullet",
    "numpy": "numpy",
    "zarr": "zarr",
    "torch": "torch",
    "stable-baselines3": "stable_baselines3",
}


def package_versions(extra: Iterable[str] = ()) -> dict[str, str | None]:
    """Versions of the packages that determine a run's numbers.

    Args:
        extra: further distribution names to record (after :data:`PACKAGES`).

    Returns:
        ``{distribution: version or None}`` for every name of :data:`PACKAGES` (in that
        order) and ``extra``, then ``"python": "3.X.Y"``. A distribution without metadata
        falls back to its module's ``__version__`` when it is already imported, else None
        (not installed). Nothing is imported.
    """
    names = dict(PACKAGES)
    for dist in extra:
        names.setdefault(dist, dist.replace("-", "_"))
    versions: dict[str, str | None] = {}
    for dist, module in names.items():
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(module)
            version = getattr(mod, "__version__", None) if mod is not None else None
            versions[dist] = str(version) if version is not None else None
    versions["python"] = ".".join(map(str, sys.version_info[:3]))
    return versions


def _flag(name: str, flags: tuple[str, ...], value: Any) -> str:
    """The long flag of a field (``--out``), or for a bool the spelling that sets ``value``."""
    if flags:
        first = flags[0].split("/")
        if isinstance(value, bool) and len(first) == 2:
            return (first[0] if value else first[1]).strip()
        return first[0].strip()
    dashed = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{dashed}" if value else f"--no-{dashed}"
    return f"--{dashed}"


def _text(value: Any) -> str:
    """A typed value as command-line text: sequences comma-joined, mappings as JSON."""
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e16 else repr(value)
    return str(value)


def command_line(
    command: str,
    config: ConfigBase,
    *,
    exclude: Iterable[str] = (),
    text: Mapping[str, str | None] | None = None,
    extra: Iterable[str] = (),
) -> str:
    """The shell-quoted ``visfore <command> ...`` line that reproduces ``config``.

    Every CLI field of the config (see :class:`~visfore.core.config.OptionSpec`) is
    written explicitly with its first declared flag, in field order (positional
    arguments first): a bool as its ``--x``/``--no-x`` spelling (a one-way switch such as
    ``--resume`` only when true), a repeatable option once per value, a sequence
    comma-joined (so a field's ``parse=`` must accept ``a,b``), a mapping as JSON. None
    values and empty mappings/repeatables are left out (they are the defaults).

    Args:
        command: the command name (``"collect"``).
        config: the typed config of the run.
        exclude: field names to leave out (runtime-only options such as ``resume``).
        text: field name -> its command-line text, overriding the generic form (None
            leaves the field out), e.g. ``{"out": storage.display_name(out)}``.
        extra: arguments appended at the end (e.g. ``["--ray", "local"]``).
    """
    skip, override = set(exclude), dict(text or {})
    positional: list[str] = []
    options: list[str] = []
    for f in dataclasses.fields(config):
        spec = option_spec(f)
        if not spec.cli or f.name in skip:
            continue
        value = getattr(config, f.name)
        if f.name in override:
            if override[f.name] is None:
                continue
            value = override[f.name]
        if value is None or (not value and (isinstance(value, Mapping) or spec.repeatable)):
            continue
        if spec.argument:
            positional.append(_text(value))
            continue
        if isinstance(value, bool):
            flags = spec.flags[0].split("/") if spec.flags else ()
            if spec.flags and len(flags) == 1 and not value:
                continue  # a one-way switch (``--resume``) that is off
            options.append(_flag(f.name, spec.flags, value))
        elif spec.repeatable and isinstance(value, (list, tuple)):
            for item in value:
                options += [_flag(f.name, spec.flags, item), _text(item)]
        else:
            options += [_flag(f.name, spec.flags, value), _text(value)]
    return shlex.join(["visfore", command, *positional, *options, *extra])


def invocation(argv: list[str] | None = None) -> str:
    """The command line this process was started with, shell-quoted (``visfore ...``
    when started through the console script). Use :func:`command_line` to record a run;
    this is the literal invocation, for logs."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name == "visfore":
        return shlex.join(["visfore", *argv[1:]])
    return shlex.join(argv)
