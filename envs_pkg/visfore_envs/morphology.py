"""Body-part scale factors (length, width, mass) and global physics factors, applied to an
MJCF model; the perturbation machinery shared by every physics backend.

A *perturbation* is a dict of positive scale factors, 1.0 meaning nominal:

* ``"<part>.length"``: the part's segments get longer by the factor. Each body of the part
  is stretched about its proximal joint anchor (its first hinge joint, else its origin):
  geom ``fromto`` ends, geom centres and capsule/cylinder half-lengths, hinge-joint and
  site positions, and the anchor of every child body (its joint position in this body's
  frame) all scale, so children move with the end of the segment and the robot stays
  connected.
* ``"<part>.width"``: the radius (first ``size``) of the part's geoms.
* ``"<part>.mass"``: the part's mass is ``factor x nominal mass``. Without it a changed
  part keeps its nominal density, so its mass follows its volume.
* ``"friction"``, ``"gravity"``, ``"actuator_gear"`` (motor power), ``"joint_damping"``:
  global factors each backend applies to its loaded model (sliding friction of every geom,
  the gravity vector, every motor's gear, every joint's damping).

Short aliases (L = length, W = width, M = mass) are accepted: ``Ltorso`` = ``torso.length``, ``Wthigh`` =
``thigh.width``, ``Mfoot`` = ``foot.mass``.

After a geometry change the root body is raised or lowered so the lowest point of the
robot at its standing pose (:func:`standing_pose`: the initial pose with the joints
clamped into their limits) keeps the nominal clearance above the floor (a longer leg would
otherwise start inside the ground), :attr:`ScaledMJCF.height_ratio` tells envs how the
standing height changed (hopper, walker and ant scale their "healthy" height by it), robot
bodies that a shrunk part makes overlap get a contact ``exclude`` (as parent and child
have), and a body standing outside :data:`HEIGHT_RATIO_RANGE` x nominal is refused.

Domain randomisation draws a perturbation at each reset from *ranges* (unions of
intervals per key, see :func:`parse_ranges`), including the presets of Packer et al. 2018,
"Assessing Generalization in Deep Reinforcement Learning" (arXiv:1810.12282), as
implemented in their ``sunblaze_envs`` (``ModifiableRoboschoolHalfCheetah`` and friends:
density 1000, friction 0.8 and power 0.9 nominal), expressed here as factors of nominal.

The XML is edited as text (``xml.etree``), so the same code drives MuJoCo and PyBullet
(``p.loadMJCF``). Only local-coordinate MJCF with unrotated bodies is supported (every
robot shipped here); anything else is refused with a clear error.
"""

from __future__ import annotations

import fnmatch
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "PART_FACTORS",
    "GLOBAL_FACTORS",
    "PRESETS",
    "RobotMorphology",
    "ROBOTS",
    "ScaledMJCF",
    "parse_perturbation",
    "resolve_key",
    "parse_ranges",
    "sample_perturbation",
    "scale_mjcf",
    "geom_masses",
    "compile_mjcf",
]

#: Factors every body part has (unless the robot restricts them, e.g. a sphere torso).
PART_FACTORS = ("length", "width", "mass")
#: Global factors, applied by each backend to its loaded model.
GLOBAL_FACTORS = ("friction", "gravity", "actuator_gear", "joint_damping")

_DEFAULT_DENSITY = 1000.0  # kg/m^3, MuJoCo's default geom density


