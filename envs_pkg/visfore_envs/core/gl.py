"""OpenGL backend selection for MuJoCo's offscreen rendering.

Two things have to happen *before* ``mujoco`` (and Mesa) are loaded, which is why
:mod:`visfore_envs` calls :func:`configure_gl_environment` as its very first statement and
why this module imports nothing heavy:

* ``MUJOCO_GL=egl`` when ``MUJOCO_GL`` is unset and there is no display (neither
  ``DISPLAY`` nor ``WAYLAND_DISPLAY``): headless machines render through EGL (Mesa llvmpipe
  on a CPU-only machine). On macOS nothing is changed (MuJoCo picks CGL/GLFW itself).
* ``LP_NUM_THREADS=0`` when unset: Mesa's llvmpipe rasterizer threads do not survive
  ``fork``, so a process that rendered and then forks (gymnasium's ``AsyncVectorEnv`` with
  the default start method) hangs in the child's first render. Rendering in the calling
  thread avoids that and is as fast at small image sizes (see DESIGN.md).

:func:`create_gl_context` then makes a context for the backend that ``MUJOCO_GL`` names
*at call time*, so rendering also works when ``mujoco`` was imported earlier with its
GLFW default on a machine without a display.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["configure_gl_environment", "create_gl_context", "has_display"]


def has_display() -> bool:
    """Return True when an X11 or Wayland display is available (``DISPLAY``/``WAYLAND_DISPLAY``)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def configure_gl_environment() -> str | None:
    """Pick the GL backend through environment variables; call before ``import mujoco``.

    Sets ``MUJOCO_GL=egl`` if it is unset and there is no display (not on macOS) and
    ``LP_NUM_THREADS=0`` if unset. Variables the user set are never changed. Idempotent.

    Returns:
        The value of ``MUJOCO_GL`` afterwards (``None`` when unset).
    """
    if sys.platform != "darwin":
        os.environ.setdefault("LP_NUM_THREADS", "0")
        if "MUJOCO_GL" not in os.environ and not has_display():
            os.environ["MUJOCO_GL"] = "egl"
    return os.environ.get("MUJOCO_GL")


def _backend_candidates() -> list[str]:
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not sys.platform.startswith("linux"):
        return ["default"]
    headless = not has_display()
    if backend == "egl":
        return ["egl", "osmesa"]
    if backend == "osmesa":
        return ["osmesa"]
    if backend in ("glfw", "glx"):
        return ["glfw"] + (["egl", "osmesa"] if headless else [])
    return ["egl", "osmesa"] if headless else ["glfw", "egl", "osmesa"]


def _nothing() -> None:
    return None


def _egl_current_restorer():
    """A function that makes the thread's current EGL context (if any) current again.

    ``mujoco.egl.GLContext()`` calls ``eglReleaseThread``, which un-currents whatever
    context the thread had (e.g. gymnasium's renderer, which never makes its context
    current again and would then draw nothing)."""
    from mujoco.egl import egl_ext as EGL

    context = EGL.eglGetCurrentContext()
    if not context:
        return _nothing
    display = EGL.eglGetCurrentDisplay()
    draw = EGL.eglGetCurrentSurface(EGL.EGL_DRAW)
    read = EGL.eglGetCurrentSurface(EGL.EGL_READ)

    def restore() -> None:
        EGL.eglMakeCurrent(display, draw, read, context)

    return restore


def create_gl_context(width: int, height: int):
    """Create an offscreen OpenGL context able to hold a ``width`` x ``height`` framebuffer.

    The backend comes from ``MUJOCO_GL`` as it is *now* (``egl``, ``osmesa``, ``glfw``/``glx``;
    unset means EGL without a display, GLFW with one); when it fails and there is no display,
    EGL and then OSMesa are tried. On macOS and Windows, ``mujoco.GLContext`` is used.

    Args:
        width, height: framebuffer size in pixels.

    Returns:
        A MuJoCo GL context object (``make_current()``, ``as_current()``, ``free()``), not
        current; the context that was current before (if any) still is.

    Raises:
        RuntimeError: when no backend could create a context (the message lists each error).
    """
    errors = []
    candidates = _backend_candidates()
    for name in candidates:
        restore = _nothing
        try:
            with warnings.catch_warnings(record=True) as caught:
                # GLFW reports failures (e.g. no display) as warnings, not exceptions.
                warnings.simplefilter("always")
                if name == "egl":
                    from mujoco.egl import GLContext

                    restore = _egl_current_restorer()
                elif name == "osmesa":
                    from mujoco.osmesa import GLContext
                elif name == "glfw":
                    from mujoco.glfw import GLContext
                else:
                    from mujoco import GLContext
                try:
                    context = GLContext(width, height)
                finally:
                    restore()
            if name == "glfw" and not getattr(context, "_context", True):
                detail = "; ".join(str(w.message) for w in caught) or "no window"
                raise RuntimeError(f"GLFW could not create a window ({detail})")
            for w in caught:  # a working backend's warnings still reach the user
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            return context
        except Exception as exc:  # noqa: BLE001 - try the next backend, report all at the end
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise RuntimeError(
        "could not create an OpenGL context for MuJoCo rendering "
        f"(MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}); tried " + "; ".join(errors)
    )


# -- fork safety ----------------------------------------------------------------------------
# Set in a forked child when its parent had Mesa llvmpipe rasterizer threads at fork time:
# the child inherits Mesa's state but not its threads, so its first render would block
# forever. FastRenderer asks check_fork_safe() before it creates a context and fails fast.
_FORKED_FROM_THREADED_GL = False


def gl_render_threads() -> int:
    """Number of Mesa llvmpipe rasterizer threads running in this process (Linux; 0 elsewhere).

    They exist once something rendered through llvmpipe while ``LP_NUM_THREADS`` was unset or
    > 0 (e.g. a gymnasium MuJoCo env rendered before :mod:`visfore_envs` was imported)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    count = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                count += f.read().startswith("llvmpipe")
        except OSError:
            continue
    return count


def _before_fork() -> None:
    global _PARENT_HAS_GL_THREADS
    _PARENT_HAS_GL_THREADS = gl_render_threads() > 0


def _after_fork_in_child() -> None:
    global _FORKED_FROM_THREADED_GL
    _FORKED_FROM_THREADED_GL = _FORKED_FROM_THREADED_GL or _PARENT_HAS_GL_THREADS


_PARENT_HAS_GL_THREADS = False
if hasattr(os, "register_at_fork") and sys.platform.startswith("linux"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def check_fork_safe() -> None:
    """Raise instead of hanging when this process cannot render (call before making a context).

    Raises:
        RuntimeError: in a process forked from one that ran Mesa llvmpipe render threads
            (its first render would never return). The one-line message says what to do.
    """
    if _FORKED_FROM_THREADED_GL:
        raise RuntimeError(
            "cannot render in this forked process: its parent had started Mesa llvmpipe "
            "render threads (something rendered before `import visfore_envs`, or "
            "LP_NUM_THREADS > 0), which do not survive fork; use "
            "gym.make_vec(..., vectorization_mode='async', "
            "vector_kwargs={'context': 'spawn'}) (or 'forkserver'), or import "
            "visfore_envs before anything renders and leave LP_NUM_THREADS unset or 0"
        )
