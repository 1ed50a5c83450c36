"""Keyword options (``--env-kwargs``, ``--policy-kwargs``): an unknown key is one line that
names it and lists the valid keys with their types and defaults; a value of the wrong type
is one line naming the key, the value and the expected type. Exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from visfore_cli_testutils import invoke, one_error_line

from visfore.core.errors import VisforeError
from visfore.data.policies import make_policy, policy_parameters

SMOOTH_KEYS = (
    "theta (float, default 0.3), sigma (float, default 0.3), scale (float, default 0.3), "
    "min_scale (float | None, default None)"
)


def _collect(out: Path, *extra: str):
    return invoke("collect", "--out", out, "--episodes", 1, "--steps", 2, "--size", 16, "-q", *extra)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--policy-kwargs", "bogus=1"],
            f"error: bad parameters for policy 'smooth': unknown key 'bogus'; valid keys: {SMOOTH_KEYS}",
        ),
        (
            ["--policy-kwargs", "theta=abc"],
            "error: bad parameters for policy 'smooth': theta='abc': expected float, got str",
        ),
        (
            ["--policy-kwargs", "min_scale=low"],
            "error: bad parameters for policy 'smooth': min_scale='low': expected float | None, got str",
        ),
        (
            ["--policy", "random", "--policy-kwargs", "theta=0.1"],
            "error: bad parameters for policy 'random': unknown key 'theta'; valid keys: none",
        ),
        (
            ["--env-kwargs", "frame_skip=abc"],
            "error: --env-kwargs for ReacherPlane-v0: frame_skip='abc': expected int, got str",
        ),
    ],
    ids=["unknown-policy-key", "policy-value-type", "optional-float", "random-takes-none", "env-value-type"],
)
def test_collect_bad_keyword_option_is_one_exact_line(tmp_path: Path, extra: list[str], expected: str) -> None:
    out = tmp_path / "bad.zarr"
    assert one_error_line(_collect(out, *extra)) == expected
    assert not out.exists()


def test_collect_unknown_env_kwarg_lists_the_env_keys(tmp_path: Path) -> None:
    out = tmp_path / "bad.zarr"
    line = one_error_line(_collect(out, "--env-kwargs", "foo=bar"))
    assert line.startswith(
        'error: cannot create ReacherPlane-v0 with env kwargs {"foo": "bar"}: unknown key \'foo\'; '
        "valid keys: reward_mode (str | None, default None), "
    )
    assert line.endswith("frame_skip (int, default 2)")
    assert "TypeError" not in line and not out.exists()


def test_collect_unknown_kwarg_of_a_gymnasium_env(tmp_path: Path) -> None:
    out = tmp_path / "bad.zarr"
    line = one_error_line(_collect(out, "--env", "Hopper-v5", "--env-kwargs", "foo=1"))
    assert line.startswith(
        "error: cannot create Hopper-v5 with env kwargs {\"foo\": 1}: unknown key 'foo'; valid keys: "
        "xml_file (str, default 'hopper.xml'), frame_skip (int, default 4), "
    )
    assert "reset_noise_scale (float, default 0.005)" in line and not out.exists()


def test_train_policy_unknown_env_kwarg_lists_the_env_keys(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--algo", "ppo", "--env", "reacher", "--timesteps", 8, "--out", out, "-q"]
    line = one_error_line(invoke("train-policy", *args, "--env-kwargs", "foo=1"))
    assert line.startswith(
        "error: cannot create ReacherPlane-v0 with {\"foo\": 1}: unknown key 'foo'; "
        "valid keys: reward_mode (str | None, default None), "
    )


def test_policy_parameters_come_from_the_signature() -> None:
    assert list(policy_parameters("smooth")) == ["theta", "sigma", "scale", "min_scale"]
    assert policy_parameters("random") == {}
    space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    policy = make_policy("smooth", space, theta=1, min_scale=np.float64(0.1))  # int and numpy floats pass
    assert policy.theta == 1.0 and policy.min_scale == 0.1
    with pytest.raises(VisforeError, match=r"^bad parameters for policy 'smooth': sigma=True: expected float"):
        make_policy("smooth", space, sigma=True)