@dataclass(frozen=True)
class RobotMorphology:
    """Named body parts of one robot's MJCF.

    Attributes:
        name: robot name (``"hopper"``...).
        parts: part name -> MJCF bodies of the part. A body is given by its name, or by
            ``"@geom_name"`` for an unnamed body holding that geom (the ant's shins).
        root_body: name of the body raised/lowered to keep the floor clearance.
        fixed_length: parts whose ``length`` cannot be scaled (a sphere has no length).
    """

    name: str
    parts: Mapping[str, tuple[str, ...]]
    root_body: str
    fixed_length: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        """Every valid perturbation key: ``<part>.<factor>`` then the global factors."""
        keys = [
            f"{part}.{factor}"
            for part in self.parts
            for factor in PART_FACTORS
            if not (factor == "length" and part in self.fixed_length)
        ]
        return tuple(keys) + GLOBAL_FACTORS

    def nominal(self) -> dict[str, float]:
        """A perturbation with every factor at 1.0."""
        return dict.fromkeys(self.keys(), 1.0)


#: Robots of gymnasium's v5 MJCFs (hopper.xml, walker2d_v5.xml, ant.xml, half_cheetah.xml).
ROBOTS: dict[str, RobotMorphology] = {
    "hopper": RobotMorphology(
        "hopper",
        {"torso": ("torso",), "thigh": ("thigh",), "leg": ("leg",), "foot": ("foot",)},
        root_body="torso",
    ),
    # Walker2d parts scale both legs together (the walker stays symmetric).
    "walker2d": RobotMorphology(
        "walker2d",
        {
            "torso": ("torso",),
            "thigh": ("thigh", "thigh_left"),
            "leg": ("leg", "leg_left"),
            "foot": ("foot", "foot_left"),
        },
        root_body="torso",
    ),
    # Ant: the fixed upper leg segment ("hip", aux geoms), the thigh and the shin ("ankle"
    # geoms) of all four legs.
    "ant": RobotMorphology(
        "ant",
        {
            "torso": ("torso",),
            "hip": ("front_left_leg", "front_right_leg", "back_leg", "right_back_leg"),
            "thigh": ("aux_1", "aux_2", "aux_3", "aux_4"),
            "shin": (
                "@left_ankle_geom",
                "@right_ankle_geom",
                "@third_ankle_geom",
                "@fourth_ankle_geom",
            ),
        },
        root_body="torso",
        fixed_length=("torso",),
    ),
    "half_cheetah": RobotMorphology(
        "half_cheetah",
        {
            "torso": ("torso",),
            "bthigh": ("bthigh",),
            "bshin": ("bshin",),
            "bfoot": ("bfoot",),
            "fthigh": ("fthigh",),
            "fshin": ("fshin",),
            "ffoot": ("ffoot",),
        },
        root_body="torso",
    ),
}

# Packer et al. 2018 (sunblaze_envs) ranges as factors of nominal: density/1000 -> "mass"
# of every part, friction/0.8, power/0.9 -> "actuator_gear". Extreme = two intervals
# either side of Random. The ant's extreme friction reaches 2.5 (sunblaze's
# ModifiableRoboschoolAnt); the others 1.4.
_R_DENSITY = ((0.75, 1.25),)
_E_DENSITY = ((0.5, 0.75), (1.25, 1.5))
_R_FRICTION = ((0.5 / 0.8, 1.1 / 0.8),)
_R_POWER = ((0.7 / 0.9, 1.1 / 0.9),)
_E_POWER = ((0.5 / 0.9, 0.7 / 0.9), (1.1 / 0.9, 1.3 / 0.9))


def _e_friction(robot: str) -> tuple[tuple[float, float], ...]:
    upper = 2.5 if robot == "ant" else 1.4
    return ((0.2 / 0.8, 0.5 / 0.8), (1.1 / 0.8, upper / 0.8))


#: Preset names accepted by ``randomize=``: ``"default"`` (Packer's D: nominal, nothing
#: drawn), ``"random"`` (R) and ``"extreme"`` (E).
PRESETS = ("default", "random", "extreme")


def _preset_ranges(morph: RobotMorphology, preset: str) -> dict[str, tuple]:
    if preset == "default":
        return {}
    density = _R_DENSITY if preset == "random" else _E_DENSITY
    ranges: dict[str, tuple] = {f"{part}.mass": density for part in morph.parts}
    ranges["friction"] = _R_FRICTION if preset == "random" else _e_friction(morph.name)
    ranges["actuator_gear"] = _R_POWER if preset == "random" else _E_POWER
    return ranges


