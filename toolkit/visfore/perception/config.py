"""The options of ``visfore train-translator``, declared once (:mod:`visfore.core.config`).

Imported by the CLI without torch; :mod:`visfore.perception.train_translator` runs them.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from visfore.core.config import ConfigBase, option
from visfore.core.device import NUM_THREADS_HELP
from visfore.core.errors import VisforeError

__all__ = ["MAX_MEMORY", "TranslatorConfig", "parse_channels"]

#: Largest ``--memory`` accepted (frames of ConvLSTM memory).
MAX_MEMORY = 16


def parse_channels(text: str | Sequence[Any]) -> tuple[int, ...]:
    """``--channels``: ``"32,64,64,128"`` (or a sequence) -> ``(32, 64, 64, 128)``.

    Raises:
        VisforeError: not comma-separated positive integers.
    """
    try:
        items = [v for v in text.split(",") if v.strip()] if isinstance(text, str) else list(text)
        values = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise VisforeError(f"--channels must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise VisforeError(f"--channels must be comma-separated positive integers, got {text!r}")
    return values


class TranslatorConfig(ConfigBase, command="train-translator"):
    """Every option of ``visfore train-translator``: a CNN (optionally ConvLSTM) from frames
    to joint angles ``q`` (radians) and key points ``k`` (metres).

    There is no ``--resume`` (runs are minutes long); a stopped run keeps its checkpoints.
    """

    data: Optional[str] = option(
        default=None,
        help="Visfore Zarr dataset from `visfore collect` of a key-point env (ReacherPlane-v0, Reacher3D-v0, TargetHumanoid-v0): a directory or a URL (s3://bucket/name.zarr).",
    )
    memory: int = option(
        default=1,
        help=f"Frames the translator sees: 1 = the last frame (plain CNN), M > 1 = ConvLSTM over the last M frames of the episode (M <= {MAX_MEMORY}).",
    )
    epochs: int = option(default=20, help="Training epochs (each sees every training frame once).")
    time_budget: Optional[float] = option(
        default=None, help="Stop training after this many minutes (checkpointed), then evaluate."
    )
    batch_size: int = option(default=64, help="Frames per optimisation step.")
    lr: float = option(default=1e-3, help="Adam learning rate (peak; cosine decay to 10%).")
    weight_decay: float = option(default=0.0, help="Adam weight decay.")
    keypoint_weight: float = option(
        default=1.0, help="Weight of the normalised key-point MSE next to the (cos, sin) angle MSE."
    )
    val_fraction: float = option(
        default=0.1,
        help="Fraction of episodes held out for the report (seeded split by episode; ceil, at least one), in (0, 1).",
    )
    seed: int = option(default=0, help="Seed of the split, the initialisation, the batch order and the augmentation.")
    augment: bool = option(
        default=False,
        help="Photometric augmentation (brightness, contrast, channel gain, pixel noise; no shifts: the targets are absolute positions).",
    )
    channels: tuple[int, ...] = option(
        default=(32, 64, 64, 128),
        help="Encoder widths, comma-separated; each conv halves the frame (frame size must be divisible by 2^levels).",
        parse=parse_channels,
        metavar="C1,C2,...",
    )
    hidden: int = option(default=256, help="Width of the fully connected layer before the heads.")
    lstm_channels: int = option(default=64, help="ConvLSTM hidden channels (with --memory > 1).")
    out: Optional[str] = option(
        default=None, help="Run directory (default runs/train-translator-<UTC time>).", flags=("--out", "-o")
    )
    name: Optional[str] = option(default=None, help="Run name: runs/train-translator-NAME.")
    device: str = option(default="auto", help="auto, cpu, cuda or cuda:N.")
    num_threads: Optional[int] = option(default=None, help=NUM_THREADS_HELP)
    eval_batch_size: int = option(default=256, help="Frames per forward pass in evaluation.")
    progress: bool = option(
        default=True,
        help="Show the progress bar and the table (--quiet: neither).",
        flags=("--progress/--quiet", " /-q"),
    )
    on_predictions: Optional[str] = option(
        default=None,
        help="A train-model run: train on its open-loop predictions of the dataset's clips (real context frames, then predicted frames labelled with the true state), the reader `visfore plan --cost keypoints` needs. Use a dataset the model was not trained on.",
    )
    prediction_horizon: Optional[int] = option(
        default=None,
        help="Frames predicted per clip with --on-predictions (default: the run's training horizon; match the planner's horizon).",
    )
