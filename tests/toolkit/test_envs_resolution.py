"""``--env`` names and ``--env-kwargs`` parsing (visfore.data.envs)."""

from __future__ import annotations

import numpy as np
import pytest

from visfore.core.errors import VisforeError
from visfore.data.envs import (
    SHORT_NAMES,
    make_env,
    parse_env_kwargs,
    resolve_env_id,
    visfore_env_ids,
)


@pytest.mark.parametrize(
    "name, env_id",
    [
        ("reacher", "ReacherPlane-v0"),
        ("Reacher", "ReacherPlane-v0"),
        ("reacher3d", "Reacher3D-v0"),
        ("ReacherPlane-v0", "ReacherPlane-v0"),
        ("Reacher3D-v0", "Reacher3D-v0"),
        ("CartPole-v1", "CartPole-v1"),
    ],
)
def test_resolve_known_names(name, env_id):
    assert resolve_env_id(name) == env_id


def test_visfore_ids_include_the_short_name_targets():
    ids = visfore_env_ids()
    assert set(SHORT_NAMES.values()) <= set(ids)
    assert "CartPole-v1" not in ids


def test_unknown_env_lists_short_names_and_visfore_ids():
    with pytest.raises(VisforeError) as info:
        resolve_env_id("reacher4d")
    message = str(info.value)
    assert "\n" not in message and "reacher4d" in message
    for name in [*SHORT_NAMES, *visfore_env_ids()]:
        assert name in message


def test_make_env_returns_state_and_pixels():
    env = make_env("ReacherPlane-v0", size=32, max_episode_steps=3)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["pixels"].shape == (32, 32, 3) and obs["pixels"].dtype == np.uint8
        assert obs["state"].ndim == 1
        for _ in range(3):
            *_, truncated, _ = env.step(env.action_space.sample())
        assert truncated  # max_episode_steps is applied
    finally:
        env.close()


def test_make_env_rejects_unknown_kwargs_in_one_line():
    with pytest.raises(VisforeError) as info:
        make_env("ReacherPlane-v0", size=32, max_episode_steps=3, env_kwargs={"bogus": 1})
    assert "bogus" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "values, expected",
    [
        (None, {}),
        ([], {}),
        (['{"reward_mode": "pixels", "scale": 1.5}'], {"reward_mode": "pixels", "scale": 1.5}),
        (["reward_mode=pixels"], {"reward_mode": "pixels"}),
        (["a=1,b=2.5", "c=true"], {"a": 1, "b": 2.5, "c": True}),
        (["lengths=[1.0, 2.0],flag=False"], {"lengths": [1.0, 2.0], "flag": False}),
        (["a=1", '{"a": 2}'], {"a": 2}),
        ("name=x", {"name": "x"}),
        ({"b": 1}, {"b": 1}),
    ],
)
def test_parse_env_kwargs(values, expected):
    assert parse_env_kwargs(values) == expected


@pytest.mark.parametrize(
    "values, match",
    [
        (["novalue"], "novalue"),
        (['{"a": '], "JSON"),
        (["[1, 2]"], "key=value"),
        (["width=64"], "width"),
        (["obs_mode=pixels"], "obs_mode"),
    ],
)
def test_parse_env_kwargs_rejects(values, match):
    with pytest.raises(VisforeError, match=match):
        parse_env_kwargs(values)