# -- parsing ---------------------------------------------------------------------------------
def resolve_key(morph: RobotMorphology, key: str) -> str:
    """Canonical perturbation key for ``key`` (``"thigh.length"`` or alias ``"Lthigh"``).

    Raises:
        ValueError: naming the key and listing the valid ones.
    """
    valid = morph.keys()
    if isinstance(key, str):
        if key in valid:
            return key
        if len(key) > 1 and key[0] in "LWM":
            factor = {"L": "length", "W": "width", "M": "mass"}[key[0]]
            alias = f"{key[1:].lower()}.{factor}"
            if alias in valid:
                return alias
    raise ValueError(f"unknown perturbation key {key!r} for {morph.name}; {_valid_keys_text(morph)}")


def _valid_keys_text(morph: RobotMorphology) -> str:
    return f"valid keys: {', '.join(morph.keys())} (aliases: L<part>, W<part>, M<part>)"


def _check_scale(morph: RobotMorphology, key: str, value) -> float:
    """``value`` as a factor of ``key``.

    Raises:
        ValueError: not a number, or not finite and > 0; naming the key and value and
            listing the valid keys (as for an unknown key).
    """
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"perturbation {key}={value!r} is not a number; {_valid_keys_text(morph)}") from None
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"perturbation {key}={value!r} must be a finite number > 0 (a factor of the nominal "
            f"{morph.name}, 1.0 = unchanged); {_valid_keys_text(morph)}"
        )
    return scale


def parse_perturbation(morph: RobotMorphology, spec: Mapping[str, float] | None) -> dict[str, float]:
    """Validate a fixed perturbation and return every key with its factor (1.0 if unset).

    Args:
        morph: the robot.
        spec: ``{key or alias: factor}`` or None (nominal).

    Raises:
        ValueError: on an unknown key or a non-positive or non-finite factor (both
            listing the valid keys), a key given twice (e.g. ``Lthigh`` and ``thigh.length``),
            or a spec that is not a mapping.
    """
    scales = morph.nominal()
    if spec is None:
        return scales
    if not isinstance(spec, Mapping):
        raise ValueError(f"perturbation={spec!r} must be a dict of key -> factor, e.g. {{'thigh.length': 1.3}}")
    seen: set[str] = set()
    for key, value in spec.items():
        canonical = resolve_key(morph, key)
        if canonical in seen:
            raise ValueError(f"perturbation key {canonical!r} is given twice")
        seen.add(canonical)
        scales[canonical] = _check_scale(morph, canonical, value)
    return scales


def _parse_interval(key: str, value) -> tuple[float, float]:
    if isinstance(value, str):
        parts = value.split("-") if value.count("-") == 1 else None
        if not parts:
            raise ValueError(f"range {key}={value!r} must be 'LOW-HIGH', e.g. '0.8-1.2'")
        value = parts
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"range {key}={value!r} must be (low, high) or 'LOW-HIGH'") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"range {key}={value!r} needs 0 < low <= high")
    return (low, high)


