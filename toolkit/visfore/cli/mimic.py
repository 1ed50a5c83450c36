"""``visfore mimic``: see a pose, then do it (a mimic env's follower copies the leader it
sees through a translator), compared with the true pose and a random policy.

The options are :class:`visfore.rl.config.MimicConfig`; the pipelines are
:func:`visfore.rl.mimic.run_mimic` and :func:`visfore.rl.mimic.execute_image`.
"""

from __future__ import annotations

from pathlib import Path

from visfore.cli.errors import handle_errors
from visfore.cli.options import typer_command
from visfore.core.console import stdout_console
from visfore.core.errors import VisforeError
from visfore.rl.config import MIMIC_OUT_FORMATS, MimicConfig

__all__ = ["mimic_command"]


def _execute_image(config: MimicConfig, out: Path | None) -> None:
    """``--image``: execute the pose of one image; print it; ``--out`` a .json report."""
    import numpy as np

    from visfore.core import runs
    from visfore.rl.mimic import execute_image

    assert config.image is not None
    if out is not None and out.suffix.lower() != ".json":
        raise VisforeError(f"--out {out}: with --image the report is .json")
    console = stdout_console()
    base = out if out is not None else Path(config.image)
    show = base.with_name(base.stem + "-mimic.png")  # never the input image
    result = execute_image(
        Path(config.policy),
        Path(config.translator),
        Path(config.image),
        env_id=config.env,
        seed=config.seed,
        device=config.device,
        checkpoint=config.checkpoint,
        show=show,
    )
    console.print(f"translated pose (rad): {np.round(result['translated_qpos'], 3).tolist()}")
    console.print(
        f"final key-point distance to the mirrored pose: {result['final_distance'] * 100:.2f} cm "
        f"({'success' if result['success'] else 'no success'}, threshold "
        f"{result['success_threshold'] * 100:.1f} cm); leader | translated pose | follower: {result['show']}"
    )
    if out is not None:
        runs.write_json(out, result)


@handle_errors
@typer_command(MimicConfig)
def mimic_command(config: MimicConfig) -> None:
    """See a pose, then do it: the follower of a mimic env copies the leader it sees through a
    translator, compared with the same policy given the true pose and with a random policy."""
    out = Path(config.out) if config.out is not None else None
    if out is not None and out.suffix.lower() not in MIMIC_OUT_FORMATS:
        raise VisforeError(f"--out {out}: the suffix must be one of {', '.join(MIMIC_OUT_FORMATS)}")
    from visfore.core.threads import torch_threads

    # One policy step and one translator frame at a time: one thread is fastest (as evaluate).
    with torch_threads(1):
        _mimic(config, out)


def _mimic(config: MimicConfig, out: Path | None) -> None:
    if config.image is not None:
        _execute_image(config, out)
        return
    from visfore.rl.mimic import print_summary, run_mimic, write_report

    console = stdout_console()
    result = run_mimic(
        Path(config.policy),
        Path(config.translator),
        env_id=config.env,
        episodes=config.episodes,
        seed=config.seed,
        leader=config.leader,
        device=config.device,
        checkpoint=config.checkpoint,
        progress=config.progress,
        hold_steps=config.hold_steps,
    )
    print_summary(result, console)
    if out is not None:
        console.print(f"wrote {write_report(result, out)}")
