"""visfore: command-line toolkit for visual foresight.

Collect Zarr datasets from ``visfore_envs`` environments and train action-conditioned
video-prediction forward models (``visfore_models``). The command-line entry point is
``visfore`` (:mod:`visfore.cli`).
"""

__version__ = "0.1.0"
