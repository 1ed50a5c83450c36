"""Validation of constructor options: one-line ``ValueError`` messages naming the bad value.

Every check returns the (normalised) value so it can be used inline, e.g.
``self.width = check_int("width", width, minimum=1, maximum=4096)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

__all__ = ["check_choice", "check_int", "check_real", "check_vector"]


def check_choice(name: str, value, choices: Sequence):
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ValueError: ``obs_mode='rgb' is not one of 'state', 'pixels', 'state+pixels'``.
    """
    try:
        ok = any(value is c or (type(value) is type(c) and value == c) for c in choices)
    except Exception:  # noqa: BLE001 - e.g. arrays with ambiguous truth values
        ok = False
    if not ok:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not one of {allowed}")
    return value


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``int(value)`` if ``value`` is an integer (not a bool) within the bounds (inclusive).

    Raises:
        ValueError: e.g. ``width=0 is not an integer in [1, 4096]``.
    """
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if ok:
        ok = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        lo = "-inf" if minimum is None else str(minimum)
        hi = "inf" if maximum is None else str(maximum)
        raise ValueError(f"{name}={value!r} is not an integer in [{lo}, {hi}]")
    return int(value)


def check_real(name: str, value, *, minimum: float | None = None, strict: bool = False) -> float:
    """Return ``float(value)`` if ``value`` is a finite real number >= ``minimum`` (> if ``strict``).

    Raises:
        ValueError: e.g. ``ctrl_cost_weight=-1.0 is not a finite number >= 0.0``.
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {float(minimum)}"
        raise ValueError(f"{name}={value!r} is not a finite number{bound}")
    return float(value)


def check_vector(name: str, value, length: int) -> tuple[float, ...]:
    """Return ``value`` as a tuple of ``length`` finite floats.

    Raises:
        ValueError: e.g. ``camera_lookat=(0, 0) is not a sequence of 3 finite numbers``.
    """
    try:
        out = tuple(float(v) for v in value)
        ok = len(out) == length and all(math.isfinite(v) for v in out)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={value!r} is not a sequence of {length} finite numbers")
    return out
