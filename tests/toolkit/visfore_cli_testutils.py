"""Helpers for the toolkit tests that drive the `visfore` CLI (imported by the test modules)."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner


def invoke(*args: Any):
    """Run ``visfore ARGS...`` in-process (every argument passed through ``str``)."""
    from visfore.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single ``error: ...`` line of a command that failed on bad input (exit 2)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]
