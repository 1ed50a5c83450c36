"""Fast, lazily created offscreen MuJoCo rendering (RGB frames, uint8 (H, W, 3)).

:class:`FastRenderer` draws frames with MuJoCo's low-level API (``mjv_updateScene``,
``mjr_render``, ``mjr_readPixels``) into a reused buffer. Given several cameras (views),
it draws each view with the same GL context, scene and buffer (switching the camera
between draws) and puts the views side by side, left to right: (H, n_views * W, 3). Nothing touches OpenGL until the
first :meth:`FastRenderer.render`, so an environment that owns a renderer can be created,
pickled and forked freely before it renders.

Speed on a CPU (Mesa llvmpipe through EGL) comes from settings that must be on the model
before a render context exists, which :func:`configure_fast_visuals` applies (DESIGN.md,
"What makes CPU rendering fast"): no multisampling (``vis.quality.offsamples = 0``), no
shadow map (``shadowsize = 0``), low tessellation (``numslices/numstacks/numquads``
8/4/1), an offscreen buffer of exactly the image size, and a coarse render grid on finite
ground planes; plus scene flags without shadows, reflections, skybox, fog or haze.
On the 2-core development machine, stepping ``ReacherPlane-v0`` with a 64x64 pixel
observation runs at about 3,000-5,000 steps per second per core, versus about 150-280 for
``Reacher-v5`` with ``render_mode="rgb_array"`` (``benchmarks/env_speed.py``).

Every render makes this renderer's context current only for the draw and then restores
whatever context was current before (MuJoCo's ``GLContext.as_current``), so it coexists in
one thread with other renderers, including gymnasium's ``MujocoRenderer``, which makes its
context current once and expects it to stay current.

A process forked from one that ran Mesa llvmpipe render threads cannot render (the first
render would block forever); :func:`visfore_envs.core.gl.check_fork_safe` turns that into
a one-line ``RuntimeError`` saying what to do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from visfore_envs.core.gl import check_fork_safe, create_gl_context

__all__ = ["CameraSpec", "FastRenderer", "configure_fast_visuals"]

_FAST_OFF_FLAGS = (
    mujoco.mjtRndFlag.mjRND_SHADOW,
    mujoco.mjtRndFlag.mjRND_REFLECTION,
    mujoco.mjtRndFlag.mjRND_SKYBOX,
    mujoco.mjtRndFlag.mjRND_FOG,
    mujoco.mjtRndFlag.mjRND_HAZE,
)


def configure_fast_visuals(model: mujoco.MjModel, width: int, height: int) -> None:
    """Set the model's visual options for fast offscreen rendering at ``width`` x ``height``.

    Must be called before any render context is made for ``model`` (MuJoCo copies these
    into the context when it is created). Changes nothing that affects physics: the
    ``vis.quality`` settings, ``vis.global_.offwidth/offheight`` (set to the image size,
    in pixels) and, for finite planes, the third size (render grid spacing only) raised to
    the plane's full extent so it is drawn as one quad.
    """
    q = model.vis.quality
    q.offsamples = 0
    q.shadowsize = 0
    q.numslices = 8
    q.numstacks = 4
    q.numquads = 1
    model.vis.global_.offwidth = int(width)
    model.vis.global_.offheight = int(height)
    planes = np.flatnonzero(model.geom_type == int(mujoco.mjtGeom.mjGEOM_PLANE))
    for g in planes:
        sx, sy, spacing = model.geom_size[g]
        if sx > 0 and sy > 0:
            model.geom_size[g, 2] = max(spacing, 2.0 * max(sx, sy))


@dataclass(frozen=True)
class CameraSpec:
    """Where the renderer looks from.

    Either a camera defined in the model (``name``), or MuJoCo's free camera: ``distance``
    from ``lookat`` in metres, ``azimuth`` and ``elevation`` in degrees (MuJoCo's
    convention: azimuth 90 looks along +y, elevation -90 looks straight down), ``lookat``
    the point looked at (x, y, z) in metres. The free camera's vertical field of view is
    the model's ``vis.global_.fovy`` (degrees).
    """

    name: str | None = None
    distance: float = 1.0
    azimuth: float = 90.0
    elevation: float = -45.0
    lookat: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _egl_module(gl: Any) -> Any:
    """MuJoCo's EGL module when ``gl`` is its EGL context (else None)."""
    if type(gl).__module__ == "mujoco.egl" and getattr(gl, "_context", None):
        import mujoco.egl

        return mujoco.egl
    return None


