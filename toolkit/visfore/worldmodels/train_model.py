"""Compatibility module: the names ``visfore.worldmodels.train_model`` used to define.

The pipeline moved into modules with one concept each: :mod:`visfore.worldmodels.training`
(the task and the loop, :func:`train_model`), :mod:`~visfore.worldmodels.evaluation`
(open-loop evaluation, prediction grids), :mod:`~visfore.worldmodels.schedules` (teacher
forcing, scheduled sampling, learning rate), :mod:`~visfore.worldmodels.distributed`
(DDP helpers), :mod:`~visfore.worldmodels.checkpoint`, :mod:`~visfore.worldmodels.records`,
:mod:`~visfore.worldmodels.report` (the results table) and :mod:`visfore.core.device`.
Import from those; the old private names (``_StopFlag``, ``_lr_lambda``, ``_NoProgress``,
``_parse_device_spec``) stay here only until their last importers move.
"""

from __future__ import annotations

from visfore.core.device import parse_device_spec, physical_cpu_cores, select_device
from visfore.core.interrupt import StopFlag
from visfore.core.progress import NoProgress
from visfore.worldmodels.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from visfore.worldmodels.config import RUNTIME_OPTIONS, TrainConfig, validate_config
from visfore.worldmodels.distributed import weights_digest
from visfore.worldmodels.evaluation import (
    FOREGROUND_THRESHOLD,
    EvalOptions,
    evaluate_open_loop,
    prediction_grid,
    shuffled_partners,
)
from visfore.worldmodels.records import COMMAND
from visfore.worldmodels.report import print_metrics_table
from visfore.worldmodels.schedules import (
    PAPER_SAMPLING_K,
    SAMPLING_MODES,
    auto_sampling_k,
    inverse_sigmoid,
    lr_lambda,
    resolve_sampling,
    teacher_forcing_schedule,
)
from visfore.worldmodels.training import reconstruction_loss, train_model

# old private names, still imported by perception/, planning/ and rl/ (and a test that
# monkeypatches _StopFlag): aliases of the public ones
_StopFlag = StopFlag
_lr_lambda = lr_lambda
_NoProgress = NoProgress
_parse_device_spec = parse_device_spec

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "COMMAND",
    "FOREGROUND_THRESHOLD",
    "PAPER_SAMPLING_K",
    "RUNTIME_OPTIONS",
    "SAMPLING_MODES",
    "EvalOptions",
    "TrainConfig",
    "auto_sampling_k",
    "evaluate_open_loop",
    "inverse_sigmoid",
    "physical_cpu_cores",
    "prediction_grid",
    "print_metrics_table",
    "reconstruction_loss",
    "resolve_sampling",
    "select_device",
    "shuffled_partners",
    "teacher_forcing_schedule",
    "train_model",
    "validate_config",
    "weights_digest",
]
