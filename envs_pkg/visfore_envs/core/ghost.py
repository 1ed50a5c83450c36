"""Target "ghost": a translucent, non-colliding copy of a robot drawn at its target pose.

:func:`load_model_with_ghost` compiles an MJCF file twice: as is (the *physics model*)
and with, for every movable body of the robot, a mocap body carrying copies of that
body's visible geoms (``contype=0``, ``conaffinity=0``) in a translucent colour plus a
small marker sphere at each key-point site (the *scene model*, used only for rendering).
All ghost geoms are in geom group :data:`GHOST_GROUP` so a renderer can show or hide them.
:class:`Ghost` poses the mocap bodies from the body poses of an ``MjData`` whose
kinematics were computed at the target joint configuration.

The ghost bodies are appended after the robot's bodies and have no degrees of freedom,
so the scene model has the same ``nq``, body, joint and site ids as the physics model:
copying ``qpos`` and running ``mj_kinematics`` poses the scene. Keeping the ghost out of
the physics model keeps ``mj_step`` as cheap as the robot alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mujoco
import numpy as np

__all__ = ["GHOST_GROUP", "GHOST_PREFIX", "Ghost", "load_model_with_ghost"]

#: Geom group of every ghost geom (MuJoCo draws groups 0-2 by default).
GHOST_GROUP = 5
#: Name prefix of the ghost mocap bodies and geoms.
GHOST_PREFIX = "ghost/"
# Every ghost geom: no collisions, no mass (the ghost never touches the dynamics), and in
# GHOST_GROUP so a renderer can toggle it.
_GHOST_GEOM = dict(contype=0, conaffinity=0, group=GHOST_GROUP, density=0, mass=0)


_RADIUS_FIRST = {
    int(mujoco.mjtGeom.mjGEOM_SPHERE),
    int(mujoco.mjtGeom.mjGEOM_CAPSULE),
    int(mujoco.mjtGeom.mjGEOM_CYLINDER),
}
_ALL_HALF_SIZES = {int(mujoco.mjtGeom.mjGEOM_BOX), int(mujoco.mjtGeom.mjGEOM_ELLIPSOID)}


def _movable_bodies(model: mujoco.MjModel) -> list[int]:
    """Bodies not welded to the world (they move with some joint)."""
    return [b for b in range(1, model.nbody) if model.body_weldid[b] != 0]


def load_model_with_ghost(
    xml_path: str,
    keypoint_sites: Sequence[str],
    *,
    ghost_rgba: Sequence[float] = (0.95, 0.35, 0.2, 0.35),
    marker_rgba: Sequence[float] = (0.95, 0.15, 0.1, 0.9),
    marker_radius: float = 0.015,
    shrink: float = 0.8,
    edit_scene: Callable[[mujoco.MjSpec, mujoco.MjModel], None] | None = None,
) -> tuple[mujoco.MjModel, mujoco.MjModel, list[tuple[int, int]]]:
    """Compile ``xml_path`` as is and with a target ghost added.

    Args:
        xml_path: MJCF file of the robot.
        keypoint_sites: names of the key-point sites; each gets a marker sphere of
            ``marker_radius`` metres and colour ``marker_rgba`` in the ghost (make it
            clearly larger than the robot geoms around the site, so it shows on the robot
            at the target without sharing a surface with it).
        ghost_rgba: colour (RGBA in [0, 1]) of the ghost's copies of the robot geoms.
        shrink: factor on the ghost geoms' thickness (radii of spheres, capsules and
            cylinders; all half-sizes of boxes and ellipsoids). Below 1 the ghost lies
            inside the robot when the robot reaches the target, so the two never fight
            for the same depth (which would make frames near the target flicker between
            blended and unblended pixels). Mesh geoms are copied unscaled.
        edit_scene: None, or ``edit_scene(spec, physics_model)`` called on the scene's
            ``MjSpec`` after the ghost is added and before it is compiled, to add more
            visual-only elements (e.g. the leader of :mod:`visfore_envs.mimic`). It must
            append bodies (no joints) so the scene keeps the physics model's ``nq`` and
            body, joint and site ids.

    Returns:
        ``(physics_model, scene_model, pairs)``: the model as authored, the model with the
        ghost, and for each ghosted robot body the pair ``(robot body id, mocap id)``
        (ids in the scene model).

    Raises:
        ValueError: if a key-point site is not in the model.
    """
    spec = mujoco.MjSpec.from_file(str(xml_path))
    base = spec.compile()
    site_ids = _keypoint_site_ids(base, keypoint_sites, xml_path)
    ghost_names = {b: _add_ghost_body(spec, base, b, ghost_rgba, shrink) for b in _ghosted_bodies(base, site_ids)}
    for sid in site_ids:
        _add_marker(spec, base, sid, ghost_names[int(base.site_bodyid[sid])], marker_rgba, marker_radius)
    if edit_scene is not None:
        edit_scene(spec, base)
    scene = spec.compile()
    pairs = []
    for b, gname in ghost_names.items():
        gid = mujoco.mj_name2id(scene, mujoco.mjtObj.mjOBJ_BODY, gname)
        pairs.append((b, int(scene.body_mocapid[gid])))
    return base, scene, pairs


def _keypoint_site_ids(base: mujoco.MjModel, keypoint_sites: Sequence[str], xml_path: str) -> list[int]:
    """Site ids of ``keypoint_sites`` in ``base``.

    Raises:
        ValueError: if a key-point site is not in the model.
    """
    site_ids = []
    for name in keypoint_sites:
        sid = mujoco.mj_name2id(base, mujoco.mjtObj.mjOBJ_SITE, name)
        if sid < 0:
            raise ValueError(f"key-point site {name!r} is not in {xml_path}")
        site_ids.append(sid)
    return site_ids


def _ghosted_bodies(base: mujoco.MjModel, site_ids: Sequence[int]) -> list[int]:
    """The bodies that get a ghost: the movable ones, then any other body carrying a
    key-point site (in site order)."""
    bodies = _movable_bodies(base)
    for sid in site_ids:
        b = int(base.site_bodyid[sid])
        if b not in bodies:
            bodies.append(b)
    return bodies


def _add_ghost_body(spec: mujoco.MjSpec, base: mujoco.MjModel, body: int, rgba: Sequence[float], shrink: float) -> str:
    """Add to ``spec`` the mocap ghost of ``body`` with copies of its visible geoms; return
    the ghost body's name."""
    gname = GHOST_PREFIX + (base.body(body).name or f"body{body}")
    gbody = spec.worldbody.add_body(name=gname, mocap=True)
    for g in np.flatnonzero(base.geom_bodyid == body):
        if base.geom_group[g] > 2 or base.geom_rgba[g, 3] == 0:
            continue  # invisible in the robot, invisible in the ghost
        shape = _ghost_geom_shape(spec, base, int(g), shrink)
        if shape is None:
            continue
        gbody.add_geom(name=f"{gname}/geom{g}", rgba=list(rgba), **_GHOST_GEOM, **shape)
    return gname


