"""``--help`` that stays readable at any terminal width, 80 columns included.

Typer's rich help puts every option in a six-column table (long flags, short flags,
negative flags, type, help) that rich shrinks to fit: at 80 columns long on/off flags
leave the help column some 16 characters and rich cuts flags and words with "…". Here
the help is a definition list inside the same rich panels, as Click lays it out: the
flags and metavar, then the help text wrapped in the column beside them; flags too long
for that column get a line of their own with the help under them. Nothing is cut,
choice lists (``[a|b|c]``) stay on one line, and help strings are shown as written (no
Rich markup: ``[min_scale, scale]`` is text).

:class:`VisforeTyper` is a :class:`typer.Typer` whose commands and groups all lay out
their help this way (the ``cls`` a command is registered with, e.g. ``RayCommand``, is
combined with :class:`HelpFormat`), so commands added later need nothing extra.
Deprecated flag spellings that :func:`visfore.cli.options.typer_command` accepts are
hidden (:func:`hidden_flags`).

Width: ``TERMINAL_WIDTH`` (as Typer), else rich's detection (``COLUMNS``, the terminal,
else 80).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable, Iterable, Sequence

import typer
from typer.core import TyperCommand, TyperGroup

__all__ = ["HIDDEN_FLAGS_ATTR", "HelpFormat", "VisforeTyper", "hidden_flags", "print_help", "with_help_format"]

#: Attribute of a command callback holding the flags that --help hides (deprecated spellings).
HIDDEN_FLAGS_ATTR = "visfore_hidden_flags"
#: Widest names column; longer flags put their help text on the next line.
NAME_COLUMN_MAX = 30
_GAP = 2  # spaces between the names and the help column


def hidden_flags(command: Any) -> frozenset[str]:
    """Flags of ``command`` (a Click command) that ``--help`` leaves out: the deprecated
    spellings recorded on its callback under :data:`HIDDEN_FLAGS_ATTR`."""
    return frozenset(getattr(getattr(command, "callback", None), HIDDEN_FLAGS_ATTR, ()))


def _console() -> Any:
    from rich.console import Console
    from rich.theme import Theme
    from typer import rich_utils as ru

    width_text = os.environ.get("TERMINAL_WIDTH", "")
    theme = Theme(
        {
            "option": ru.STYLE_OPTION,
            "switch": ru.STYLE_SWITCH,
            "negative_option": ru.STYLE_NEGATIVE_OPTION,
            "metavar": ru.STYLE_TYPES,
            "usage": ru.STYLE_USAGE,
        }
    )
    return Console(
        theme=theme,
        highlight=False,
        color_system=ru.COLOR_SYSTEM,
        force_terminal=ru.FORCE_TERMINAL,
        width=int(width_text) if width_text.isdigit() else None,
    )


def _highlight(text: Any) -> Any:
    """``text`` (a rich Text) with its ``--flags`` and ``-f`` switches styled."""
    text.highlight_regex(r"(?<![\w-])--[A-Za-z][\w-]*", "option")
    text.highlight_regex(r"(?<![\w-])-[A-Za-z](?![\w-])", "switch")
    return text


def _paragraphs(doc: str) -> list[str]:
    """A docstring's paragraphs, each on one line (Click's ``\\b`` keeps a paragraph's lines)."""
    out = []
    for para in inspect.cleandoc(doc).partition("\f")[0].split("\n\n"):
        if para.startswith("\b"):
            out.append(para.strip("\b\n"))
        elif para.strip():
            out.append(" ".join(para.split()))
    return out


def _names(param: Any, ctx: Any, hidden: frozenset[str]) -> Any:
    """The names cell of one parameter: ``--out, -o PATH``, ``--amp / --no-amp``, ``RUN``."""
    from rich.text import Text

    text = Text()
    if getattr(param, "param_type_name", "") == "argument":
        text.append(param.metavar or (param.name or "").upper(), "metavar")
        return text

    def joined(opts: Sequence[str], style: str) -> None:
        shown = sorted((o for o in opts if o not in hidden), key=lambda o: not o.startswith("--"))
        for i, opt in enumerate(shown):
            if i:
                text.append(", ")
            text.append(opt, style if opt.startswith("--") else "switch")

    joined(param.opts, "option")
    if [o for o in param.secondary_opts if o not in hidden]:
        text.append(" / ")
        joined(param.secondary_opts, "negative_option")
    if not getattr(param, "is_flag", False) and not getattr(param, "count", False):
        metavar = param.metavar or param.display_type_rich(ctx)
        if metavar:
            text.append(" ")
            text.append(str(metavar), "metavar")
    return text


def _param_help(param: Any, ctx: Any) -> list[Any]:
    """The help cell of one parameter: its help, then Click's ``[default: ...; required]``
    (as given by ``get_help_record``), as separate blocks."""
    from rich.text import Text
    from typer import rich_utils as ru

    own = " ".join((getattr(param, "help", None) or "").split())
    record = param.get_help_record(ctx)
    full = " ".join((record[1] if record else "").split())
    extra = full[len(own) :].strip() if full.startswith(own) else ""
    blocks = [_highlight(Text(own))] if own else []
    if extra:
        blocks.append(Text(extra, ru.STYLE_OPTION_DEFAULT))
    return blocks


def _wrap_blocks(console: Any, blocks: Sequence[Any], width: int) -> list[Any]:
    """Lines of ``blocks`` (rich Texts) wrapped to ``width``: each block after the first
    follows on the last line (two spaces apart) when it fits there whole, else starts a
    line (so ``[default: 200]`` is never split)."""
    lines: list[Any] = []
    for block in blocks:
        if not block.plain:
            continue
        if lines and lines[-1].cell_len + _GAP + block.cell_len <= width:
            lines[-1].append(" " * _GAP)
            lines[-1].append_text(block)
        else:
            lines += list(block.wrap(console, width, overflow="fold"))
    return lines