def parse_ranges(morph: RobotMorphology, spec) -> dict[str, tuple[tuple[float, float], ...]]:
    """Domain-randomisation ranges: key -> union of intervals of factors.

    Args:
        morph: the robot.
        spec: one of

            * a preset name from :data:`PRESETS`;
            * ``(low, high)`` or ``"LOW-HIGH"``: every body-part length and width factor
              drawn independently from [low, high];
            * a mapping ``key -> (low, high)`` or ``key -> [(low, high), ...]`` (a union),
              where a key may be an alias or a glob over keys (``"*.length"``).

    Raises:
        ValueError: on an unknown preset, key or glob matching nothing, or a bad interval.
    """
    if isinstance(spec, str) and spec.lower() in PRESETS:
        return _preset_ranges(morph, spec.lower())
    if isinstance(spec, str | tuple | list):
        if isinstance(spec, str) and spec.count("-") != 1:
            raise ValueError(f"randomize={spec!r} is not a preset ({', '.join(PRESETS)}) or a range 'LOW-HIGH'")
        interval = _parse_interval("randomize", spec)
        return {key: (interval,) for key in morph.keys() if key.endswith((".length", ".width"))}
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"randomize={spec!r} must be a preset ({', '.join(PRESETS)}), (low, high), "
            "'LOW-HIGH' or a dict key -> (low, high)"
        )
    ranges: dict[str, tuple[tuple[float, float], ...]] = {}
    for key, value in spec.items():
        if isinstance(key, str) and any(c in key for c in "*?["):
            keys = [k for k in morph.keys() if fnmatch.fnmatchcase(k, key)]
            if not keys:
                raise ValueError(
                    f"randomize key {key!r} matches no key of {morph.name}; valid keys: {', '.join(morph.keys())}"
                )
        else:
            keys = [resolve_key(morph, key)]
        is_union = (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) > 0
            and all(isinstance(v, Sequence) and not isinstance(v, str) for v in value)
        )
        intervals = tuple(_parse_interval(str(key), v) for v in (value if is_union else [value]))
        for k in keys:
            ranges[k] = intervals
    return ranges


def sample_perturbation(
    morph: RobotMorphology,
    ranges: Mapping[str, Sequence[tuple[float, float]]],
    rng: np.random.Generator,
) -> dict[str, float]:
    """Draw one perturbation (every key; keys without a range stay 1.0).

    Keys are drawn in :meth:`RobotMorphology.keys` order: an interval of a union with
    probability proportional to its width, then a uniform value in it, so the same
    ``rng`` state gives the same perturbation.
    """
    scales = morph.nominal()
    for key in morph.keys():
        intervals = ranges.get(key)
        if not intervals:
            continue
        widths = np.array([high - low for low, high in intervals], dtype=np.float64)
        if len(intervals) == 1:
            index = 0
        elif widths.sum() > 0:
            index = int(rng.choice(len(intervals), p=widths / widths.sum()))
        else:
            index = int(rng.integers(len(intervals)))
        low, high = intervals[index]
        scales[key] = float(rng.uniform(low, high))
    return scales


# -- MJCF geometry -------------------------------------------------------------------------
@dataclass(frozen=True)
class ScaledMJCF:
    """Result of :func:`scale_mjcf`.

    Attributes:
        xml: the MJCF text (the input unchanged when no geometry factor differs from 1).
        root_lift: metres the root body was raised (negative: lowered) so the lowest point
            at the initial pose keeps its nominal clearance.
        height_ratio: root height at the initial pose over the nominal root height.
        geom_masses: geom name (or ``"geom<i>"`` in document order) -> kg, as written.
    """

    xml: str
    root_lift: float = 0.0
    height_ratio: float = 1.0
    geom_masses: Mapping[str, float] = field(default_factory=dict)


def _vec(text: str | None, n: int, default: float = 0.0) -> np.ndarray:
    if text is None:
        return np.full(n, default)
    values = np.array([float(v) for v in text.split()], dtype=np.float64)
    return values


def _fmt(values) -> str:
    return " ".join(repr(float(v)) for v in np.atleast_1d(values))


def _rotation_free(body: ET.Element) -> None:
    for attr in ("quat", "axisangle", "euler", "xyaxes", "zaxis"):
        value = body.get(attr)
        if value is None:
            continue
        if attr == "quat" and np.allclose(_vec(value, 4), [1, 0, 0, 0]):
            continue
        raise ValueError(
            f"body {body.get('name')!r} is rotated ({attr}={value!r}); morphology scaling "
            "supports unrotated bodies only"
        )


