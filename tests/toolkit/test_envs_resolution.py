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


# -- keyword arguments checked against the constructor's signature --------------------------


def test_unknown_env_kwarg_names_it_and_lists_the_valid_keys_with_types_and_defaults():
    with pytest.raises(VisforeError) as info:
        make_env("ReacherPlane-v0", size=32, max_episode_steps=3, env_kwargs={"bogus": 1})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot create ReacherPlane-v0 with env kwargs {\"bogus\": 1}: unknown key 'bogus'; valid keys: "
        "reward_mode (str | None, default None), goal_conditioned (bool, default False), "
    )
    assert "frame_skip (int, default 2)" in message and "success_threshold (float | None, default None)" in message
    for reserved in ("obs_mode", "width", "height", "render_mode"):  # the toolkit sets them
        assert f"{reserved} (" not in message


def test_unknown_kwarg_of_a_gymnasium_env_lists_its_init_keys():
    with pytest.raises(VisforeError) as info:
        make_env("CartPole-v1", size=32, max_episode_steps=3, env_kwargs={"foo": 1})
    assert str(info.value) == (
        "cannot create CartPole-v1 with env kwargs {\"foo\": 1}: unknown key 'foo'; "
        "valid keys: sutton_barto_reward (bool, default False)"
    )


def test_unknown_kwarg_of_a_locomotion_factory_lists_the_env_class_keys():
    """PerturbHopper-v0's entry point is a factory (backend, **kwargs): the keys are those of
    the class it builds, with the hopper's own defaults (frame_skip 4, not the base's 2)."""
    with pytest.raises(VisforeError) as info:
        make_env("PerturbHopper-v0", size=32, max_episode_steps=3, env_kwargs={"healthy_angle": 1})
    message = str(info.value)
    assert "unknown key 'healthy_angle'; valid keys: backend (str, default 'mujoco'), " in message
    assert "frame_skip (int, default 4)" in message and "healthy_reward (float, default 1.0)" in message


@pytest.mark.parametrize(
    "env_id, kwargs, expected",
    [
        ("ReacherPlane-v0", {"frame_skip": "abc"}, "frame_skip='abc': expected int, got str"),
        ("ReacherPlane-v0", {"frame_skip": 2.5}, "frame_skip=2.5: expected int, got float"),
        ("ReacherPlane-v0", {"show_target": 1}, "show_target=1: expected bool, got int"),
        ("ReacherPlane-v0", {"success_threshold": "far"}, "success_threshold='far': expected float | None, got str"),
        ("CartPole-v1", {"sutton_barto_reward": "yes"}, "sutton_barto_reward='yes': expected bool, got str"),
    ],
)
def test_env_kwarg_of_the_wrong_type_names_key_value_and_type(env_id, kwargs, expected):
    with pytest.raises(VisforeError) as info:
        make_env(env_id, size=32, max_episode_steps=3, env_kwargs=kwargs)
    assert str(info.value) == f"--env-kwargs for {env_id}: {expected}"


def test_env_kwargs_of_the_right_type_pass():
    env = make_env(
        "ReacherPlane-v0", size=32, max_episode_steps=3, env_kwargs={"success_threshold": 1, "frame_skip": 3}
    )
    env.close()  # an int for a float annotation is fine


def test_env_without_width_says_so():
    with pytest.raises(VisforeError) as info:
        make_env("Pendulum-v1", size=32, max_episode_steps=3)
    assert str(info.value).endswith(
        "it takes no 'width' argument, which visfore passes (frames of a chosen size need an env that takes "
        "width and height)"
    )


def test_keyword_parameters_follow_kwargs_along_the_mro():
    from visfore.data.envs import describe_parameters, keyword_parameters

    class Base:
        def __init__(self, model: str, *, size: int = 4, gain: float | None = None) -> None: ...

    class Child(Base):
        def __init__(self, *, mode: str = "a", **kwargs) -> None: ...

    def factory(backend: str = "x", **kwargs): ...

    params, is_open = keyword_parameters(Child, skip=("gain",))
    assert list(params) == ["mode", "size"] and not is_open  # Base's required `model` is Child's to pass
    assert describe_parameters(params) == "mode (str, default 'a'), size (int, default 4)"
    params, is_open = keyword_parameters(factory)
    assert list(params) == ["backend"] and is_open
    assert describe_parameters({}) == "none"


def test_check_keyword_values_accepts_numpy_numbers_and_rejects_bools_for_numbers():
    import inspect

    from visfore.data.envs import check_keyword_values

    params = {
        "n": inspect.Parameter("n", inspect.Parameter.KEYWORD_ONLY, default=1, annotation=int),
        "x": inspect.Parameter("x", inspect.Parameter.KEYWORD_ONLY, default=1.0, annotation=float),
        "any": inspect.Parameter("any", inspect.Parameter.KEYWORD_ONLY, default=None),
    }
    check_keyword_values({"n": np.int64(3), "x": np.float32(0.5), "any": "whatever", "other": "x"}, params)
    check_keyword_values({"x": 2}, params)
    with pytest.raises(VisforeError, match=r"^n=True: expected int, got bool$"):
        check_keyword_values({"n": True}, params)
    with pytest.raises(VisforeError, match=r"^x=\[1\]: expected float, got list$"):
        check_keyword_values({"x": [1]}, params)
