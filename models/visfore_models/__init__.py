"""visfore_models: action-conditioned video-prediction forward models and metrics (torch).

No CLI, no environment code, no dataset I/O. Every model implements
:class:`~visfore_models.base.ForwardModel`::

    model(context (B, C, 3, H, W) in [0, 1], actions (B, C + K - 1, A))
        -> prediction (B, K, 3, H, W) in [0, 1]   # o_C .. o_{C+K-1}, open-loop

Models (registry name: class, module):

* ``"convlstm"``: :class:`ConvLSTMForwardModel` -- ConvLSTM with CDNA-style compositing.
* ``"rnn_deconv"``: :class:`RNNDeconvForwardModel` -- conv encoder, LSTM on a vector,
  deconvolution decoder (the "RNN Deconvolution Baseline" of
  github.com/ichko/differentiable-simulation).
* ``"cdna"``: :class:`CDNAForwardModel` -- Finn, Goodfellow & Levine 2016, CDNA.
* ``"dna"``: :class:`DNAForwardModel` -- Finn, Goodfellow & Levine 2016, DNA.
* ``"framestack"``: :class:`FrameStackForwardModel` -- last 4 frames stacked, CNN, LSTM/GRU,
  decoder (Oh et al. 2015's frame stack; a bouncing-block model-based RL model).
* ``"svg_lp"``: :class:`SVGLPForwardModel` -- Denton & Fergus 2018, stochastic
  (``stochastic = True``; :meth:`ForwardModel.auxiliary_losses` gives its ``beta * KL``).
* ``"rssm"``: :class:`RSSMForwardModel` -- a latent world model (``latent = True``): the
  recurrent state-space model of PlaNet with DreamerV3's discrete latents, KL balancing and
  free bits (Hafner et al. 2019, 2023); stochastic.
* ``"jepa"``: :class:`JEPAForwardModel` -- a latent world model: conv encoder and an
  action-conditioned predictor trained in embedding space against an EMA target encoder
  with VICReg's regulariser (I-JEPA, BYOL, VICReg, PLDM); a decoder on detached latents
  for pictures only.

Building blocks, public for models and tools built on the zoo:

* :class:`StepwiseForwardModel` -- a :class:`ForwardModel` given by one recurrent
  ``step(x, a, state) -> (prediction, state)``; its :meth:`~StepwiseForwardModel.forward`
  rolls the step out (``rnn_deconv``, ``cdna`` and ``dna`` are built on it).
* :class:`LatentForwardModel` (:mod:`visfore_models.latent`) -- a :class:`ForwardModel`
  whose state is a :class:`LatentState` (``rssm`` and ``jepa`` are built on it).
* :func:`cdna_transform` and :func:`dna_transform` -- the image transformations of CDNA
  (each frame convolved with N per-sample kernels) and DNA (per-pixel kernels), Finn,
  Goodfellow & Levine 2016, arXiv:1605.07157.

Not a forward model: :class:`FrameTranslator` (:mod:`visfore_models.translator`) maps
frames to joint angles and key points (``translator_state`` / ``load_translator``).

Stepping API (every model; a pixel model's :class:`ModelState` is its recent frames, a
latent model's :class:`LatentState` its latent)::

    state = model.init_state(context (B, C, 3, H, W), context_actions (B, C - 1, A))
    frames, state = model.imagine(state, actions (B, K, A) or (B, N, K, A))
    feats, state = model.imagine(state, actions, decode=False)   # (B, [N,] K, F), no decoding
    feats, state = model.imagine(state, actions, decode=False, last_only=True)  # (B, [N,] 1, F)
    frame = model.decode(state)        # (B, 3, H, W)
    feats = model.features(state)      # (B, F), F = model.feature_dim
    goal = model.encode_goal(goal_frames (B, 3, H, W))   # (B, F), the same space
    model.after_optimizer_step()       # a trainer's hook after each optimizer step (JEPA's EMA)

Registry and (de)serialisation::

    build_model("convlstm", action_dim=2, image_size=64) -> ForwardModel
    state = model_state(model)          # {"name", "config", "state_dict"}
    model = load_model(state)           # rebuilds and loads the weights
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from . import metrics
from ._common import StepwiseForwardModel, cdna_transform, dna_transform
from .base import ForwardModel, LatentState, ModelState, State
from .cdna import CDNAForwardModel
from .convlstm import ConvLSTMCell, ConvLSTMForwardModel
from .dna import DNAForwardModel
from .framestack import FrameStackForwardModel
from .jepa import JEPAForwardModel
from .latent import LatentForwardModel
from .rnn_deconv import RNNDeconvForwardModel
from .rssm import RSSMForwardModel
from .svg_lp import SVGLPForwardModel
from .translator import FrameTranslator, load_translator, translator_state

__all__ = [
    "MODELS",
    "CDNAForwardModel",
    "ConvLSTMCell",
    "ConvLSTMForwardModel",
    "DNAForwardModel",
    "ForwardModel",
    "JEPAForwardModel",
    "LatentForwardModel",
    "LatentState",
    "ModelState",
    "RSSMForwardModel",
    "State",
    "FrameStackForwardModel",
    "FrameTranslator",
    "RNNDeconvForwardModel",
    "SVGLPForwardModel",
    "StepwiseForwardModel",
    "build_model",
    "cdna_transform",
    "dna_transform",
    "load_model",
    "load_translator",
    "metrics",
    "model_state",
    "translator_state",
]

#: registry: model name -> class
MODELS: dict[str, type[ForwardModel]] = {
    cls.name: cls
    for cls in (
        ConvLSTMForwardModel,
        RNNDeconvForwardModel,
        CDNAForwardModel,
        DNAForwardModel,
        FrameStackForwardModel,
        SVGLPForwardModel,
        RSSMForwardModel,
        JEPAForwardModel,
    )
}


def _model_class(name: str) -> type[ForwardModel]:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}") from None


def build_model(name: str, *, action_dim: int, image_size: int | tuple[int, int], **kwargs: Any) -> ForwardModel:
    """Instantiate the registered model ``name``.

    Args:
        name: registry key (see :data:`MODELS`), e.g. ``"convlstm"``.
        action_dim: size ``A`` of one action vector.
        image_size: ``H`` (square) or ``(H, W)`` of the frames.
        **kwargs: model-specific options (e.g. ``lstm_channels`` for ``"convlstm"``).

    Returns:
        A freshly initialised model on the CPU (move it with ``.to(device)``).

    Raises:
        ValueError: ``"unknown model 'x'; valid: convlstm"`` on a bad name, or the model's own
            ValueError on invalid options.
    """
    cls = _model_class(name)
    return cls(action_dim=action_dim, image_size=image_size, **kwargs)


def model_state(model: ForwardModel) -> dict[str, Any]:
    """Serialisable description of ``model``: ``{"name": str, "config": dict,
    "state_dict": dict[str, Tensor]}`` (what :func:`load_model` consumes; ``torch.save``-able).

    Raises:
        ValueError: if ``model`` is not a registered :class:`ForwardModel`.
    """
    if not isinstance(model, ForwardModel) or model.name not in MODELS:
        raise ValueError(f"model_state needs a registered ForwardModel, got {type(model).__name__}")
    return {"name": model.name, "config": model.config(), "state_dict": model.state_dict()}


def load_model(
    state: Mapping[str, Any], *, device: torch.device | str | None = None, strict: bool = True
) -> ForwardModel:
    """Rebuild a model from ``{"name", "config", "state_dict"}`` (see :func:`model_state`).

    Args:
        state: mapping with the registry ``name``, the ``config`` kwargs and the weights.
        device: where to put the model (default: CPU).
        strict: passed to ``load_state_dict``.

    Returns:
        The model in eval mode.

    Raises:
        ValueError: if a key is missing or the name is unknown.
    """
    missing = [k for k in ("name", "config", "state_dict") if k not in state]
    if missing:
        raise ValueError(f"model state lacks key(s) {missing}; expected name, config, state_dict")
    cls = _model_class(state["name"])
    model = cls(**dict(state["config"]))
    model.load_state_dict(state["state_dict"], strict=strict)
    if device is not None:
        model.to(device)
    return model.eval()