def _definition_list(console: Any, rows: Iterable[tuple[Any, list[Any]]]) -> Any:
    """One rich Text laying out ``(names, help blocks)`` rows for the panels' inner width:
    names, then help wrapped beside them; names wider than the column get a line of
    their own and their help starts under them."""
    from rich.text import Text

    rows = list(rows)
    inner = max(console.width - 4, 20)  # a panel's borders and padding
    limit = max(10, min(NAME_COLUMN_MAX, inner * 2 // 5))
    fitting = [n.cell_len for n, _ in rows if n.cell_len <= limit]
    column = max(fitting, default=limit)
    help_width = inner - column - _GAP
    out = Text(no_wrap=True, overflow="fold")
    for k, (names, help_blocks) in enumerate(rows):
        if k:
            out.append("\n")
        help_lines = _wrap_blocks(console, help_blocks, help_width)
        if names.cell_len <= column:
            out.append_text(names)
            if help_lines:
                out.append(" " * (column - names.cell_len + _GAP))
                out.append_text(help_lines.pop(0))
        else:
            for i, line in enumerate(names.wrap(console, inner, overflow="fold")):
                if i:
                    out.append("\n")
                out.append_text(line)
        for line in help_lines:
            out.append("\n" + " " * (column + _GAP))
            out.append_text(line)
    out.rstrip()
    return out


def _panel(console: Any, title: str, rows: list[tuple[Any, list[Any]]]) -> None:
    from rich.panel import Panel
    from typer import rich_utils as ru

    if rows:
        console.print(
            Panel(
                _definition_list(console, rows),
                border_style=ru.STYLE_OPTIONS_PANEL_BORDER,
                title=title,
                title_align=ru.ALIGN_OPTIONS_PANEL,
            )
        )


def print_help(command: Any, ctx: Any) -> None:
    """Print the ``--help`` of ``command`` (a Typer/Click command or group) to stdout.

    Layout: usage, help text, one panel per ``rich_help_panel`` of arguments, of options
    and (for a group) of sub-commands, epilog; see the module docstring.
    """
    from rich.padding import Padding
    from rich.text import Text
    from typer import rich_utils as ru

    console = _console()
    usage = Text("Usage: ", "usage")
    usage.append(" ".join([ctx.command_path, *command.collect_usage_pieces(ctx)]), ru.STYLE_USAGE_COMMAND)
    console.print(Padding(usage, 1))

    paragraphs = _paragraphs(command.help or "")
    if command.deprecated:
        paragraphs[:1] = [ru.DEPRECATED_STRING + (paragraphs[0] if paragraphs else "")]
    if paragraphs:
        body = _highlight(Text(paragraphs[0]))
        for para in paragraphs[1:]:
            body.append("\n\n")
            body.append_text(_highlight(Text(para, ru.STYLE_HELPTEXT)))
        console.print(Padding(body, (0, 1, 1, 1)))

    hidden = hidden_flags(command)
    panels: dict[tuple[int, str], list[tuple[Any, list[Any]]]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        is_argument = getattr(param, "param_type_name", "") == "argument"
        default_title = ru.ARGUMENTS_PANEL_TITLE if is_argument else ru.OPTIONS_PANEL_TITLE
        key = (0 if is_argument else 1, getattr(param, "rich_help_panel", None) or default_title)
        panels.setdefault(key, []).append((_names(param, ctx, hidden), _param_help(param, ctx)))

    if isinstance(command, TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            first = _paragraphs(sub.short_help or sub.help or "")[:1]
            line = (ru.DEPRECATED_STRING if sub.deprecated else "") + (first[0] if first else "")
            title = getattr(sub, "rich_help_panel", None) or ru.COMMANDS_PANEL_TITLE
            panels.setdefault((2, title), []).append((Text(name, "option"), [_highlight(Text(line))]))

    for order in (0, 1, 2):  # arguments, options, commands; default panel first in each
        titles = [t for o, t in panels if o == order]
        defaults = (ru.ARGUMENTS_PANEL_TITLE, ru.OPTIONS_PANEL_TITLE, ru.COMMANDS_PANEL_TITLE)
        titles.sort(key=lambda t: t != defaults[order])
        for title in titles:
            _panel(console, title, panels[(order, title)])

    if command.epilog:
        console.print(Padding(_highlight(Text("\n\n".join(_paragraphs(command.epilog)))), 1))


class HelpFormat:
    """Mixin for a Typer command or group class: ``--help`` laid out by :func:`print_help`
    (put it first among the bases)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Print the help (as Typer's rich help does; nothing goes to ``formatter``)."""
        print_help(self, ctx)


@functools.cache
def with_help_format(cls: type) -> type:
    """``cls`` (a Typer command or group class) with :class:`HelpFormat` mixed in, or
    ``cls`` itself when it has it already; one class per ``cls``."""
    if issubclass(cls, HelpFormat):
        return cls
    return type(cls.__name__, (HelpFormat, cls), {"__module__": cls.__module__, "__doc__": cls.__doc__})


class VisforeTyper(typer.Typer):
    """A :class:`typer.Typer` whose group and every command lay out ``--help`` with
    :func:`print_help` (any ``cls`` given is combined with :class:`HelpFormat`)."""

    def __init__(self, *args: Any, cls: type[TyperGroup] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, cls=with_help_format(cls or TyperGroup), **kwargs)

    def command(  # type: ignore[override]  # same parameters; cls gains HelpFormat
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """As :meth:`typer.Typer.command`, with ``cls`` (default ``TyperCommand``) combined
        with :class:`HelpFormat`."""
        return super().command(name, cls=with_help_format(cls or TyperCommand), **kwargs)