def _anchor(body: ET.Element) -> np.ndarray:
    """Position (body frame) the body's segment hangs from: its first hinge joint."""
    for joint in body.findall("joint"):
        if joint.get("type", "hinge") == "hinge":
            return _vec(joint.get("pos"), 3)
    return np.zeros(3)


def _defaults(root: ET.Element) -> dict[str, str]:
    geom = root.find("default/geom")
    return dict(geom.attrib) if geom is not None else {}


def _geom_type(geom: ET.Element, defaults: Mapping[str, str]) -> str:
    return geom.get("type", defaults.get("type", "sphere"))


def _geom_volume(geom: ET.Element, defaults: Mapping[str, str]) -> float:
    """Volume in m^3 as MuJoCo computes it for inertia (capsule = cylinder + sphere)."""
    kind = _geom_type(geom, defaults)
    size = _vec(geom.get("size", defaults.get("size")), 3)
    fromto = geom.get("fromto")
    if kind in ("capsule", "cylinder"):
        radius = size[0]
        if fromto is not None:
            ends = _vec(fromto, 6)
            half = 0.5 * float(np.linalg.norm(ends[3:] - ends[:3]))
        else:
            half = size[1]
        volume = math.pi * radius**2 * 2 * half
        if kind == "capsule":
            volume += 4.0 / 3.0 * math.pi * radius**3
        return volume
    if kind == "sphere":
        return 4.0 / 3.0 * math.pi * size[0] ** 3
    if kind == "box":
        return 8.0 * float(np.prod(size[:3]))
    if kind == "ellipsoid":
        return 4.0 / 3.0 * math.pi * float(np.prod(size[:3]))
    raise ValueError(f"geom {geom.get('name')!r} of type {kind!r} cannot be scaled")


def _worldbody(root: ET.Element) -> ET.Element:
    worldbody = root.find("worldbody")
    if worldbody is None:
        raise ValueError("the MJCF has no <worldbody>")
    return worldbody


def _robot_geoms(root: ET.Element) -> list[ET.Element]:
    worldbody = _worldbody(root)
    return [g for body in worldbody.iter("body") for g in body.findall("geom")]


def _geom_key(geom: ET.Element, index: int) -> str:
    return geom.get("name") or f"geom{index}"


def geom_masses(xml_text: str, total_mass: float | None = None) -> dict[str, float]:
    """Mass in kg of every robot geom, as MuJoCo's compiler assigns it.

    Explicit ``mass`` wins; otherwise ``density`` (geom, default class, 1000 kg/m^3) x
    volume; ``total_mass`` (kg, as ``mj_setTotalmass``) or a ``<compiler settotalmass>``
    rescales them all.
    """
    root = ET.fromstring(xml_text)
    defaults = _defaults(root)
    masses = {}
    for index, geom in enumerate(_robot_geoms(root)):
        given = geom.get("mass")
        if given is not None:
            mass = float(given)
        else:
            density = float(geom.get("density", defaults.get("density", _DEFAULT_DENSITY)))
            mass = density * _geom_volume(geom, defaults)
        masses[_geom_key(geom, index)] = mass
    compiler = root.find("compiler")
    settotalmass = None if compiler is None else compiler.get("settotalmass")
    if total_mass is None and settotalmass is not None:
        total_mass = float(settotalmass)
    if total_mass is not None:
        factor = total_mass / sum(masses.values())
        masses = {k: v * factor for k, v in masses.items()}
    return masses


def _find_body(root: ET.Element, selector: str) -> ET.Element:
    worldbody = _worldbody(root)
    for body in worldbody.iter("body"):
        if selector.startswith("@"):
            if any(g.get("name") == selector[1:] for g in body.findall("geom")):
                return body
        elif body.get("name") == selector:
            return body
    raise ValueError(f"the MJCF has no body {selector!r}")


