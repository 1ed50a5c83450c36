"""JEPA: a joint-embedding predictive world model, action-conditioned, trained in latent
space (registry name ``"jepa"``), as a :class:`~visfore_models.latent.LatentForwardModel`.

Sources:
    * Y. LeCun, "A Path Towards Autonomous Machine Intelligence", 2022 (openreview
      BZ5a1r-kVsf) -- the joint-embedding predictive architecture: predict the embedding of
      the future, not its pixels; an action-conditioned predictor as a world model.
    * M. Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding
      Predictive Architecture" (I-JEPA), CVPR 2023, arXiv:2301.08243 -- a context encoder
      and a predictor regress the embeddings of an EMA target encoder (momentum 0.996 ->
      1.0 there), L2 loss, no pixel reconstruction.
    * J.-B. Grill et al., "Bootstrap Your Own Latent" (BYOL), NeurIPS 2020,
      arXiv:2006.07733 -- the EMA target network ``xi <- tau xi + (1 - tau) theta`` after each
      optimizer step (``tau_base = 0.996``); a predictor on the online side only.
    * A. Bardes, J. Ponce, Y. LeCun, "VICReg: Variance-Invariance-Covariance
      Regularization for Self-Supervised Learning", ICLR 2022, arXiv:2105.04906 -- the
      anti-collapse terms and their weights: invariance 25, variance 25 (hinge on the
      per-dimension std with target ``gamma = 1`` and ``eps = 1e-4``), covariance 1
      (squared off-diagonal covariances divided by the dimension).
    * V. Sobal, W. Zhang, K. Cho, R. Balestriero, T. G. J. Rudner, Y. LeCun, "Learning from
      Reward-Free Offline Data: A Case for Planning with Latent Dynamics Models" (PLDM),
      2025, arXiv:2502.14819 -- the same recipe for control: an encoder and an
      action-conditioned predictor trained by multi-step open-loop prediction of the
      encodings with VICReg-style regularisation, then planning (MPPI) in the latent space
      toward the encoding of a goal image; the two extra terms taken here: the variance
      hinge over each trajectory's time steps (its temporal VCReg) and the inverse-dynamics
      term (an MLP predicts ``a_t`` from ``(z_t, z_{t+1})``, weight ``omega``).

Architecture (conv encoder of :mod:`visfore_models.latent`, ``z_t = Linear(ConvEncoder(o_t))``,
``embed_dim`` values, no normalisation so VICReg's variance term sees the raw scale)::

    h_{t+1}  = GRU(h_t, SiLU(LN(Linear([z_t, a_t]))))       predictor core, h_0 = tanh(w)
    ẑ_{t+1}  = MLP(h_{t+1})                                 predicted embedding of o_{t+1}
    z_t      = E(o_t) when o_t is observed (context, teacher forcing), else ẑ_t (open loop)
    x̂_t      = ConvDecoder(z_t)                             pictures only

Losses (:meth:`JEPAForwardModel.auxiliary_losses`, training mode): ``"prediction"``:
``sim_weight * MSE(ẑ_t, sg(Ē(o_t)))`` over every predicted step ``t = 1 .. C + K - 1``
(one-step predictions inside the context, then the open-loop -- or teacher-forced --
rollout over the targets), ``Ē`` the EMA target encoder; ``"variance"`` and
``"covariance"``: VICReg's terms on the online embeddings ``E(o_t)`` of every frame of the
batch (all ``B * T`` embeddings pooled), weights ``var_weight``, ``cov_weight``;
``"temporal_variance"`` (when ``temporal_var_weight > 0``): the same variance hinge
(:func:`variance_hinge`) over the time steps of each clip instead of over the batch (PLDM's
temporal VCReg term), weight ``temporal_var_weight``,
which stops the encoder from keeping only what stays put within an episode -- on the
reacher, the goal ghost, which is perfectly predictable and satisfies the batch variance on
its own; ``"inverse_dynamics"`` (when ``idm_weight > 0``): ``idm_weight * MSE(IDM([E(o_{t-1}),
E(o_t), E(o_{t+1})]), a_t)`` over every three consecutive observed frames (zero for clips
of fewer than three; PLDM's term reads ``a_t`` from a pair; a torque changes the velocity,
so it takes three frames to read it). The encoder and predictor get gradients from these
only: the frames that :meth:`forward`
returns are ``ConvDecoder(ẑ.detach())`` in training mode, so the trainer's frame MSE trains
the decoder alone ("no pixel loss through the encoder"). In eval mode nothing is detached
(a planner or a policy can differentiate the frames with respect to the actions) and no
loss is computed (``auxiliary_losses()`` is ``{}`` after an eval pass).

EMA target encoder: a copy of the encoder's weights kept as buffers (not parameters: no
optimizer, no gradient; saved in the state dict), updated by ``target <- m * target + (1 -
m) * online`` in :meth:`JEPAForwardModel.after_optimizer_step`. Until a trainer calls that
hook, a training-mode :meth:`forward` does the update itself at its start, which applies
the same sequence of updates one step late (before the next use rather than right after
the optimizer step); once the hook has been called, forward stops doing it. ``momentum =
0.99`` (BYOL and I-JEPA use 0.996 and more for runs of ~10^5 steps; a CPU run here has a
few thousand, and the target must follow within ~100 of them); ``momentum = 0`` makes the
target the current online encoder under a stop-gradient (SimSiam-like).

Features (the planner's space): ``features(state) = z_t`` (``embed_dim``) -- ``ẑ_t`` for an
imagined state, ``E(o_{C-1})`` (online encoder) right after :meth:`init_state`;
``encode_goal(g) = Ē(g)``, the target encoder's embedding, the space ``ẑ`` is trained to hit.
An imagined step costs one GRU step and two small MLPs: no convolution.

Defaults (``depth=16, embed_dim=64, deter=128, hidden=128, temporal_var_weight=25,
idm_weight=0``): 0.25 M trainable parameters at 32x32, 0.28 M at 64x64 (``idm_weight > 0``
adds a 25 k head that only trains); the EMA copy adds the encoder's 58 k (75 k) values as
buffers. The temporal variance weight is VICReg's variance weight. The inverse-dynamics
term is off by default: on the 32x32 reacher data (``docs/results/forward-models.md``) it
read 5% of the actions' variance at weights 25 and 250 (one step of torque moves the arm
well under a pixel) and changed nothing else.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ._common import check_positive, prepare_inputs
from .base import LatentState
from .latent import ConvDecoder, ConvEncoder, LatentForwardModel, mlp

__all__ = ["JEPAForwardModel", "variance_hinge", "vicreg_terms"]


def variance_hinge(z: torch.Tensor, dim: int, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance hinge (Bardes et al. 2022, arXiv:2105.04906) along ``dim`` of
    ``z``, computed in float32: ``mean relu(gamma - sqrt(Var_dim(z) + eps))`` over every
    other index (at least 2 entries along ``dim``). ``dim=0`` of ``(N, D)`` embeddings is
    VICReg's term over a batch; ``dim=1`` of ``(B, T, D)`` is PLDM's over each clip's time
    steps. Returns a scalar."""
    std = torch.sqrt(z.float().var(dim=dim) + eps)
    return F.relu(gamma - std).mean()


