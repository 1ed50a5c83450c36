"""Bad perturbation factors are one ValueError that lists the valid keys, as an unknown key
is (docs/envs/locomotion.md: "Unknown keys and non-positive factors raise one ValueError
that lists the valid keys")."""

from __future__ import annotations

import math

import pytest

from visfore_envs.morphology import ROBOTS, parse_perturbation

HOPPER_KEYS = (
    "valid keys: torso.length, torso.width, torso.mass, thigh.length, thigh.width, thigh.mass, "
    "leg.length, leg.width, leg.mass, foot.length, foot.width, foot.mass, friction, gravity, "
    "actuator_gear, joint_damping (aliases: L<part>, W<part>, M<part>)"
)


@pytest.mark.parametrize("value", [0, -0.5, math.inf, math.nan])
def test_non_positive_or_non_finite_factor_lists_the_valid_keys(value: float) -> None:
    with pytest.raises(ValueError) as info:
        parse_perturbation(ROBOTS["hopper"], {"Lthigh": value})
    assert str(info.value) == (
        f"perturbation thigh.length={value!r} must be a finite number > 0 (a factor of the nominal hopper, "
        f"1.0 = unchanged); {HOPPER_KEYS}"
    )


def test_factor_that_is_not_a_number_lists_the_valid_keys() -> None:
    with pytest.raises(ValueError) as info:
        parse_perturbation(ROBOTS["hopper"], {"torso.mass": "heavy"})
    assert str(info.value) == f"perturbation torso.mass='heavy' is not a number; {HOPPER_KEYS}"


def test_unknown_key_lists_the_same_keys() -> None:
    with pytest.raises(ValueError) as info:
        parse_perturbation(ROBOTS["hopper"], {"shin.length": 1.2})
    assert str(info.value) == f"unknown perturbation key 'shin.length' for hopper; {HOPPER_KEYS}"


def test_every_robot_lists_its_own_keys() -> None:
    for name, morph in ROBOTS.items():
        key = next(iter(morph.keys()))
        with pytest.raises(ValueError) as info:
            parse_perturbation(morph, {key: 0})
        message = str(info.value)
        assert "\n" not in message and f"nominal {name}," in message
        assert message.endswith(f"valid keys: {', '.join(morph.keys())} (aliases: L<part>, W<part>, M<part>)")


def test_env_constructor_reports_it_in_one_line() -> None:
    """The path of ``--env-kwargs '{"perturbation": {...}}'`` (a MuJoCo hopper)."""
    import gymnasium as gym

    import visfore_envs  # noqa: F401  (registers the ids)

    with pytest.raises(ValueError, match=r"perturbation thigh\.length=0 must be a finite number > 0 .*valid keys: "):
        gym.make("PerturbHopper-v0", perturbation={"thigh.length": 0})
