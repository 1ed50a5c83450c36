"""The ``visfore`` command line: one thin module per command over the domain packages.

Nothing outside this package imports it. :func:`main` is the console-script entry point;
the Typer app is :data:`visfore.cli.app.app`.
"""

from __future__ import annotations


def main() -> None:
    """Console-script entry point (``visfore``)."""
    from visfore.cli.app import main as run

    run()