def vicreg_terms(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance and covariance terms (Bardes et al. 2022, arXiv:2105.04906) of
    embeddings ``z`` ``(N, D)`` (``N >= 2``), computed in float32:
    ``variance = mean_d relu(gamma - sqrt(Var(z_d) + eps))`` and ``covariance =
    sum_{i != j} Cov(z)_{ij}^2 / D``. Returns two scalars."""
    z = z.float()
    N, D = z.shape
    variance = variance_hinge(z, 0, gamma, eps)
    zc = z - z.mean(dim=0)
    cov = (zc.T @ zc) / (N - 1)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return variance, off.pow(2).sum() / D


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


class _Encoder(nn.Module):
    """``ConvEncoder -> Linear``: ``(N, 3, H, W)`` in ``[0, 1]`` -> ``(N, embed_dim)``."""

    def __init__(self, image_size: tuple[int, int], depth: int, embed_dim: int) -> None:
        super().__init__()
        self.conv = ConvEncoder(image_size, depth)
        self.proj = nn.Linear(self.conv.out_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x))


class JEPAForwardModel(LatentForwardModel):
    """Action-conditioned JEPA world model (registry name ``"jepa"``; deterministic,
    ``latent = True``). See the module docstring for the architecture, losses and sources.

    State: ``LatentState(deter = h_t (B, deter), stoch = z_t (B, embed_dim))``. Features:
    ``(B, embed_dim)``.

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 8.
        depth: channels of the first conv stage (then 2x, 4x; :mod:`visfore_models.latent`).
        embed_dim: size of the embedding ``z_t`` (the features).
        deter: size of the predictor's GRU state ``h_t``.
        hidden: width of the predictor's MLP layers.
        momentum: EMA momentum ``m`` of the target encoder, in ``[0, 1)``.
        sim_weight: weight of the latent prediction MSE (VICReg's invariance weight 25).
        var_weight: weight of VICReg's variance term (25).
        cov_weight: weight of VICReg's covariance term (1).
        temporal_var_weight: weight of the variance hinge over each clip's time steps
            (PLDM's temporal term; 25, VICReg's variance weight).
        idm_weight: weight of the inverse-dynamics term (0: no inverse-dynamics head).
        probe_dim: size of the optional probe head on the features (0: none).

    Raises:
        ValueError: on invalid sizes or weights (one-line message).
    """

    name = "jepa"
    stochastic = False

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        depth: int = 16,
        embed_dim: int = 64,
        deter: int = 128,
        hidden: int = 128,
        momentum: float = 0.99,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        temporal_var_weight: float = 25.0,
        idm_weight: float = 0.0,
        probe_dim: int = 0,
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        self.depth = check_positive("depth", depth)
        self.embed_dim = check_positive("embed_dim", embed_dim)
        self.deter = check_positive("deter", deter)
        self.hidden = check_positive("hidden", hidden)
        m = _check_weight("momentum", momentum)
        if not m < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = m
        self.sim_weight = _check_weight("sim_weight", sim_weight)
        self.var_weight = _check_weight("var_weight", var_weight)
        self.cov_weight = _check_weight("cov_weight", cov_weight)
        self.temporal_var_weight = _check_weight("temporal_var_weight", temporal_var_weight)
        self.idm_weight = _check_weight("idm_weight", idm_weight)
        self.encoder = _Encoder(self.image_size, self.depth, self.embed_dim)
        self.pred_in = nn.Sequential(
            nn.Linear(self.embed_dim + action_dim, self.hidden), nn.LayerNorm(self.hidden), nn.SiLU()
        )
        self.gru = nn.GRUCell(self.hidden, self.deter)
        self.pred_out = mlp((self.deter, self.hidden, self.embed_dim))
        self.initial = nn.Parameter(torch.zeros(self.deter))
        self.decoder = ConvDecoder(self.embed_dim, self.image_size, self.depth)
        # inverse dynamics: (z_{t-1}, z_t, z_{t+1}) -> a_t, a training signal only (never used to act)
        self.inverse_dynamics = mlp((3 * self.embed_dim, self.hidden, action_dim)) if self.idm_weight > 0 else None
        self._build_probe(probe_dim, self.hidden)
        # the EMA target encoder: buffers "target_<i>" mirroring the encoder's parameters
        self._target_names = [n for n, _ in self.encoder.named_parameters()]
        for i, (_, param) in enumerate(self.encoder.named_parameters()):
            self.register_buffer(f"target_{i}", param.detach().clone())
        self._hook_called = False
        self._aux: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``JEPAForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "depth": self.depth,
            "embed_dim": self.embed_dim,
            "deter": self.deter,
            "hidden": self.hidden,
            "momentum": self.momentum,
            "sim_weight": self.sim_weight,
            "var_weight": self.var_weight,
            "cov_weight": self.cov_weight,
            "temporal_var_weight": self.temporal_var_weight,
            "idm_weight": self.idm_weight,
            "probe_dim": self.probe_dim,
        }

    def __getstate__(self) -> dict[str, Any]:
        # the last losses are part of an autograd graph, which copy.deepcopy and pickle refuse
        state = self.__dict__.copy()
        state["_aux"] = None
        return state

    @property
    def feature_dim(self) -> int:
        """``F = embed_dim``."""
        return self.embed_dim

    # ------------------------------------------------------------------ EMA target
    def _target_params(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"target_{i}") for i, name in enumerate(self._target_names)}

    @torch.no_grad()
    def update_target(self) -> None:
        """One EMA step of the target encoder: ``target <- m * target + (1 - m) * online``."""
        for target, param in zip(self._target_params().values(), self.encoder.parameters()):
            target.mul_(self.momentum).add_(param.detach().to(target.dtype), alpha=1.0 - self.momentum)

    def after_optimizer_step(self) -> None:
        """The EMA update of the target encoder (call after every optimizer step). From the
        first call on, training-mode :meth:`forward` no longer updates the target itself."""
        self._hook_called = True
        self.update_target()

    def expect_after_optimizer_step(self) -> None:
        """Turn off the in-``forward`` EMA fallback: the trainer calls the hook."""
        self._hook_called = True

    def target_encode(self, frames: torch.Tensor) -> torch.Tensor:
        """The EMA target encoder: ``(N, 3, H, W)`` -> ``(N, embed_dim)``, without gradient."""
        with torch.no_grad():
            return functional_call(self.encoder, self._target_params(), (frames,))

    # ------------------------------------------------------------------ losses
    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """The weighted latent losses of the last training-mode forward pass (see the module
        docstring): ``"prediction"``, ``"variance"``, ``"covariance"``, plus
        ``"temporal_variance"`` when ``temporal_var_weight > 0`` and ``"inverse_dynamics"``
        when ``idm_weight > 0``; scalars, float32. ``{}`` before it and after an eval pass."""
        return {} if self._aux is None else dict(self._aux)

    # ------------------------------------------------------------------ latent operations
    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> online embeddings ``(B, T, embed_dim)``."""
        B, T = frames.shape[:2]
        return self.encoder(frames.flatten(0, 1)).view(B, T, -1)

    def _initial(self, batch: int) -> torch.Tensor:
        return torch.tanh(self.initial).expand(batch, -1)

    def _predict(self, h: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h_{t+1}, ẑ_{t+1})`` from ``h_t``, ``z_t`` and ``a_t``."""
        h = self.gru(self.pred_in(torch.cat([z, a.to(z.dtype)], dim=1)), h)
        return h, self.pred_out(h)

    def _filter(self, context: torch.Tensor, actions: torch.Tensor) -> list[LatentState]:
        B, C = context.shape[:2]
        z = self._encode(context)
        h = self._initial(B)
        states = [LatentState(deter=h, stoch=z[:, 0])]
        for t in range(C - 1):
            h, _ = self._predict(h, z[:, t], actions[:, t])
            states.append(LatentState(deter=h, stoch=z[:, t + 1]))
        return states

    def _step(self, state: LatentState, action: torch.Tensor) -> LatentState:
        h, z = self._predict(state.deter, state.stoch, action)
        return LatentState(deter=h, stoch=z)

    def _features(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        return stoch.float()

    def _decode(self, deter: torch.Tensor, stoch: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(stoch)

    def encode_goal(self, frames: torch.Tensor) -> torch.Tensor:
        """The target encoder's embedding ``Ē(g)`` of goal frames ``(B, 3, H, W)`` in
        ``[0, 1]``: ``(B, embed_dim)`` float32 (the space the predictor's ``ẑ`` regresses).

        Raises:
            ValueError: if ``frames`` is not a floating ``(B, 3, H, W)`` tensor of the model's
                size (one line).
        """
        self.check_goal(frames)
        ref = self._reference()
        return self.target_encode(frames.to(device=ref.device, dtype=ref.dtype)).float()

    # ------------------------------------------------------------------ rollout
    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Encode the context, roll the predictor out in latent space, decode (contract:
        :meth:`visfore_models.base.ForwardModel.forward`).

        In training mode this also computes the latent losses of
        :meth:`auxiliary_losses` (the targets, when given, are embedded by both encoders:
        the EMA one for the prediction targets, the online one for VICReg and for teacher
        forcing) and, unless :meth:`after_optimizer_step` has been called, first does the
        EMA update of the target encoder.

        Args:
            context: ``(B, C, 3, H, W)`` float in ``[0, 1]``: ``o_0..o_{C-1}``.
            actions: ``(B, C + K - 1, A)`` float: ``a_0..a_{C+K-2}``.
            targets: optional ``(B, K, 3, H, W)``: ``o_C..o_{C+K-1}``.
            teacher_forcing_prob: per-sample, per-step probability of feeding the online
                embedding of the true frame instead of the predicted one (needs ``targets``).

        Returns:
            ``(B, K, 3, H, W)`` in ``[0, 1]``: the decoded predictions of ``o_C..o_{C+K-1}``
            (decoded from detached embeddings in training mode).

        Raises:
            ValueError: on shape/dtype mismatch, inputs on another device than the model,
                or a bad ``teacher_forcing_prob``.
        """
        C, K = self.check_inputs(context, actions, targets, teacher_forcing_prob)
        context, actions, targets = prepare_inputs(self._reference(), context, actions, targets)
        if self.training and not self._hook_called:
            # No trainer calls after_optimizer_step() yet: do the EMA update here, before
            # this step's use of the target (the weights are those after the last optimizer
            # step; at the first call target == online, so the update changes nothing).
            self.update_target()
        p = float(teacher_forcing_prob)
        B = context.shape[0]
        z_ctx = self._encode(context)
        z_tgt = self._encode(targets) if targets is not None and (self.training or p > 0.0) else None
        h = self._initial(B)
        z = z_ctx[:, 0]
        predicted: list[torch.Tensor] = []  # ẑ_1 .. ẑ_{C+K-1}
        for t in range(C + K - 1):
            if t >= 1:
                if t < C:
                    z = z_ctx[:, t]
                elif z_tgt is not None and p >= 1.0:
                    z = z_tgt[:, t - C]
                elif z_tgt is not None and p > 0.0:
                    use = torch.rand(B, device=context.device) < p
                    z = torch.where(use[:, None], z_tgt[:, t - C], z)
            h, z_next = self._predict(h, z, actions[:, t])
            predicted.append(z_next)
            z = z_next
        z_hat = torch.stack(predicted, dim=1)  # (B, C + K - 1, embed_dim)
        out_z = z_hat[:, C - 1 :]
        if self.training:
            out_z = out_z.detach()  # the frame loss trains the decoder only
        out = self.decoder(out_z.flatten(0, 1)).view(B, K, 3, *self.image_size)

        if self.training:
            frames = context if targets is None else torch.cat([context, targets], dim=1)
            n_pred = frames.shape[1] - 1  # predicted steps with a known target: 1 .. T - 1
            aux: dict[str, torch.Tensor] = {}
            if n_pred > 0:
                goal = self.target_encode(frames[:, 1:].flatten(0, 1)).view(B, n_pred, -1)
                aux["prediction"] = self.sim_weight * F.mse_loss(z_hat[:, :n_pred].float(), goal.float())
            else:
                aux["prediction"] = z_hat.new_zeros((), dtype=torch.float32)
            online = z_ctx if z_tgt is None else torch.cat([z_ctx, z_tgt], dim=1)
            if online.shape[0] * online.shape[1] > 1:
                variance, covariance = vicreg_terms(online.flatten(0, 1))
            else:
                variance = covariance = z_hat.new_zeros((), dtype=torch.float32)
            aux["variance"] = self.var_weight * variance
            aux["covariance"] = self.cov_weight * covariance
            T = online.shape[1]
            if self.temporal_var_weight > 0 and T > 1:
                aux["temporal_variance"] = self.temporal_var_weight * variance_hinge(online, 1)
            if self.inverse_dynamics is not None and T > 2:
                triples = torch.cat([online[:, :-2], online[:, 1:-1], online[:, 2:]], dim=-1).flatten(0, 1)
                taken = actions[:, 1 : T - 1].flatten(0, 1)  # a_t moves o_t to o_{t+1}
                aux["inverse_dynamics"] = self.idm_weight * F.mse_loss(
                    self.inverse_dynamics(triples).float(), taken.float()
                )
            elif self.inverse_dynamics is not None:  # fewer than 3 frames: nothing to read
                aux["inverse_dynamics"] = z_hat.new_zeros((), dtype=torch.float32)
            self._aux = aux
        else:
            self._aux = None
        return out
