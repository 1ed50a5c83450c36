"""`--help` of every `visfore` command and sub-command is readable at 80 columns.

The commands are found by walking the Click group behind the Typer app (so commands added
later are checked too). Each help is rendered through the CLI with ``COLUMNS=80`` and
``TERMINAL_WIDTH=80`` (rich reads the first, Typer the second) and must: keep every line
within 80 characters, cut nothing with "…", show every option's flags unbroken, keep a
choice metavar (``[a|b|c]``) on one line, use upper-case metavars (``RUN``, ``N``,
``KEY=VALUE``; no ``{run}``, ``<int>`` or ``<list[str]>``) and show help text verbatim
(no Rich markup eating ``[min_scale, scale]``).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

import pytest
from typer.main import get_command
from typer.testing import CliRunner

WIDTH = 80
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Typer's generated type placeholders, which the CLI must not show.
_TYPER_TYPES = re.compile(r"<(?:str|int|float|bool|path|text|list\[[^>]*\])>", re.IGNORECASE)


@lru_cache(maxsize=1)
def _root():
    from visfore.cli.app import app

    return get_command(app)


def _context(cmd, name, parent=None):
    from typer import _click

    return _click.Context(cmd, info_name=name, parent=parent)


def _command_paths() -> list[tuple[str, ...]]:
    """Every command path of the app, the root group first, groups before their members."""
    paths: list[tuple[str, ...]] = []

    def walk(cmd, path: tuple[str, ...], parent) -> None:
        paths.append(path)
        ctx = _context(cmd, path[-1] if path else "visfore", parent)
        lister = getattr(cmd, "list_commands", None)
        for name in lister(ctx) if lister else []:
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                walk(sub, (*path, name), ctx)

    walk(_root(), (), None)
    return paths


def _resolve(path: tuple[str, ...]):
    """(command, context) of ``visfore PATH...``."""
    cmd = _root()
    ctx = _context(cmd, "visfore")
    for name in path:
        cmd = cmd.get_command(ctx, name)
        ctx = _context(cmd, name, ctx)
    return cmd, ctx


@cache
def _help(path: tuple[str, ...]) -> str:
    from visfore.cli.app import app

    env = {"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH), "LINES": "50"}
    result = CliRunner().invoke(app, [*path, "--help"], env=env)
    assert result.exit_code == 0, result.output
    return _ANSI.sub("", result.output)


def _shown_flags(cmd, ctx) -> list[str]:
    """The flags --help must show: every option's, less the deprecated spellings it hides."""
    from visfore.cli.help import hidden_flags

    hidden = hidden_flags(cmd)
    flags = []
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False) or getattr(param, "param_type_name", "") != "option":
            continue
        flags += [f for f in (*param.opts, *param.secondary_opts) if f not in hidden]
    return flags


PATHS = _command_paths()


def _id(path: tuple[str, ...]) -> str:
    return " ".join(path) or "visfore"


def test_walk_finds_every_command() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"", "collect", "train-model", "evaluate", "plan", "dataset", "dataset info"} <= names
    assert len(PATHS) >= 14


@pytest.mark.parametrize("path", PATHS, ids=_id)
def test_help_fits_80_columns_uncut(path: tuple[str, ...]) -> None:
    text = _help(path)
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_wide, "\n".join(too_wide)
    assert "…" not in text, text


@pytest.mark.parametrize("path", PATHS, ids=_id)
def test_help_shows_every_flag_whole(path: tuple[str, ...]) -> None:
    cmd, ctx = _resolve(path)
    text = _help(path)
    flags = _shown_flags(cmd, ctx)
    assert "--help" in flags
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"{missing} not shown whole in:\n{text}"


@pytest.mark.parametrize("path", PATHS, ids=_id)
def test_help_metavars_are_consistent(path: tuple[str, ...]) -> None:
    cmd, ctx = _resolve(path)
    text = _help(path)
    assert not _TYPER_TYPES.search(text), _TYPER_TYPES.search(text)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert not re.search(r"[{\[<][a-z]", usage), usage  # {run}, [path], <x>
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False) or getattr(param, "is_flag", False):
            continue
        metavar = param.metavar
        assert metavar, f"{param.name} of {_id(path)} has no metavar"
        if metavar.startswith("["):  # choices: [a|b|c], on one line
            assert re.fullmatch(r"\[[^\[\] ]+(\|[^\[\] ]+)*\]", metavar), metavar
            assert any(metavar in line for line in text.splitlines()), f"{metavar} split in:\n{text}"
        else:
            assert metavar == metavar.upper(), f"{param.name} of {_id(path)}: metavar {metavar!r}"
            assert re.search(rf"(?<![\w-]){re.escape(metavar)}(?![\w-])", text), metavar


def test_collect_help_keeps_square_brackets_in_help_text() -> None:
    text = " ".join(_help(("collect",)).replace("│", " ").split())  # lines joined, no borders
    assert "log-uniform in [min_scale, scale]" in text
    assert "key=value[,key=value]" in text


def test_help_text_column_is_not_squeezed_by_long_flags() -> None:
    """train-model has the longest flags (--pad-short-episodes/--no-pad-short-episodes): its
    help text still gets at least half of the line."""
    text = _help(("train-model",))
    line = next(line for line in text.splitlines() if "Episodes shorter than context" in line)
    assert line.index("Episodes shorter") <= WIDTH // 2, line