class FastRenderer:
    """Offscreen RGB renderer for one model, created lazily, reusing its read buffer.

    Args:
        model: the MuJoCo model; call :func:`configure_fast_visuals` on it first.
        width, height: image size of one view in pixels (<= the model's
            ``offwidth``/``offheight``).
        camera: a :class:`CameraSpec`, or a non-empty sequence of them (the views, drawn
            one after the other on this renderer's one context and concatenated left to
            right: frames are then (height, len(camera) * width, 3)).
        geom_groups: which of MuJoCo's 6 geom groups are drawn (default: 0, 1, 2 as MuJoCo).
        max_geom: capacity of the abstract scene.

    Raises:
        ValueError: if a camera's ``name`` is not a camera of the model, or the sequence
            of cameras is empty.

    The GL context, MjrContext and scene are created on the first :meth:`render` (and
    again if that happens in a forked child process: a context is never used in a process
    other than the one that created it). Every :meth:`render` makes its context current
    for the draw and restores the previous one after, so several renderers (gymnasium's
    too) can share one thread. :meth:`close` frees the GL resources.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        width: int,
        height: int,
        camera: CameraSpec | Sequence[CameraSpec],
        geom_groups: Sequence[int] = (0, 1, 2),
        max_geom: int | None = None,
    ) -> None:
        self._model = model
        self.width = int(width)
        self.height = int(height)
        cameras = (camera,) if isinstance(camera, CameraSpec) else tuple(camera)
        if not cameras:
            raise ValueError("FastRenderer needs at least one camera")
        self._camera_ids = tuple(self._camera_id_of(model, c) for c in cameras)
        #: The views' cameras, left to right in each frame.
        self.cameras: tuple[CameraSpec, ...] = cameras
        #: The first (with one view, the only) camera.
        self.camera = cameras[0]
        self._geom_groups = tuple(int(g) for g in geom_groups)
        self._max_geom = int(max_geom) if max_geom is not None else model.ngeom + model.nsite + 64
        self._gl: Any = None  # the MuJoCo GL context (egl, osmesa or glfw), made lazily
        self._con = None
        self._pid: int | None = None

    @staticmethod
    def _camera_id_of(model: mujoco.MjModel, camera: CameraSpec) -> int:
        """The model camera id of ``camera`` (-1 for the free camera).

        Raises:
            ValueError: ``camera.name`` is not a camera of the model.
        """
        if camera.name is None:
            return -1
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera.name)
        if cam_id < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            allowed = ", ".join(repr(n) for n in names) or "(the model has no cameras)"
            raise ValueError(f"camera={camera.name!r} is not one of {allowed}")
        return cam_id

    @property
    def n_views(self) -> int:
        """Number of views (cameras) per frame."""
        return len(self.cameras)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape of the frames :meth:`render` returns: (height, n_views * width, 3)."""
        return (self.height, self.n_views * self.width, 3)

    # -- lazy set-up -------------------------------------------------------------------
    def _setup(self) -> None:
        model = self._model
        check_fork_safe()
        self._gl = create_gl_context(self.width, self.height)
        with self._current():
            self._con = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._scene = mujoco.MjvScene(model, self._max_geom)
        for flag in _FAST_OFF_FLAGS:
            self._scene.flags[flag] = 0
        self._option = mujoco.MjvOption()
        self._option.geomgroup[:] = 0
        for g in self._geom_groups:
            self._option.geomgroup[g] = 1
        self._cams = tuple(self._mjv_camera(c, i) for c, i in zip(self.cameras, self._camera_ids))
        self._cam = self._cams[0]
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._buffer = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._catmask = int(mujoco.mjtCatBit.mjCAT_ALL)
        self._pid = os.getpid()

    @staticmethod
    def _mjv_camera(camera: CameraSpec, camera_id: int) -> mujoco.MjvCamera:
        cam = mujoco.MjvCamera()
        if camera_id >= 0:
            cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
            cam.fixedcamid = camera_id
        else:
            cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            cam.distance = camera.distance
            cam.azimuth = camera.azimuth
            cam.elevation = camera.elevation
            cam.lookat[:] = camera.lookat
        return cam

    def _current(self) -> contextlib.AbstractContextManager[Any]:
        """Context manager: this renderer's GL context is current inside.

        When another context was current (another renderer's, gymnasium's), it is current
        again after, so renderers that expect their context to stay current keep working.
        When none was, ours stays current: switching back to no context costs a context
        switch (and a flush) on every frame, and nobody expects a context there.
        """
        gl = self._gl
        egl = _egl_module(gl)
        if egl is not None:
            prev = egl.EGL.eglGetCurrentContext()
            if not prev:
                gl.make_current()
                return contextlib.nullcontext()
            if prev.address == gl._context.address:
                return contextlib.nullcontext()
        as_current = getattr(gl, "as_current", None)
        if as_current is not None:
            return as_current()
        gl.make_current()  # a context class without as_current (old MuJoCo)
        return contextlib.nullcontext()

    @property
    def is_open(self) -> bool:
        """True once the GL context exists (after the first render, before close)."""
        return self._con is not None

    def set_model(self, model: mujoco.MjModel) -> None:
        """Draw ``model`` from now on, keeping the GL context.

        For models that differ only in numbers (a perturbed robot: sizes, positions,
        masses), not in their textures, meshes or element counts; call
        :func:`configure_fast_visuals` on it first."""
        self._model = model

    # -- rendering ---------------------------------------------------------------------
    def render(self, data: mujoco.MjData) -> np.ndarray:
        """Render ``data`` (positions as of its last kinematics/forward pass).

        Returns:
            A new (height, width, 3) uint8 array, row 0 at the top of the image; with
            several views (height, n_views * width, 3), view ``i`` in columns
            ``[i * width, (i + 1) * width)``, each view exactly the frame a one-view
            renderer of that camera draws.

        Raises:
            RuntimeError: if no OpenGL context can be created (see
                :func:`visfore_envs.core.gl.create_gl_context`), or in a forked process that
                cannot render (:func:`visfore_envs.core.gl.check_fork_safe`).
        """
        if self._pid != os.getpid():
            # First render, or first render in a forked child: the parent's GL objects are
            # unusable here; drop them without freeing (they belong to the parent).
            self._gl = self._con = None
            self._setup()
        model, option, scene, catmask = self._model, self._option, self._scene, self._catmask
        cams = self._cams
        if len(cams) == 1:
            mujoco.mjv_updateScene(model, data, option, None, self._cam, catmask, scene)
            with self._current():
                mujoco.mjr_render(self._rect, scene, self._con)
                mujoco.mjr_readPixels(self._buffer, None, self._rect, self._con)
            return self._buffer[::-1].copy()
        w = self.width
        out = np.empty(self.frame_shape, dtype=np.uint8)
        with self._current():
            for i, cam in enumerate(cams):
                # The whole scene update per view (not just mjv_updateCamera): it also sets
                # each geom's camera distance, which orders the translucent geoms.
                mujoco.mjv_updateScene(model, data, option, None, cam, catmask, scene)
                mujoco.mjr_render(self._rect, scene, self._con)
                mujoco.mjr_readPixels(self._buffer, None, self._rect, self._con)
                out[:, i * w : (i + 1) * w] = self._buffer[::-1]
        return out

    def close(self) -> None:
        """Free the MjrContext and GL context (if created in this process). Idempotent."""
        if self._con is not None and self._pid == os.getpid():
            try:
                with self._current():
                    self._con.free()
            finally:
                self._gl.free()
        self._gl = self._con = None
        self._pid = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing useful to do
            pass

    def __getstate__(self):
        raise TypeError("FastRenderer cannot be pickled; pickle the environment instead")