def _stretch_body(body: ET.Element, factor: float, defaults: Mapping[str, str]) -> None:
    """Scale the segment of ``body`` by ``factor`` about its anchor (see module docs)."""
    origin = _anchor(body)

    def scaled(point: np.ndarray) -> np.ndarray:
        return origin + factor * (point - origin)

    for geom in body.findall("geom"):
        if geom.get("fromto") is not None:
            ends = _vec(geom.get("fromto"), 6)
            geom.set("fromto", _fmt(np.concatenate([scaled(ends[:3]), scaled(ends[3:])])))
            continue
        geom.set("pos", _fmt(scaled(_vec(geom.get("pos"), 3))))
        if _geom_type(geom, defaults) in ("capsule", "cylinder"):
            size = _vec(geom.get("size", defaults.get("size")), 2)
            size[1] *= factor
            geom.set("size", _fmt(size))
    for site in body.findall("site"):
        site.set("pos", _fmt(scaled(_vec(site.get("pos"), 3))))
    for joint in body.findall("joint"):
        if joint.get("type", "hinge") == "hinge" and joint.get("pos") is not None:
            joint.set("pos", _fmt(scaled(_vec(joint.get("pos"), 3))))
    for child in body.findall("body"):
        _rotation_free(child)
        offset = _anchor(child)  # the child's joint in its own frame stays where it is
        anchor = _vec(child.get("pos"), 3) + offset
        child.set("pos", _fmt(scaled(anchor) - offset))


def _widen_body(body: ET.Element, factor: float, defaults: Mapping[str, str]) -> None:
    for geom in body.findall("geom"):
        size = _vec(geom.get("size", defaults.get("size")), 3)
        size[0] *= factor
        geom.set("size", _fmt(size))


def compile_mjcf(xml: str, total_mass: float | None = None):
    """Compile ``xml`` to a ``mujoco.MjModel``; with ``total_mass`` (kg), scale every body's
    mass and inertia to that total.

    ``total_mass`` does what ``<compiler settotalmass>`` did (v5's half_cheetah.xml; MuJoCo
    deprecates the attribute and warns on every compile): ``mj_setTotalmass`` then
    ``mj_setConst`` on the compiled model, which gives the same model bit for bit.
    """
    import mujoco  # local: the XML editing above needs no MuJoCo

    model = mujoco.MjModel.from_xml_string(xml)
    if total_mass is not None:
        mujoco.mj_setTotalmass(model, float(total_mass))
        mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


def standing_pose(model, qpos: np.ndarray) -> np.ndarray:
    """``qpos`` with every limited hinge and slide joint clamped into its range: the pose
    the joint limits push the robot into within its first steps (the ant's initial ankle
    angle 0 is outside their 30-70 degree range, so its shins drop at once).

    Args:
        model: a ``mujoco.MjModel``.
        qpos: (nq,) float64 joint positions.

    Returns:
        A new (nq,) float64 array.
    """
    import mujoco

    out = np.array(qpos, dtype=np.float64)
    clamped = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    for j in range(model.njnt):
        if model.jnt_limited[j] and int(model.jnt_type[j]) in clamped:
            a = model.jnt_qposadr[j]
            low, high = model.jnt_range[j]
            out[a] = min(max(out[a], low), high)
    return out


def lowest_point(model, data) -> float:
    """Lowest world z (m) of any geom not attached to the world body, at ``data``'s pose
    (after ``mj_kinematics``): each geom's bottom along z from its size and orientation."""
    import mujoco

    lowest = math.inf
    for g in range(model.ngeom):
        if model.geom_bodyid[g] == 0:
            continue
        z = data.geom_xpos[g, 2]
        rot_z = data.geom_xmat[g].reshape(3, 3)[2]  # z components of the geom's axes
        size = model.geom_size[g]
        kind = model.geom_type[g]
        if kind == mujoco.mjtGeom.mjGEOM_SPHERE:
            bottom = z - size[0]
        elif kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
            bottom = z - abs(rot_z[2]) * size[1] - size[0]
        elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
            bottom = z - abs(rot_z[2]) * size[1] - size[0] * math.sqrt(max(0.0, 1 - rot_z[2] ** 2))
        else:
            bottom = z - float(np.abs(rot_z) @ size[:3])
        lowest = min(lowest, bottom)
    return float(lowest)