def _ghost_geom_shape(spec: mujoco.MjSpec, base: mujoco.MjModel, g: int, shrink: float) -> dict[str, Any] | None:
    """Type, size and placement of the ghost copy of compiled geom ``g`` (thickness times
    ``shrink``); for a mesh geom the authored geom's (None if it has no name to find it by)."""
    gtype = int(base.geom_type[g])
    if gtype == int(mujoco.mjtGeom.mjGEOM_MESH):
        # Compiled mesh geoms already include the mesh's own offset; copy the authored geom
        # instead so the offset is applied once.
        src = spec.geom(base.geom(g).name) if base.geom(g).name else None
        if src is None:
            return None
        return dict(type=src.type, meshname=src.meshname, pos=src.pos, quat=src.quat)
    size = base.geom_size[g].copy()
    if gtype in _RADIUS_FIRST:
        size[0] *= shrink
    elif gtype in _ALL_HALF_SIZES:
        size *= shrink
    return dict(
        type=mujoco.mjtGeom(gtype),
        size=size,
        pos=base.geom_pos[g].copy(),
        quat=base.geom_quat[g].copy(),
    )


def _add_marker(
    spec: mujoco.MjSpec,
    base: mujoco.MjModel,
    site: int,
    ghost_body: str,
    rgba: Sequence[float],
    radius: float,
) -> None:
    """Add the marker sphere of key-point ``site`` to the ghost body named ``ghost_body``."""
    spec.body(ghost_body).add_geom(
        name=f"{GHOST_PREFIX}marker/{base.site(site).name}",
        type=mujoco.mjtGeom.mjGEOM_SPHERE,
        size=[radius, 0, 0],
        pos=base.site_pos[site].copy(),
        rgba=list(rgba),
        **_GHOST_GEOM,
    )


class Ghost:
    """Poses the ghost mocap bodies.

    Args:
        pairs: ``(robot body id, mocap id)`` pairs from :func:`load_model_with_ghost`.
    """

    def __init__(self, pairs: Sequence[tuple[int, int]]) -> None:
        self.body_ids = np.array([p[0] for p in pairs], dtype=np.intp)
        self.mocap_ids = np.array([p[1] for p in pairs], dtype=np.intp)

    def pose_from(self, source: mujoco.MjData, *targets: mujoco.MjData) -> None:
        """Copy the robot body poses of ``source`` (kinematics already computed) onto the
        ghost mocap bodies of every data in ``targets`` (positions in metres, unit quaternions).
        Call ``mj_kinematics``/``mj_forward`` on a target afterwards to move its ghost geoms."""
        pos = source.xpos[self.body_ids]
        quat = source.xquat[self.body_ids]
        for data in targets:
            data.mocap_pos[self.mocap_ids] = pos
            data.mocap_quat[self.mocap_ids] = quat
