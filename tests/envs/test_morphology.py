"""Body-part scaling of MJCF models: connectivity, masses, clearance, specs and ranges."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from visfore_envs.core.mujoco_env import ASSETS_DIR
from visfore_envs.morphology import (
    GLOBAL_FACTORS,
    ROBOTS,
    compile_mjcf,
    geom_masses,
    parse_perturbation,
    parse_ranges,
    sample_perturbation,
    scale_mjcf,
)

XMLS = {
    "hopper": "hopper.xml",
    "walker2d": "walker2d.xml",
    "ant": "ant.xml",
    "half_cheetah": "half_cheetah.xml",
}


def _xml(robot: str) -> str:
    return (ASSETS_DIR / "locomotion" / XMLS[robot]).read_text()


def _posed(xml: str):
    model = compile_mjcf(xml)
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    return model, data


@pytest.mark.parametrize("robot", list(XMLS))
def test_nominal_masses_match_mujoco(robot):
    xml = _xml(robot)
    model, _ = _posed(xml)
    assert sum(geom_masses(xml).values()) == pytest.approx(model.body_mass.sum(), rel=1e-9)


@pytest.mark.parametrize("robot", list(XMLS))
def test_nominal_scales_return_the_source_text(robot):
    xml = _xml(robot)
    scaled = scale_mjcf(xml, ROBOTS[robot], parse_perturbation(ROBOTS[robot], {"friction": 2}))
    assert scaled.xml is xml and scaled.root_lift == 0.0


@pytest.mark.parametrize("robot", list(XMLS))
def test_every_part_factor_compiles(robot):
    morph = ROBOTS[robot]
    for key in morph.keys():
        if key in GLOBAL_FACTORS:
            continue
        for factor in (0.5, 1.5):
            model, _ = _posed(scale_mjcf(_xml(robot), morph, {key: factor}).xml)
            assert model.nbody == _posed(_xml(robot))[0].nbody


def test_hopper_thigh_length_moves_children_and_stays_connected():
    morph = ROBOTS["hopper"]
    nominal_model, nominal = _posed(_xml("hopper"))
    model, data = _posed(scale_mjcf(_xml("hopper"), morph, {"thigh.length": 1.5}).xml)
    hip = data.xanchor[model.joint("thigh_joint").id]
    knee = data.xanchor[model.joint("leg_joint").id]
    nominal_hip = nominal.xanchor[nominal_model.joint("thigh_joint").id]
    nominal_knee = nominal.xanchor[nominal_model.joint("leg_joint").id]
    # The thigh segment (hip -> knee) is 1.5x as long; the leg and foot hang from its end.
    assert np.linalg.norm(hip - knee) == pytest.approx(1.5 * np.linalg.norm(nominal_hip - nominal_knee))
    # The thigh capsule spans exactly hip -> knee (ends at the joint anchors).
    thigh = model.geom("thigh_geom").id
    axis = data.geom_xmat[thigh].reshape(3, 3)[:, 2]
    half = model.geom_size[thigh, 1]
    ends = sorted([data.geom_xpos[thigh] + half * axis, data.geom_xpos[thigh] - half * axis], key=lambda p: p[2])
    np.testing.assert_allclose(ends[1], hip, atol=1e-12)
    np.testing.assert_allclose(ends[0], knee, atol=1e-12)
    # Leg and foot keep their length; the foot stays on the floor, the torso is raised.
    assert data.xanchor[model.joint("foot_joint").id][2] == pytest.approx(
        nominal.xanchor[nominal_model.joint("foot_joint").id][2]
    )
    assert data.xpos[model.body("torso").id][2] == pytest.approx(1.25 + 0.225)
    assert model.qpos0[1] == pytest.approx(1.25 + 0.225)  # rootz reads the absolute height


def test_half_cheetah_shin_length_moves_the_foot():
    morph = ROBOTS["half_cheetah"]
    nominal_model, nominal = _posed(_xml("half_cheetah"))
    model, data = _posed(scale_mjcf(_xml("half_cheetah"), morph, {"bshin.length": 1.3}).xml)
    shin = nominal.xpos[nominal_model.body("bfoot").id] - nominal.xpos[nominal_model.body("bshin").id]
    new = data.xpos[model.body("bfoot").id] - data.xpos[model.body("bshin").id]
    np.testing.assert_allclose(new, 1.3 * shin, atol=1e-12)


@pytest.mark.parametrize(
    "robot,part", [("hopper", "foot"), ("walker2d", "thigh"), ("ant", "shin"), ("half_cheetah", "fthigh")]
)
def test_mass_factor_scales_part_mass_and_nothing_else(robot, part):
    morph = ROBOTS[robot]
    nominal_model, _ = _posed(_xml(robot))
    model, _ = _posed(scale_mjcf(_xml(robot), morph, {f"{part}.mass": 2.0}).xml)
    bodies = [
        nominal_model.geom_bodyid[nominal_model.geom(s[1:]).id] if s.startswith("@") else nominal_model.body(s).id
        for s in morph.parts[part]
    ]
    others = [b for b in range(1, model.nbody) if b not in bodies]
    np.testing.assert_allclose(model.body_mass[bodies], 2.0 * nominal_model.body_mass[bodies], rtol=1e-9)
    np.testing.assert_allclose(model.body_mass[others], nominal_model.body_mass[others], rtol=1e-9)


def test_mass_follows_geometry_at_nominal_density():
    morph = ROBOTS["hopper"]
    nominal_model, _ = _posed(_xml("hopper"))
    model, _ = _posed(scale_mjcf(_xml("hopper"), morph, {"leg.width": 2.0}).xml)
    leg = model.body("leg").id
    r, h = 0.04, 0.25  # nominal leg capsule: radius, half-length (m)
    volume = lambda r: np.pi * r**2 * 2 * h + 4 / 3 * np.pi * r**3  # noqa: E731
    expected = nominal_model.body_mass[leg] * volume(2 * r) / volume(r)
    assert model.body_mass[leg] == pytest.approx(expected, rel=1e-9)


def test_perturbation_parsing_aliases_and_errors():
    morph = ROBOTS["hopper"]
    scales = parse_perturbation(morph, {"Ltorso": 1.2, "Wthigh": 0.9, "foot.mass": 2})
    assert scales["torso.length"] == 1.2 and scales["thigh.width"] == 0.9 and scales["foot.mass"] == 2
    assert sum(v != 1.0 for v in scales.values()) == 3
    with pytest.raises(ValueError, match=r"unknown perturbation key 'shin.length'.*thigh\.length"):
        parse_perturbation(morph, {"shin.length": 1.1})
    with pytest.raises(ValueError, match=r"thigh.length=0.*> 0"):
        parse_perturbation(morph, {"thigh.length": 0})
    with pytest.raises(ValueError, match="twice"):
        parse_perturbation(morph, {"Lthigh": 1.1, "thigh.length": 1.2})
    with pytest.raises(ValueError, match="torso.length"):
        parse_perturbation(ROBOTS["ant"], {"torso.length": 1.1})  # a sphere has no length


def test_ranges_presets_and_seeded_sampling():
    morph = ROBOTS["hopper"]
    ranges = parse_ranges(morph, "0.8-1.2")
    assert set(ranges) == {k for k in morph.keys() if k.endswith((".length", ".width"))}
    assert parse_ranges(morph, (0.8, 1.2)) == ranges
    extreme = parse_ranges(morph, "extreme")
    assert extreme["friction"] == ((0.2 / 0.8, 0.5 / 0.8), (1.1 / 0.8, 1.4 / 0.8))
    assert parse_ranges(morph, "default") == {}
    draws = [sample_perturbation(morph, extreme, np.random.default_rng(s)) for s in range(200)]
    frictions = np.array([d["friction"] for d in draws])
    assert np.all((frictions < 0.5 / 0.8) | (frictions > 1.1 / 0.8))  # never inside R
    assert frictions.min() >= 0.25 and frictions.max() <= 1.75
    again = sample_perturbation(morph, extreme, np.random.default_rng(7))
    assert again == draws[7]
    globbed = parse_ranges(morph, {"*.mass": (0.5, 2.0), "Lthigh": [(0.5, 0.6), (1.4, 1.5)]})
    assert set(globbed) == {"torso.mass", "thigh.mass", "leg.mass", "foot.mass", "thigh.length"}
    for bad in ("wild", "1.2-0.8", {"nope.length": (1, 2)}, {"*.size": (1, 2)}, 3):
        with pytest.raises(ValueError):
            parse_ranges(morph, bad)
