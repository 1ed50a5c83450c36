"""The PyBullet backend writes nothing to the process's stdout or stderr (issue 19.6):
pybullet's C code prints "pybullet build time: ..." at import, past ``sys.stdout``, so it is
imported inside :func:`visfore_envs.bullet.quiet_import.quiet_c_output`. Each check runs in
a fresh interpreter (the banner comes once per process, at the first import) with both
streams captured as pipes, where C's stdout is block-buffered."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("pybullet")


def _run(code: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")  # only the banner is under test
    env.pop("PYTHONUNBUFFERED", None)  # it makes C's stdio unbuffered too: keep the default buffering
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=120, env=env, check=False
    )


def test_pybullet_backend_prints_nothing():
    """Import, make, reset, step and close a PyBullet env: not one byte on stdout, and no
    banner on stderr."""
    result = _run(
        """
        import gymnasium as gym
        import visfore_envs

        env = gym.make("PerturbHopper-v0", backend="pybullet")
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
        import pybullet  # already imported: nothing more either
        """
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    assert b"build time" not in result.stderr, result.stderr.decode()


def test_quiet_c_output_discards_c_and_python_output_and_restores_the_streams():
    """printf (buffered in C's stdout: it must not come out later), raw writes to fd 1 and
    2 and print() inside the block are discarded; output before it (also what C still
    buffered) and after it is kept, also when the block raises."""
    result = _run(
        """
        import ctypes, os, sys
        from visfore_envs.bullet.quiet_import import quiet_c_output

        print("before", flush=True)
        libc = ctypes.CDLL(None)
        libc.printf(b"printf before\\n")  # still in C's buffer when the block starts
        with quiet_c_output():
            libc.printf(b"hidden printf\\n")
            os.write(1, b"hidden fd 1\\n")
            os.write(2, b"hidden fd 2\\n")
            print("hidden print")
            print("hidden print to stderr", file=sys.stderr)
        try:
            with quiet_c_output():
                raise KeyError("inside")
        except KeyError:
            pass
        print("after", flush=True)
        print("after on stderr", file=sys.stderr, flush=True)
        libc.printf(b"printf after\\n")
        """
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"before\nprintf before\nafter\nprintf after\n"
    assert result.stderr == b"after on stderr\n"
