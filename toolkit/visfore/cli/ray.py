"""The ``--ray`` option of the commands that can run on Ray (collect, evaluate,
train-eval-all): its Typer declaration and the Click command class that lets it be given
without a value. The Ray backend itself is :mod:`visfore.core.ray_backend` (no CLI code).
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from visfore.core.ray_backend import LOCAL, RAY_HELP

__all__ = ["RayCommand", "RayOption", "ray_parameter"]

#: The ``--ray`` option of a hand-written Typer command (``ray: RayOption = None``).
RayOption = Annotated[Optional[str], typer.Option("--ray", metavar="ADDRESS", help=RAY_HELP)]


def ray_parameter() -> inspect.Parameter:
    """``--ray ADDRESS`` as an extra parameter of :func:`visfore.cli.options.typer_command`
    (passed to the command body as ``ray``: the address, or None)."""
    return inspect.Parameter(
        "ray",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
        annotation=Optional[str],
    )


class RayCommand(TyperCommand):
    """A Typer command whose ``--ray`` option may also be given without a value.

    Typer 0.29 parses with its own copy of Click, which has no optional-value options
    (Click's ``is_flag=False, flag_value=...``), so this command rewrites the arguments
    before parsing: a bare ``--ray`` (the last argument, or followed by another option)
    becomes ``--ray=local``. Register with ``app.command("collect", cls=RayCommand)``.
    A value that does not start with ``-`` is taken as the address, so put a bare
    ``--ray`` after a command's positional arguments.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":  # the rest is positional
                fixed.extend(args[i:])
                break
            if arg == "--ray":
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is None or (nxt.startswith("-") and len(nxt) > 1):
                    fixed.append(f"--ray={LOCAL}")
                    continue
            fixed.append(arg)
        return super().parse_args(ctx, fixed)
