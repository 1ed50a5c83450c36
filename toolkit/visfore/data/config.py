"""The options of the data commands (``collect``, ``dataset info``, ``dataset verify``),
each declared once (:mod:`visfore.core.config`).

Imported by the CLI at start-up: nothing here imports gymnasium, mujoco or zarr. The
pipelines are :func:`visfore.data.collect.collect`,
:func:`visfore.data.dataset_info.dataset_info` and :func:`visfore.data.verify.verify_dataset`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from visfore.core.config import ConfigBase, option
from visfore.core.ray_backend import RAY_HELP
from visfore.data.envs import parse_env_kwargs, parse_kwargs

__all__ = ["CollectConfig", "DatasetInfoConfig", "DatasetVerifyConfig", "parse_policy_kwargs"]


def parse_policy_kwargs(values: Any) -> dict[str, Any]:
    """Parse ``--policy-kwargs``: a JSON object or ``key=value[,key=value]`` strings (a
    list of them, one per repetition), or a mapping (see :func:`visfore.data.envs.parse_kwargs`).

    Raises:
        VisforeError: text that is neither form.
    """
    return parse_kwargs(values, "--policy-kwargs")


class CollectConfig(ConfigBase, command="collect"):
    """Every option of ``visfore collect``: run a policy in an env and write whole
    episodes to a Zarr dataset; the same command again continues an interrupted one.

    Seeding: episode ``i`` depends on ``(seed, i)`` alone (:mod:`visfore.core.seeding`),
    so the dataset does not depend on ``workers`` or ``ray``.
    """

    out: str = option(
        help="Dataset directory to create or continue (NAME.zarr), or a URL (s3://bucket/name.zarr).",
        flags=("--out", "-o"),
    )
    env: str = option(default="reacher", help="Short name (reacher, reacher3d) or registered Gymnasium id.")
    episodes: int = option(default=200, help="Episodes the dataset should hold (E).")
    steps: int = option(default=50, help="Actions per episode (T); T+1 frames each.")
    size: int = option(default=64, help="Frame height and width in pixels (a multiple of 4 in [8, 1024]).")
    seed: int = option(default=0, help="Run seed (>= 0); episode i is seeded from (seed, i) alone.")
    policy: Literal["random", "smooth"] = option(
        default="smooth", help="Collection policy: random (uniform) or smooth (OU process)."
    )
    workers: Optional[int] = option(
        default=None,
        help="Env processes running in parallel (default 1); with --ray, Ray workers (default: one per CPU of the cluster).",
    )
    env_kwargs: dict[str, Any] = option(
        help="Extra env arguments: a JSON object or key=value[,key=value]; repeatable.",
        default_factory=dict,
        parse=parse_env_kwargs,
        repeatable=True,
        flags=("--env-kwargs",),
    )
    policy_kwargs: dict[str, Any] = option(
        help="Policy parameters: a JSON object or key=value[,key=value]; repeatable. smooth: theta, sigma, scale (default 0.3, 0.3, 0.3) and min_scale (per-episode amplitude log-uniform in [min_scale, scale]).",
        default_factory=dict,
        parse=parse_policy_kwargs,
        repeatable=True,
        flags=("--policy-kwargs",),
    )
    ray: Optional[str] = option(default=None, help=RAY_HELP, flags=("--ray",), metavar="ADDRESS")
    progress: bool = option(
        default=True,
        help="Show the progress bar (episodes, frames/s) and notes (--quiet: neither).",
        flags=("--progress/--quiet", " /-q"),
    )


class DatasetInfoConfig(ConfigBase, command="dataset info"):
    """Every option of ``visfore dataset info``: episodes, frames, array shapes, size and
    compression, env and provenance of a dataset."""

    path: str = option(help="Dataset directory (NAME.zarr) or URL (s3://bucket/name.zarr).", argument=True)
    as_json: bool = option(default=False, help="Print JSON instead of a table.", flags=("--json",))


class DatasetVerifyConfig(ConfigBase, command="dataset verify"):
    """Every option of ``visfore dataset verify``: check that every chunk of a dataset is
    stored and decodes and that every episode matches the checksums recorded when it was
    collected; one line per problem, then a summary line (exit code 1 when damaged)."""

    path: str = option(help="Dataset directory (NAME.zarr) or URL (s3://bucket/name.zarr).", argument=True)
    as_json: bool = option(default=False, help="Print the report as JSON instead of lines.", flags=("--json",))
    progress: bool = option(
        default=True,
        help="Show the progress bar (episodes) on stderr (--quiet: none).",
        flags=("--progress/--quiet", " /-q"),
    )
