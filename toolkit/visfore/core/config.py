"""Typed command configurations: every option declared once.

A command's options are the fields of one dataclass, a subclass of :class:`ConfigBase`
(``class TrainConfig(ConfigBase, command="train-model")``; the base makes it a dataclass).
Each field is declared with :func:`option`, which holds its default, its help text and how it
is spelled on the command line. Everything else is generated from that one declaration:

- the Typer command (:func:`visfore.cli.options.typer_command`), so ``--help`` shows the
  same text and default as the Python API;
- the class docstring's ``Options`` list (so the API reference shows them too);
- loading from a mapping (``config.yaml``, sweep files, ``--resume``) with
  :meth:`ConfigBase.from_dict`, which accepts ``batch_size`` or ``batch-size`` keys and
  names the valid options when a key is unknown;
- choices: a field typed ``Literal["a", "b"]`` accepts only those values, checked when
  the config is built (:meth:`ConfigBase.check_choices`) and shown by ``--help``.

The Python API takes typed values (``tuple[float, float]``, ``list[str]``); a field whose
command-line form is a string (``"0.5-1.5"``, ``"a,b"``) declares ``parse=``, the function
that turns the string into the typed value. :meth:`ConfigBase.from_dict` applies it to a
string value too, so a YAML file may use either form.

This module imports nothing else of visfore's and no CLI library.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Literal,
    Mapping,
    Sequence,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

try:  # Python >= 3.11
    from typing import dataclass_transform
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import dataclass_transform

from visfore.core.errors import VisforeError

__all__ = ["ConfigBase", "OptionSpec", "literal_choices", "option", "option_spec"]

C = TypeVar("C", bound="ConfigBase")
_SPEC_KEY = "visfore_option"


@dataclass(frozen=True)
class OptionSpec:
    """How one config field appears on the command line (kept in the field's metadata).

    Attributes:
        help: one or two sentences; the ``--help`` text and the API docs' text.
        flags: explicit flags, e.g. ``("--out", "-o")``; default ``--field-name``. A bool
            field gets ``--name/--no-name`` unless ``flags`` gives its own (``("--resume",)``
            for a one-way switch, ``("--shrink-horizon/--fixed-horizon",)`` for a pair).
        parse: turns the command-line string (or a string in a YAML file) into the field's
            typed value, raising :class:`~visfore.core.errors.VisforeError` on bad text.
        cli: False for fields that only the Python API or a resume sets.
        metavar: the placeholder shown by ``--help``; default: the choices of a ``Literal``
            (``[a|b]``), ``KEY=VALUE`` for a repeatable option, the field name in capitals
            for an argument (``RUN``), else by type (``N``, ``FLOAT``, ``TEXT``, ``PATH``);
            none for a bool flag. Give one upper-case word or pattern (``LO-HI``).
        argument: a positional argument instead of an option.
        repeatable: the option may be given several times (a list of strings).
        deprecated: old flag spellings still accepted (``--help`` hides them).
    """

    help: str
    flags: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None
    cli: bool = True
    metavar: str | None = None
    argument: bool = False
    repeatable: bool = False
    deprecated: tuple[str, ...] = ()


def option(
    *,
    default: Any = MISSING,
    help: str,
    flags: Sequence[str] = (),
    parse: Callable[[Any], Any] | None = None,
    default_factory: Callable[[], Any] | Any = MISSING,
    cli: bool = True,
    metavar: str | None = None,
    argument: bool = False,
    repeatable: bool = False,
    deprecated: Sequence[str] = (),
) -> Any:
    """Declare a config field: its default and everything the CLI and docs need.

    Args:
        default: the default value (omit for a required option); a keyword, as type
            checkers read field specifiers (PEP 681) by keyword only.
        help: the help text (``--help`` and the API docs).
        flags, parse, cli, metavar, argument, repeatable, deprecated: see
            :class:`OptionSpec`.
        default_factory: for mutable defaults (``dict``, ``list``).

    Returns:
        A :func:`dataclasses.field` carrying an :class:`OptionSpec` in its metadata.
    """
    spec = OptionSpec(
        help=help,
        flags=tuple(flags),
        parse=parse,
        cli=cli,
        metavar=metavar,
        argument=argument,
        repeatable=repeatable,
        deprecated=tuple(deprecated),
    )
    kwargs: dict[str, Any] = {"metadata": {_SPEC_KEY: spec}}
    if default_factory is not MISSING:
        kwargs["default_factory"] = default_factory
    elif default is not MISSING:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


def option_spec(f: dataclasses.Field) -> OptionSpec:
    """The :class:`OptionSpec` of a config field (a bare field gets an empty help text)."""
    spec = f.metadata.get(_SPEC_KEY)
    return spec if isinstance(spec, OptionSpec) else OptionSpec(help="")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Optional[Literal[...]]``) type, else None."""
    inner, _ = _unwrap_optional(tp)
    if get_origin(inner) is Literal:
        return get_args(inner)
    return None


@dataclass_transform(field_specifiers=(option, dataclasses.field))
class ConfigBase:
    """The base of every command config: subclasses become dataclasses whose docstring
    lists every option (from the :func:`option` declarations).

    Subclass with the command's name, for error messages::

        class TrainConfig(ConfigBase, command="train-model"):
            epochs: int = option(default=10, help="Total training epochs.")
    """

    #: The command these options belong to (``"train-model"``), for error messages.
    command: ClassVar[str] = ""
    #: Field name -> resolved type, computed once per class (checked on every construction).
    _field_types: ClassVar[dict[str, Any]] = {}

    if TYPE_CHECKING:
        # set by dataclass() in __init_subclass__; declared so that type checkers see every
        # config as a dataclass instance (dataclasses.fields / asdict / replace)
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __init_subclass__(cls, *, command: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if command:
            cls.command = command
        dataclass(cls)
        cls._field_types = typing.get_type_hints(cls)
        cls.__doc__ = (cls.__doc__ or cls.__name__).rstrip() + _options_doc(cls, cls._field_types)

    def __post_init__(self) -> None:
        self.check_choices()

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Field name -> resolved type annotation (a copy)."""
        return dict(cls._field_types)

    def check_choices(self) -> None:
        """Check every ``Literal``-typed field.

        Raises:
            VisforeError: a value outside its choices, naming the option and the choices.
        """
        types = self._field_types
        for f in dataclasses.fields(self):
            choices = literal_choices(types[f.name])
            value = getattr(self, f.name)
            if choices is not None and value is not None and value not in choices:
                flag = "--" + f.name.replace("_", "-")
                raise VisforeError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict of every field (YAML/JSON-safe; tuples become lists)."""

        def plain(v: Any) -> Any:
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], mapping: Mapping[str, Any]) -> C:
        """Build from a mapping of field names (``batch_size`` or ``batch-size``).

        String values of fields that declare ``parse`` are parsed as on the command line,
        and lists become tuples where the field is a tuple.

        Raises:
            VisforeError: an unknown key (listing the valid ones), or a bad value.
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {str(k).replace("-", "_"): v for k, v in mapping.items()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            what = f"{cls.command} option" if cls.command else "option"
            raise VisforeError(f"unknown {what}(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        types = cls._field_types
        for name, value in values.items():
            spec = option_spec(known[name])
            inner, _ = _unwrap_optional(types[name])
            if isinstance(value, str) and spec.parse is not None and inner is not str:
                values[name] = spec.parse(value)
            elif isinstance(value, list) and get_origin(inner) is tuple:
                values[name] = tuple(value)
        return cls(**values)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)


def _type_text(tp: Any) -> str:
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _options_doc(cls: type, types: Mapping[str, Any]) -> str:
    lines = ["", "", "Options (command-line flag = field name with dashes):", ""]
    for f in dataclasses.fields(cls):
        spec = option_spec(f)
        if f.default is not MISSING:
            default = f" Default ``{f.default!r}``."
        elif f.default_factory is not MISSING:
            default = f" Default ``{f.default_factory()!r}``."
        else:
            default = " Required."
        lines.append(f"- ``{f.name}`` (``{_type_text(types[f.name])}``): {spec.help}{default}")
    return "\n".join(lines)
