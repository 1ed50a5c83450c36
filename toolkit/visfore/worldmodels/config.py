"""The options of ``visfore train-model``, declared once (:mod:`visfore.core.config`).

Imported by the CLI without torch; :mod:`visfore.worldmodels.train_model` runs them.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional

from visfore.core.config import config, option
from visfore.core.errors import VisforeError

__all__ = ["TrainConfig", "parse_json_object"]


def parse_json_object(text: str | dict[str, Any]) -> dict[str, Any]:
    """Parse ``--model-kwargs``: a JSON object (``'{"lstm_channels": [32, 32]}'``).

    Raises:
        VisforeError: not JSON, or not an object.
    """
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VisforeError(f"--model-kwargs is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise VisforeError("--model-kwargs must be a JSON object, e.g. '{\"lstm_channels\": [32, 32]}'")
    return value


@config(command="train-model")
class TrainConfig:
    """Every option of ``visfore train-model``: train an action-conditioned forward model
    and evaluate it open-loop on held-out episodes.

    ``--resume`` reads the other options from the run's ``config.yaml``; only the runtime
    options (:data:`RUNTIME_OPTIONS`) and ``epochs`` (the target) may change.
    """

    data: Optional[str] = option(None, help="Visfore Zarr dataset (from `visfore collect`): a directory or a URL (s3://bucket/name.zarr).")
    model: str = option("convlstm", help="Forward model name (visfore_models.MODELS).")
    model_kwargs: dict[str, Any] = option(help="JSON object of extra model options, e.g. '{\"lstm_channels\": [32, 32]}'.", default_factory=dict, parse=parse_json_object, metavar="JSON")
    context: int = option(2, help="C context frames given to the model.")
    horizon: int = option(10, help="K frames predicted open-loop.")
    epochs: int = option(10, help="Total training epochs (also the target on --resume).")
    batch_size: int = option(16, help="Clips per optimisation step (per process under torchrun).")
    lr: float = option(1e-3, help="Adam learning rate.")
    lr_schedule: Literal["cosine", "constant"] = option("cosine", help="cosine (to 10%, after warm-up) or constant.")
    warmup_steps: int = option(20, help="Linear learning-rate warm-up steps.")
    weight_decay: float = option(0.0, help="Adam weight decay.")
    grad_clip: float = option(1.0, help="Max global gradient norm (0 = off).")
    sampling: Literal["open-loop", "teacher", "scheduled"] = option("open-loop", help="What the training rollout feeds back: open-loop (own predictions, like the evaluation), teacher (true frames) or scheduled (true frame with probability k/(k+exp(step/k)), Finn et al. 2016).")
    sampling_k: Optional[float] = option(None, help="k of --sampling scheduled (Finn et al. used 900 over ~1e5 steps). Default: k ln k = total steps / 2, so the probability decays from ~1 to ~0 over this run and is 0.5 half-way.")
    teacher_forcing: Optional[str] = option(None, help="Advanced alternative to --sampling: probability of feeding true frames, P, 'inverse-sigmoid:K' or 'linear:P0:P1[:STEPS]'. Evaluation is always open-loop.")
    pad_short_episodes: bool = option(True, help="Episodes shorter than context + horizon frames give one clip padded at the end (last frame repeated, zero actions), masked out of the loss and metrics; off: they are left out.")
    eval_samples: int = option(5, help="Samples per clip in the final evaluation of a stochastic model (mean over samples and best-of-N are reported).")
    amp: Optional[bool] = option(None, help="Mixed precision: float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU. Default: on when training on CUDA, off on CPU.", flags=("--amp/--no-amp",))
    seed: int = option(0, help="Seed of init, split, clip order and subsets.")
    val_fraction: float = option(0.1, help="Fraction of episodes held out for validation.")
    clip_stride: int = option(1, help="Rows between training clip starts in an episode.")
    max_train_clips: Optional[int] = option(None, help="Use a fixed seeded subset of training clips.")
    clips_per_epoch: Optional[int] = option(800, help="Training clips drawn per epoch (a fresh seeded draw each epoch, without replacement; split across processes under torchrun); 0 = every training clip.")
    max_val_clips: Optional[int] = option(256, help="Evaluate on at most this many validation clips (seeded subset).")
    epoch_val_clips: int = option(32, help="Validation clips scored after each epoch.")
    eval_batch_size: int = option(32, help="Clips per forward pass in evaluation.")
    image_clips: int = option(4, help="Validation clips drawn in each images/epoch_XXX.png (0 = no images).")
    out: Optional[str] = option(None, help="Run directory (default runs/train-model-<UTC time>).", flags=("--out", "-o"))
    name: Optional[str] = option(None, help="Run name: runs/train-model-NAME.")
    resume: bool = option(False, help="Continue the run in --out/--name from checkpoints/last.pt.", flags=("--resume",))
    device: str = option("auto", help="auto, cpu, cuda or cuda:N (under torchrun: auto or cuda, one GPU per LOCAL_RANK).")
    num_workers: int = option(0, help="DataLoader worker processes.")
    num_threads: Optional[int] = option(None, help="Torch CPU threads (default: physical cores, divided among torchrun processes).")
    time_budget: Optional[float] = option(None, help="Stop training after this many minutes (checkpointed), then evaluate.")
    progress: bool = option(True, help="Show the progress bar and the per-epoch table (--quiet: only the final summary).", flags=("--progress/--quiet", " /-q"))