@lru_cache(maxsize=64)
def _lowest_point_and_root(xml_text: str, root_body: str) -> tuple[float, float]:
    """(lowest z of any robot geom, root body z) at the model's standing pose
    (:func:`standing_pose` of its initial pose), MuJoCo kinematics."""
    import mujoco  # local: keep this module importable without MuJoCo for XML-only use

    model = compile_mjcf(xml_text)
    data = mujoco.MjData(model)
    data.qpos[:] = standing_pose(model, model.qpos0)
    mujoco.mj_kinematics(model, data)
    root_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, root_body)
    return lowest_point(model, data), float(data.xpos[root_id, 2])


#: Smallest and largest standing-height ratio a perturbed robot may have: outside it the
#: robot is a different machine (a hopper 2 cm tall, an ant 30 m tall) whose v5 reward and
#: termination no longer mean anything, and MuJoCo's default solver settings no longer fit.
HEIGHT_RATIO_RANGE = (0.1, 10.0)


def _check_buildable(
    morph: RobotMorphology,
    scales: Mapping[str, float],
    nominal_root: float,
    lift: float,
    height_ratio: float,
) -> None:
    """Refuse a perturbed body that cannot be built sensibly (one-line ``ValueError``)."""
    low, high = HEIGHT_RATIO_RANGE
    if not (math.isfinite(lift) and low <= height_ratio <= high):
        changed = {k: v for k, v in scales.items() if "." in k and v != 1.0}
        raise ValueError(
            f"perturbation {changed} cannot be built sensibly: the {morph.name} would stand "
            f"{height_ratio:.3g} x its nominal height (root at {nominal_root + lift:.3g} m); "
            f"allowed {low:g} to {high:g}"
        )


def _overlapping_body_pairs(xml_text: str) -> set[tuple[str, str]]:
    """Named robot body pairs whose geoms overlap (contact distance < 0) at the standing pose."""
    import mujoco

    model = compile_mjcf(xml_text)
    data = mujoco.MjData(model)
    data.qpos[:] = standing_pose(model, model.qpos0)
    mujoco.mj_fwdPosition(model, data)  # kinematics and collision detection
    pairs = set()
    for i in range(data.ncon):
        contact = data.contact[i]
        b1, b2 = model.geom_bodyid[contact.geom1], model.geom_bodyid[contact.geom2]
        if contact.dist < 0 and b1 != 0 and b2 != 0:
            names = sorted((model.body(b1).name, model.body(b2).name))
            if all(names):
                pairs.add((names[0], names[1]))
    return pairs


def _exclude_overlaps(root: ET.Element, nominal_xml: str) -> None:
    """Exclude contacts between robot bodies that a shrunk part makes overlap at the start
    (a hopper with a 5 cm thigh: torso and leg capsules meet), as MuJoCo excludes parent and
    child; the nominal model's own overlaps are left as they are."""
    scaled_text = ET.tostring(root, encoding="unicode")
    new = _overlapping_body_pairs(scaled_text) - _overlapping_body_pairs(nominal_xml)
    if not new:
        return
    contact = root.find("contact")
    if contact is None:
        contact = ET.SubElement(root, "contact")
    for body1, body2 in sorted(new):
        ET.SubElement(contact, "exclude", body1=body1, body2=body2)


