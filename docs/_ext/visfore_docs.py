"""Sphinx helpers for the visfore docs (no toolkit code is changed for them).

* :func:`cli_command`: the Click object behind the Typer app ``visfore.cli.app.app``
  (``typer.main.get_command``). Typer >= 0.20 vendors its own copy of Click
  (``typer._click``), so ``sphinx-click``, which checks for ``click.Command``, cannot
  render it; the two directives below do it with the vendored Click's plain formatter.
* ``.. visfore-help:: COMMAND``: the plain ``--help`` text of one command (Click's own
  formatter, not Typer's rich panels), in a literal block.
* ``.. visfore-cli::``: a section per command (and sub-command) with its ``--help``.
* ``.. automodules:: PACKAGE``: one section per module of PACKAGE, found by walking the
  package on disk at build time (so modules that move between subpackages are picked
  up without editing the docs), each rendered with ``automodule`` and ``:members:``.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

os.environ.setdefault("MUJOCO_GL", "egl")


logger = logging.getLogger(__name__)
WIDTH = 88


def _click():
    """The Click that Typer builds on: its vendored copy when it has one."""
    try:
        from typer import _click as click  # typer >= 0.20
    except ImportError:  # pragma: no cover - older typer on the real click
        import click
    return click


@functools.lru_cache(maxsize=1)
def cli_command():
    """The Click group of the ``visfore`` Typer app."""
    import typer.main

    from visfore.cli.app import app

    return typer.main.get_command(app)


def _subcommands(cmd, ctx) -> list[str]:
    lister = getattr(cmd, "list_commands", None)
    return list(lister(ctx)) if lister else []


def _resolve(path: list[str]):
    """(command, context) of ``visfore PATH...``."""
    click = _click()
    cmd = cli_command()
    ctx = click.Context(cmd, info_name="visfore", terminal_width=WIDTH, max_content_width=WIDTH)
    for name in path:
        sub = cmd.get_command(ctx, name) if hasattr(cmd, "get_command") else None
        if sub is None:
            raise ValueError(f"visfore has no command {' '.join(path)!r}")
        cmd = sub
        ctx = click.Context(cmd, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH)
    return cmd, ctx


def plain_help(path: list[str]) -> str:
    """``visfore PATH... --help`` as plain text from Click's own formatter."""
    click = _click()
    cmd, ctx = _resolve(path)
    formatter = click.HelpFormatter(width=WIDTH, max_width=WIDTH)
    # click.Command.format_help, not Typer's override that draws rich panels; for a
    # group, format_commands lists the sub-commands as Click does.
    cmd.format_usage(ctx, formatter)
    cmd.format_help_text(ctx, formatter)
    _format_params(cmd, ctx, formatter)
    if _subcommands(cmd, ctx) and hasattr(cmd, "format_commands"):
        cmd.format_commands(ctx, formatter)
    cmd.format_epilog(ctx, formatter)
    return formatter.getvalue().rstrip()


def _format_params(cmd, ctx, formatter) -> None:
    """Arguments and options as definition lists (the vendored Click leaves this out)."""
    records: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        name, help_text = record
        kind = "Options" if getattr(param, "param_type_name", "") == "option" else "Arguments"
        if kind == "Arguments" and getattr(param, "metavar", None):
            name = param.metavar  # RUN, as `--help` shows it (Typer's record adds "<str>")
        records[kind].append((name, help_text or ""))
    for title, rows in records.items():
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def all_commands() -> list[list[str]]:
    """Every command path of the app, depth first, groups before their members."""
    out: list[list[str]] = []

    def walk(path: list[str]) -> None:
        cmd, ctx = _resolve(path)
        for name in _subcommands(cmd, ctx):
            out.append(path + [name])
            walk(path + [name])

    walk([])
    return out


class VisforeHelp(SphinxDirective):
    """``.. visfore-help:: dataset info``: the command's ``--help`` as a literal block."""

    required_arguments = 0
    optional_arguments = 10
    has_content = False

    def run(self):
        try:
            text = plain_help(list(self.arguments))
        except ValueError as exc:
            # A command being added or renamed: say so on the page, not as a build error.
            logger.info("visfore-help: %s", exc)
            para = nodes.paragraph(text=f"(The installed toolkit has no `visfore {' '.join(self.arguments)}` command.)")
            return [para]
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def _is_myst(state) -> bool:
    """Whether a directive sits in a MyST (Markdown) page: nested content is then Markdown."""
    return type(state).__module__.startswith("myst_parser")


def _section(title: str, myst: bool) -> list[str]:
    return [f"## {title}", ""] if myst else [title, "-" * len(title), ""]


def _directive(name: str, argument: str, options: list[str], body: list[str], myst: bool) -> list[str]:
    """One directive in the syntax of the page it is parsed into."""
    if myst:
        return ["````{" + name + "} " + argument, *[f":{o}" for o in options], *body, "````", ""]
    return [
        f".. {name}:: {argument}",
        *[f"   :{o}" for o in options],
        "",
        *["   " + line if line else "" for line in body],
        "",
    ]


def _parse(directive: SphinxDirective, lines: list[str], source: str) -> list[nodes.Node]:
    node = nodes.section()
    node.document = directive.state.document
    nested_parse_with_titles(directive.state, StringList(lines, source=source), node)
    return node.children


class VisforeCli(SphinxDirective):
    """``.. visfore-cli::``: a section with the ``--help`` text of every command."""

    has_content = False

    def run(self):
        myst = _is_myst(self.state)
        lines: list[str] = []
        for path in all_commands():
            lines += _section("visfore " + " ".join(path), myst)
            lines += _directive("code-block", "text", [], plain_help(path).splitlines(), myst)
        return _parse(self, lines, "<visfore-cli>")


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        names.append(info.name)
    return sorted(names)


class AutoModules(SphinxDirective):
    """``.. automodules:: visfore.data``: a section per module of the package."""

    required_arguments = 1
    option_spec = {"exclude": directives.unchanged}

    def run(self):
        package = self.arguments[0]
        exclude = {m.strip() for m in self.options.get("exclude", "").split(",") if m.strip()}
        myst = _is_myst(self.state)
        lines: list[str] = []
        for name in _modules(package):
            if name in exclude:
                continue
            lines += _section(name, myst)
            # ignore-module-all: members come from the module's namespace, where autodoc
            # skips imported names, so a package's re-exports (listed in its __all__)
            # are described once, in the module that defines them.
            rst = _directive("automodule", name, ["members:", "ignore-module-all:", "show-inheritance:"], [], False)
            # autodoc writes reStructuredText: in a MyST page it must sit in eval-rst.
            lines += _directive("eval-rst", "", [], rst, True) if myst else rst
        return _parse(self, lines, f"<automodules {package}>")


def setup(app):
    app.add_directive("visfore-help", VisforeHelp)
    app.add_directive("visfore-cli", VisforeCli)
    app.add_directive("automodules", AutoModules)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
