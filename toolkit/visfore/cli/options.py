"""Typer commands generated from the typed configs of :mod:`visfore.core.config`.

:func:`typer_command` turns a config dataclass into the parameters of a Typer command:
one option per field (flags, help text, default and ``Literal`` choices from the field's
:func:`~visfore.core.config.option` declaration), so no option is declared twice. The
command body receives the built config.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Sequence, Union, get_args, get_origin

import typer
from typer.core import TyperCommand

from visfore.cli.help import HIDDEN_FLAGS_ATTR
from visfore.core.config import ConfigBase, literal_choices, option_spec

__all__ = ["REPEATABLE_METAVAR", "ResumePathCommand", "config_parameters", "deprecated_flags", "typer_command"]

_SCALARS = (int, float, str, bool, Path)


#: The metavar of an option by its field type, where its declaration gives none: one
#: upper-case word (``--episodes N``), never Typer's ``<int>`` or ``<list[str]>``.
_TYPE_METAVARS: dict[Any, str] = {int: "N", float: "FLOAT", str: "TEXT", Path: "PATH"}
#: The metavar of a repeatable option (``--hp``, ``--set``, ``--env-kwargs``).
REPEATABLE_METAVAR = "KEY=VALUE"


def _cli_annotation(tp: Any, has_parse: bool, repeatable: bool) -> tuple[Any, str | None]:
    """(annotation for Typer, default metavar) of a field type: the choices of a
    ``Literal`` as ``[a|b|c]``, ``KEY=VALUE`` for a repeatable option, else one word by
    type (:data:`_TYPE_METAVARS`, ``TEXT`` for parsed strings); None for a bool flag."""
    optional = False
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        tp = args[0] if len(args) == 1 else str
    choices = literal_choices(tp)
    metavar: str | None
    if repeatable:
        base: Any = list[str]
        metavar = REPEATABLE_METAVAR
    elif choices is not None:
        # Checked by the config (one-line error), not by click; --help shows them.
        base = str
        metavar = "[" + "|".join(str(c) for c in choices) + "]"
    elif has_parse or tp not in _SCALARS:
        base = str
        metavar = "TEXT"
    else:
        base = tp
        metavar = None if tp is bool else _TYPE_METAVARS[tp]
    return (Union[base, None] if optional or has_parse or repeatable else base), metavar


def _flags(name: str, tp: Any, declared: tuple[str, ...], deprecated: tuple[str, ...]) -> tuple[str, ...]:
    if declared:
        flags = declared
    elif tp is bool:
        flag = name.replace("_", "-")
        flags = (f"--{flag}/--no-{flag}",)
    else:
        flags = ("--" + name.replace("_", "-"),)
    return flags + deprecated


def config_parameters(config_cls: type[ConfigBase], exclude: Sequence[str] = ()) -> list[inspect.Parameter]:
    """One keyword-only :class:`inspect.Parameter` with a ``typer.Option`` (or
    ``typer.Argument``) default per CLI field of ``config_cls``, in field order
    (positional arguments first)."""
    types = config_cls.field_types()
    params: list[inspect.Parameter] = []
    for f in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        spec = option_spec(f)
        if not spec.cli or f.name in exclude:
            continue
        tp = types[f.name]
        annotation, default_metavar = _cli_annotation(tp, spec.parse is not None, spec.repeatable)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = None
        else:
            default = ...
        if spec.parse is not None and default is not None and default is not ...:
            default = _cli_text(default)
        kwargs: dict[str, Any] = {"help": spec.help, "show_default": default not in (None, ...)}
        # an argument is named by its field (RUN, PATH), as in the usage line
        metavar = spec.metavar or (f.name.upper() if spec.argument else default_metavar)
        if metavar:
            kwargs["metavar"] = metavar
        if spec.argument:
            info = typer.Argument(default, **kwargs)
        else:
            bare = tp if get_origin(tp) is not Union else next(a for a in get_args(tp) if a is not type(None))
            info = typer.Option(default, *_flags(f.name, bare, spec.flags, spec.deprecated), **kwargs)
        kind = inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(f.name, kind, default=info, annotation=annotation))
    params.sort(key=lambda p: not isinstance(p.default, typer.models.ArgumentInfo))
    return params


def deprecated_flags(config_cls: type[ConfigBase], exclude: Sequence[str] = ()) -> frozenset[str]:
    """Every deprecated flag spelling of ``config_cls``'s CLI fields (``--out-dir``, and
    ``--no-progress`` of a declaration ``" /--no-progress"``)."""
    flags: set[str] = set()
    for f in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        spec = option_spec(f)
        if spec.cli and f.name not in exclude:
            flags.update(part.strip() for decl in spec.deprecated for part in decl.split("/") if part.strip())
    return frozenset(flags)


def _cli_text(value: Any) -> Any:
    """A typed default shown as its command-line text (``(0.5, 1.5)`` -> ``0.5,1.5``)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def typer_command(
    config_cls: type[ConfigBase],
    *,
    exclude: Sequence[str] = (),
    extra: Sequence[inspect.Parameter] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate ``body(config, **extra)`` into a Typer command whose options are the
    fields of ``config_cls``.

    The generated command parses each option (``parse=`` of its declaration turns a
    string into the typed value), builds the config (which checks ``Literal`` choices)
    and calls the body with it; ``extra`` parameters (e.g. ``--ray``) are passed to the
    body by name. Fields in ``exclude`` keep their defaults.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    params = config_parameters(config_cls, exclude) + list(extra)
    extra_names = {p.name for p in extra}

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(body)
        def command(**kwargs: Any) -> Any:
            values: dict[str, Any] = {}
            for name, value in kwargs.items():
                if name in extra_names:
                    continue
                spec = option_spec(fields[name])
                if value is None and fields[name].default_factory is not dataclasses.MISSING:
                    continue
                if spec.parse is not None and value is not None:
                    value = spec.parse(value)
                elif isinstance(value, Path):
                    value = str(value)
                values[name] = value
            cfg = config_cls(**values)
            return body(cfg, **{k: kwargs[k] for k in extra_names})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {}
        # --help leaves the deprecated spellings out (visfore.cli.help reads this)
        setattr(command, HIDDEN_FLAGS_ATTR, deprecated_flags(config_cls, exclude))
        return command

    return decorate


class ResumePathCommand(TyperCommand):
    """Accepts the old spelling ``--resume RUN_DIR`` (a path) as ``--resume --out RUN_DIR``.

    ``--resume`` is a switch like every command's; the run directory is ``--out``. A
    value after ``--resume`` that does not start with ``-`` is taken as the run
    directory (for commands without positional arguments: train-policy,
    train-through-model).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        fixed: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                fixed.extend(args[i:])
                break
            if arg.startswith("--resume="):
                fixed += ["--resume", "--out", arg.split("=", 1)[1]]
            elif arg == "--resume" and i + 1 < len(args) and not args[i + 1].startswith("-"):
                fixed += ["--resume", "--out", args[i + 1]]
                i += 1
            else:
                fixed.append(arg)
            i += 1
        return super().parse_args(ctx, fixed)