def scale_mjcf(
    xml_text: str,
    morph: RobotMorphology,
    scales: Mapping[str, float],
    total_mass: float | None = None,
) -> ScaledMJCF:
    """Apply the body-part factors of ``scales`` (length, width, mass) to an MJCF.

    Global factors in ``scales`` are ignored here (backends apply them). With every part
    factor at 1.0 the input text is returned unchanged, so nominal models are bit-identical
    to their source. Otherwise every robot geom gets an explicit ``mass`` (nominal mass x
    volume ratio, or x the part's ``mass`` factor) and ``settotalmass`` is dropped, then the
    root is moved to keep the floor clearance (needs ``mujoco`` to pose the model).

    Args:
        xml_text: local-coordinate MJCF.
        morph: the robot's parts.
        scales: key -> factor, as from :func:`parse_perturbation`.
        total_mass: the nominal model's total mass in kg when the loader sets it after
            compiling (:func:`compile_mjcf`; v5's half cheetah, 14 kg), else None. The
            nominal geom masses are scaled to it; a perturbed model gets explicit masses.

    Raises:
        ValueError: on a missing body, a rotated body, an unsupported geom type, or a
            body that cannot be built sensibly (see :func:`_check_buildable`).
    """
    part_scales = {part: {f: float(scales.get(f"{part}.{f}", 1.0)) for f in PART_FACTORS} for part in morph.parts}
    if all(v == 1.0 for factors in part_scales.values() for v in factors.values()):
        return ScaledMJCF(xml=xml_text, geom_masses=geom_masses(xml_text, total_mass))

    root = ET.fromstring(xml_text)
    defaults = _defaults(root)
    geoms = _robot_geoms(root)
    nominal_mass = {id(g): m for g, m in zip(geoms, geom_masses(xml_text, total_mass).values())}
    nominal_volume = {id(g): _geom_volume(g, defaults) for g in geoms}
    mass_factor: dict[int, float] = {}

    for part, factors in part_scales.items():
        for selector in morph.parts[part]:
            body = _find_body(root, selector)
            _rotation_free(body)
            if factors["length"] != 1.0:
                _stretch_body(body, factors["length"], defaults)
            if factors["width"] != 1.0:
                _widen_body(body, factors["width"], defaults)
            for geom in body.findall("geom"):
                mass_factor[id(geom)] = factors["mass"]

    masses = {}
    for index, geom in enumerate(geoms):
        if id(geom) in mass_factor and mass_factor[id(geom)] != 1.0:
            mass = nominal_mass[id(geom)] * mass_factor[id(geom)]
        else:  # nominal density: mass follows the volume
            mass = nominal_mass[id(geom)] * _geom_volume(geom, defaults) / nominal_volume[id(geom)]
        geom.set("mass", repr(float(mass)))
        masses[_geom_key(geom, index)] = float(mass)
    compiler = root.find("compiler")
    if compiler is not None and "settotalmass" in compiler.attrib:
        del compiler.attrib["settotalmass"]

    scaled_text = ET.tostring(root, encoding="unicode")
    nominal_low, nominal_root = _lowest_point_and_root(xml_text, morph.root_body)
    scaled_low, _ = _lowest_point_and_root(scaled_text, morph.root_body)
    lift = nominal_low - scaled_low
    root_body = _find_body(root, morph.root_body)
    position = _vec(root_body.get("pos"), 3)
    position[2] += lift
    root_body.set("pos", _fmt(position))
    # A vertical slide joint with a reference (hopper/walker rootz, ref = standing height)
    # keeps reading the absolute height of the root.
    for joint in root_body.findall("joint"):
        axis = _vec(joint.get("axis"), 3) if joint.get("axis") else np.array([0, 0, 1.0])
        ref = joint.get("ref")
        if joint.get("type") == "slide" and ref and np.allclose(axis, [0, 0, 1]):
            joint.set("ref", repr(float(ref) + float(lift)))
    height_ratio = (nominal_root + lift) / nominal_root if nominal_root > 0 else 1.0
    _check_buildable(morph, scales, nominal_root, lift, height_ratio)
    _exclude_overlaps(root, xml_text)
    return ScaledMJCF(
        xml=ET.tostring(root, encoding="unicode"),
        root_lift=float(lift),
        height_ratio=float(height_ratio),
        geom_masses=masses,
    )
