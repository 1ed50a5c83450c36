"""RSSM: a recurrent state-space model with DreamerV3's discrete latents, action-conditioned,
as a :class:`~visfore_models.latent.LatentForwardModel` (registry name ``"rssm"``).

Sources:
    * D. Hafner, T. Lillicrap, I. Fischer, R. Villegas, D. Ha, H. Lee, J. Davidson,
      "Learning Latent Dynamics for Planning from Pixels" (PlaNet), ICML 2019,
      arXiv:1811.04551 -- the RSSM: a deterministic recurrent path ``h_t`` and a stochastic
      latent ``z_t`` with a prior ``p(z_t | h_t)`` and a posterior ``q(z_t | h_t, o_t)``;
      planning in latent space by imagining with the prior.
    * D. Hafner, T. Lillicrap, M. Norouzi, J. Ba, "Mastering Atari with Discrete World
      Models" (DreamerV2), ICLR 2021, arXiv:2010.02193 -- categorical latents sampled with
      straight-through gradients (``sample + probs - sg(probs)``).
    * D. Hafner, J. Pasukonis, J. Ba, T. Lillicrap, "Mastering Diverse Domains through
      World Models" (DreamerV3), 2023, arXiv:2301.04104, and github.com/danijar/dreamerv3
      -- the constants taken here: 1% uniform mixture in every categorical (``unimix =
      0.01``), KL balancing ``L = beta_dyn * max(1, KL[sg(q) || p]) + beta_rep * max(1,
      KL[q || sg(p)])`` with ``beta_dyn = 0.5``, ``beta_rep = 0.1`` and free bits of 1 nat
      (the clip applies to the KL summed over all latent variables, per sample and step,
      before averaging), LayerNorm + SiLU MLPs, a learned initial state ``h_0 =
      tanh(w)``, conv encoder/decoder down to 4x4 (:mod:`visfore_models.latent`).
      Smaller than DreamerV3's smallest size, XS (GRU 256, MLP 256, CNN depth 24, 32
      latents x 32 classes), for the CPU planning budget: GRU 128, MLP 128, depth 16, 16 x
      16; a plain ``nn.GRUCell`` (Cho et al. 2014, arXiv:1406.1078) instead of DreamerV3's
      block GRU.

One time step (``e_t = LN(Linear(ConvEncoder(o_t)))``, the embedding)::

    h_{t+1} = GRU(h_t, SiLU(LN(Linear([z_t, a_t]))))                 deterministic path
    prior     p(z_{t+1} | h_{t+1})      = Cat(MLP(h_{t+1}))             S x K logits
    posterior q(z_{t+1} | h_{t+1}, e_{t+1}) = Cat(MLP([h_{t+1}, e_{t+1}]))
    x̂_t = ConvDecoder([h_t, z_t]),  features_t = MLP([h_t, z_t])        (F = embed_dim)

Both categoricals are ``0.99 * softmax(logits) + 0.01 / K``; a sample is one-hot per latent
(inverse-CDF of one uniform per latent) with straight-through gradients.

Time indices (:mod:`visfore_models.base`): the state at ``t`` is ``(h_t, z_t)`` with ``z_t``
from the posterior when ``o_t`` was observed. ``forward``:

* **training mode with targets** (what ``visfore train-model`` does): the posterior filters
  every frame ``o_0..o_{C+K-1}`` and the returned frames are the *reconstructions*
  ``decode(h_t, z_t)`` of ``o_C..o_{C+K-1}``, so the trainer's frame MSE is the
  reconstruction term; :meth:`RSSMForwardModel.auxiliary_losses` gives ``{"kl": ...,
  "embed": ...}``: the balanced, free-bits KL over all ``C + K`` steps, scaled by
  ``kl_scale / (3 H W)`` (DreamerV3 sums the image log-likelihood over pixels while the
  trainer *averages* its MSE over them; dividing by the ``3 H W`` pixel values keeps
  DreamerV3's ratio of reconstruction to KL), and the MSE of the feature head against the
  detached embedding of ``o_C..o_{C+K-1}``. ``teacher_forcing_prob`` has no effect here
  (every frame is observed).
* **eval mode, or no targets**: the posterior over the context ``o_0..o_{C-1}``, then the
  prior open-loop: the prediction of ``o_{t+1}`` is ``decode(h_{t+1}, z_{t+1} ~ prior)``,
  which depends on ``o_0..o_t`` and ``a_0..a_t`` only. Teacher forcing (``targets`` and
  ``teacher_forcing_prob``) replaces, per sample and step, the prior's ``z_t`` by the
  posterior's given the true ``o_t`` for ``t >= C``. ``"kl"`` then covers the observed
  steps, ``"embed"`` is zero.

Features (the planner's space): ``features_t = MLP([h_t, z_t])``, a head trained (on
detached states) to regress the encoder's embedding ``e_t`` of the frame, and
``encode_goal(g) = e(g)``; a goal image has no history, so a distance to it in ``(h, z)``
itself would mostly measure the history in ``h``. Imagining features costs a GRU step, two
small MLPs and a categorical sample per step: no convolution. Without gradients (planning
under ``torch.no_grad()``), a linear layer's product with the one-hot ``z`` is computed as
the sum of the ``S`` weight columns of the sampled classes (``embedding_bag``): the same
value up to float rounding at 1/K of the work; with gradients it is the plain product (so
the straight-through gradient flows).

RNG (torch's global generator; ``torch.manual_seed`` reproduces samples): one ``(B, S)``
uniform draw for ``z_0``'s posterior, then one ``(B, 2, S)`` draw per step (the prior of the
next state and its posterior), always before the step's teacher-forcing draw, in eval and
training mode alike, so ``imagine(init_state(c, a0), a)`` after one ``manual_seed`` equals
``forward(c, cat(a0, a))`` after the same seed, and chained ``imagine`` calls continue one
rollout.

``decoder="composite"`` (not DreamerV3's): the decoder also gives a mask and paints its
frame onto the last observed frame (``o_{C-1}`` for every predicted and reconstructed
step of a clip; :class:`~visfore_models.latent.ConvDecoder`), after the compositing masks
of Finn et al. 2016 (arXiv:1605.07157); the latent then need not carry what stays still.

Defaults (``depth=16, deter=128, hidden=128, stoch=16, classes=16, embed_dim=128``): 0.63 M
parameters at 32x32, 0.66 M at 64x64 (0.2 M of them in the decoder's first layer, from the
384 latent values to the 32 x 4 x 4 grid).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_positive, prepare_inputs
from .base import LatentState
from .latent import ConvDecoder, ConvEncoder, LatentForwardModel, mlp

__all__ = ["DECODERS", "RSSMForwardModel", "categorical_kl", "kl_balance", "straight_through_sample"]

#: the decoders of :class:`RSSMForwardModel` (its ``decoder`` argument)
DECODERS = ("plain", "composite")


def _check_scale(name: str, value: float, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if upper is not None and not value < upper:
        raise ValueError(f"{name} must be in [0, {upper}), got {value!r}")
    return float(value)


def unimix_probs(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """``(1 - unimix) * softmax(logits) + unimix / K`` over the last dim (DreamerV3's 1%
    uniform mixture), computed in float32; ``(..., K) -> (..., K)``."""
    probs = torch.softmax(logits.float(), dim=-1)
    if unimix > 0.0:
        probs = (1.0 - unimix) * probs + unimix / probs.shape[-1]
    return probs


def one_hot(idx: torch.Tensor, classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``F.one_hot(idx, classes).to(dtype)`` for indices known to lie in ``[0, classes)``:
    ``(...,)`` int64 -> ``(..., classes)``. A scatter into zeros, without ``F.one_hot``'s
    range check (a min and a max over ``idx``), which cost as much as the rest of it on
    CPU at a planner's batch sizes."""
    out = torch.zeros((*idx.shape, classes), dtype=dtype, device=idx.device)
    return out.scatter_(-1, idx.unsqueeze(-1), 1.0)


def straight_through_sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One-hot samples of the categoricals ``probs`` ``(B, S, K)`` by inverse CDF of the
    uniforms ``u`` ``(B, S)``, with straight-through gradients (DreamerV2,
    arXiv:2010.02193): the value is the one-hot sample, the gradient that of ``probs``.
    Returns ``(B, S, K)`` float32."""
    cdf = probs.detach().cumsum(dim=-1)
    idx = (cdf < u.to(cdf.dtype)[..., None]).sum(dim=-1).clamp_(max=probs.shape[-1] - 1)
    onehot = one_hot(idx, probs.shape[-1], probs.dtype)
    if not (torch.is_grad_enabled() and probs.requires_grad):
        return onehot  # the same value (up to rounding of onehot + p - p), no arithmetic
    return onehot + probs - probs.detach()


def categorical_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` of ``(N, S, K)`` categoricals, summed over the ``S`` latents and ``K``
    classes: ``(N,)`` float32 (both need strictly positive probabilities, e.g. unimixed)."""
    p, q = p.float(), q.float()
    return (p * (p.log() - q.log())).sum(dim=(-2, -1))


def kl_balance(
    post: torch.Tensor, prior: torch.Tensor, *, dyn_scale: float = 0.5, rep_scale: float = 0.1, free_nats: float = 1.0
) -> torch.Tensor:
    """DreamerV3's KL loss (arXiv:2301.04104, eq. 5) per sample, of posterior and prior
    ``(N, S, K)``: ``dyn_scale * max(free, KL[sg(q) || p]) + rep_scale * max(free, KL[q ||
    sg(p)])``, each KL summed over the latents. Returns ``(N,)`` float32 (average it over
    samples and steps); below ``free_nats`` a term is constant, with no gradient (free bits)."""
    dyn = categorical_kl(post.detach(), prior).clamp(min=free_nats)
    rep = categorical_kl(post, prior.detach()).clamp(min=free_nats)
    return dyn_scale * dyn + rep_scale * rep


class RSSMForwardModel(LatentForwardModel):
    """DreamerV3-style RSSM (registry name ``"rssm"``; ``stochastic = True``, ``latent =
    True``). See the module docstring for the architecture, losses, time indices and sources.

    State: ``LatentState(deter = h_t (B, deter), stoch = z_t (B, stoch * classes))``, ``z_t``
    the flattened one-hot sample. Features: ``(B, embed_dim)``.

    Args:
        action_dim: ``A``, size of one action vector (``>= 1``).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by 8.
        depth: channels of the first conv stage (then 2x, 4x; :mod:`visfore_models.latent`).
        deter: size of the GRU state ``h_t``.
        hidden: width of every MLP layer.
        stoch: number of categorical latents ``S``.
        classes: classes per latent ``K``.
        embed_dim: size of the frame embedding ``e_t`` and of the features.
        unimix: uniform mixture of every categorical, in ``[0, 1)`` (DreamerV3: 0.01).
        dyn_scale: ``beta_dyn`` (DreamerV3: 0.5).
        rep_scale: ``beta_rep`` (DreamerV3: 0.1).
        free_nats: free bits per sample and step (DreamerV3: 1.0).
        kl_scale: extra factor of the KL term (1.0 keeps DreamerV3's ratio to the
            pixel-summed reconstruction; see the module docstring).
        probe_dim: size of the optional probe head on the features (0: none).
        decoder: ``"plain"`` (DreamerV3's decoder: the frame from ``[h_t, z_t]`` alone) or
            ``"composite"`` (the decoder also gives a mask and paints its frame onto the
            last observed frame, :class:`~visfore_models.latent.ConvDecoder`; the states
            then carry that frame, :attr:`~visfore_models.base.LatentState.frame`). The
            features, the probe and latent planning never read the frame, though the
            latent trained this way need not carry what stays still.
        open_loop_weight: weight ``w`` of an open-loop pixel term in training (not
            DreamerV3's; 0, the default, leaves it out and draws nothing extra): besides
            the reconstructions, the prior rolls out from the posterior state of
            ``o_{C-1}`` under the clip's actions, as in eval mode, and
            ``auxiliary_losses()["open_loop"] = w * MSE(decoded rollout, o_C..o_{C+K-1})``.
            The reconstruction term trains the decoder on posterior states only, so the
            prior's frames, the ones a planner and the evaluation see, get no pixel
            gradient; this is the multi-step prediction loss of action-conditioned video
            prediction (Oh et al. 2015, arXiv:1507.08750; Finn et al. 2016), which PlaNet
            (Hafner et al. 2019, arXiv:1811.04551, Sec. 4) moves into latent space as
            latent overshooting. Padded steps of short-episode clips count in it.

    Raises:
        ValueError: on invalid sizes or scales, or a ``decoder`` not in :data:`DECODERS`
            (one-line message).
    """

    name = "rssm"
    stochastic = True

    def __init__(
        self,
        *,
        action_dim: int,
        image_size: int | tuple[int, int],
        depth: int = 16,
        deter: int = 128,
        hidden: int = 128,
        stoch: int = 16,
        classes: int = 16,
        embed_dim: int = 128,
        unimix: float = 0.01,
        dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
        free_nats: float = 1.0,
        kl_scale: float = 1.0,
        probe_dim: int = 0,
        decoder: str = "plain",
        open_loop_weight: float = 0.0,
    ) -> None:
        super().__init__(action_dim=action_dim, image_size=image_size)
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self.decoder_kind = decoder
        self.keeps_frame = decoder == "composite"
        self.depth = check_positive("depth", depth)
        self.deter = check_positive("deter", deter)
        self.hidden = check_positive("hidden", hidden)
        self.stoch = check_positive("stoch", stoch)
        self.classes = check_positive("classes", classes)
        self.embed_dim = check_positive("embed_dim", embed_dim)
        self.unimix = _check_scale("unimix", unimix, 1.0)
        #: imagine with each prior categorical's most likely class instead of a sample: a
        #: deterministic rollout, e.g. for planning (not a constructor option: it changes
        #: how the model is used, not the trained weights; filtering still samples)
        self.prior_mode = False
        self.dyn_scale = _check_scale("dyn_scale", dyn_scale)
        self.rep_scale = _check_scale("rep_scale", rep_scale)
        self.free_nats = _check_scale("free_nats", free_nats)
        self.kl_scale = _check_scale("kl_scale", kl_scale)
        self.open_loop_weight = _check_scale("open_loop_weight", open_loop_weight)
        Z = self.stoch * self.classes
        self.encoder = ConvEncoder(self.image_size, self.depth)
        self.embed = nn.Sequential(nn.Linear(self.encoder.out_dim, self.embed_dim), nn.LayerNorm(self.embed_dim))
        self.img_in = nn.Linear(Z + action_dim, self.hidden)
        self.img_norm = nn.LayerNorm(self.hidden)
        self.gru = nn.GRUCell(self.hidden, self.deter)
        self.prior = mlp((self.deter, self.hidden, Z))
        self.posterior = mlp((self.deter + self.embed_dim, self.hidden, Z))
        self.initial = nn.Parameter(torch.zeros(self.deter))
        self.decoder = ConvDecoder(self.deter + Z, self.image_size, self.depth, composite=self.keeps_frame)
        self.feature_in = nn.Linear(self.deter + Z, self.hidden)
        self.feature_out = nn.Sequential(nn.LayerNorm(self.hidden), nn.SiLU(), nn.Linear(self.hidden, self.embed_dim))
        self._build_probe(probe_dim, self.hidden)
        self._aux: dict[str, torch.Tensor] | None = None
        #: per ``*_in`` layer: (weight key, its transposed z columns), see :meth:`_z_columns`
        self._z_cache: dict[str, tuple[tuple[int, int, torch.dtype], torch.Tensor]] = {}

    # ------------------------------------------------------------------ serialisation
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this model: ``RSSMForwardModel(**config())``."""
        return {
            "action_dim": self.action_dim,
            "image_size": list(self.image_size),
            "depth": self.depth,
            "deter": self.deter,
            "hidden": self.hidden,
            "stoch": self.stoch,
            "classes": self.classes,
            "embed_dim": self.embed_dim,
            "unimix": self.unimix,
            "dyn_scale": self.dyn_scale,
            "rep_scale": self.rep_scale,
            "free_nats": self.free_nats,
            "kl_scale": self.kl_scale,
            "probe_dim": self.probe_dim,
            "decoder": self.decoder_kind,
            "open_loop_weight": self.open_loop_weight,
        }

    def __getstate__(self) -> dict[str, Any]:
        # the last losses are part of an autograd graph, which copy.deepcopy and pickle refuse
        state = self.__dict__.copy()
        state["_aux"] = None
        state["_z_cache"] = {}
        return state

    @property
    def feature_dim(self) -> int:
        """``F = embed_dim``."""
        return self.embed_dim

    # ------------------------------------------------------------------ losses
    def auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """``{"kl": kl_scale * L_KL / (3 H W), "embed": MSE(feature head, sg(e_t))}`` of the
        last forward pass (``L_KL``: :func:`kl_balance` averaged over the observed steps;
        ``embed`` is zero outside training with targets), plus ``"open_loop"`` in training
        with targets when ``open_loop_weight > 0``, or ``{}`` before the first one."""
        return {} if self._aux is None else dict(self._aux)

    # ------------------------------------------------------------------ latent operations
    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` -> embeddings ``(B, T, embed_dim)`` (one batched conv pass)."""
        B, T = frames.shape[:2]
        return self.embed(self.encoder(frames.flatten(0, 1))).view(B, T, -1)

    def _initial(self, batch: int) -> torch.Tensor:
        return torch.tanh(self.initial).expand(batch, -1)

    def _probs(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return unimix_probs(net(x).view(x.shape[0], self.stoch, self.classes), self.unimix)

    def _observe(self, h: torch.Tensor, e: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior at ``h_t`` given ``e_t``: ``(z_t (B, S*K), probs (B, S, K))``."""
        probs = self._probs(self.posterior, torch.cat([h, e.to(h.dtype)], dim=1))
        return straight_through_sample(probs, u).flatten(1), probs

    def _onehot_linear(self, linear: nn.Linear, other: torch.Tensor, z: torch.Tensor, z_first: bool) -> torch.Tensor:
        """``linear(cat([z, other]))`` (or ``cat([other, z])``) for a one-hot ``z`` ``(B, S*K)``.

        Without gradients the ``z`` part is a sum of ``S`` weight columns picked by the
        sampled classes (``embedding_bag``) instead of a ``(B, S*K)`` matrix product: the
        same value up to rounding, about 1/K of the work. With gradients (training, or a
        planner differentiating through the model) it is the plain product, so the
        straight-through gradient reaches the probabilities.
        """
        if torch.is_grad_enabled():
            parts = [z, other.to(z.dtype)] if z_first else [other, z.to(other.dtype)]
            return linear(torch.cat(parts, dim=1))
        Z = self.stoch * self.classes
        n_other = other.shape[1]
        w = linear.weight
        w_o = w[:, Z:] if z_first else w[:, :n_other]
        # the class of each one-hot latent (exact: a sum of one 1.0 times k; a small matmul,
        # 4x faster than argmax on CPU), offset to its column
        classes = torch.arange(self.classes, device=z.device, dtype=z.dtype)
        idx = (z.view(-1, self.stoch, self.classes) @ classes).long()
        idx = idx + torch.arange(self.stoch, device=idx.device) * self.classes
        out = F.linear(other, w_o, linear.bias)
        return out + F.embedding_bag(idx, self._z_columns(linear, z_first), mode="sum").to(out.dtype)

    def _z_columns(self, linear: nn.Linear, z_first: bool) -> torch.Tensor:
        """The ``z`` columns of ``linear.weight`` as a contiguous ``(S*K, out)`` table for
        ``embedding_bag``, cached until the weight changes (an optimizer step or a load bumps
        its version, ``.to()`` makes a new tensor): a planner calls this once per imagined
        step with the same weights, and the transposed copy cost as much as the lookup."""
        w = linear.weight
        key = (w.data_ptr(), w._version, w.dtype)
        name = "img_in" if linear is self.img_in else "feature_in"
        cache = self.__dict__.setdefault("_z_cache", {})  # models unpickled from before it
        hit = cache.get(name)
        if hit is None or hit[0] != key:
            Z = self.stoch * self.classes
            w_z = w[:, :Z] if z_first else w[:, w.shape[1] - Z :]
            hit = (key, w_z.detach().t().contiguous())
            cache[name] = hit
        return hit[1]

    def _transition(self, h: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``h_{t+1} = GRU(h_t, in([z_t, a_t]))``."""
        x = F.silu(self.img_norm(self._onehot_linear(self.img_in, a, z, z_first=True)))
        return self.gru(x, h)

    def _imagine_z(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior sample at ``h_t``: ``(z_t (B, S*K), probs (B, S, K))``."""
        probs = self._probs(self.prior, h)
        return straight_through_sample(probs, u).flatten(1), probs

    def _draw(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """One step's uniforms ``(B, 2, S)``: ``[:, 0]`` for the prior of the next state,
        ``[:, 1]`` for its posterior."""
        return torch.rand(batch, 2, self.stoch, device=like.device)

    def _filter(self, context: torch.Tensor, actions: torch.Tensor) -> list[LatentState]:
        B, C = context.shape[:2]
        e = self._encode(context)
        h = self._initial(B)
        u_post = torch.rand(B, self.stoch, device=context.device)
        z, _ = self._observe(h, e[:, 0], u_post)
        states = [LatentState(deter=h, stoch=z)]
        for t in range(C - 1):
            u = self._draw(B, context)
            h = self._transition(h, z, actions[:, t])
            z, _ = self._observe(h, e[:, t + 1], u[:, 1])
            states.append(LatentState(deter=h, stoch=z))
        return states

    def _step(self, state: LatentState, action: torch.Tensor) -> LatentState:
        u = self._draw(state.batch_size, state.deter)
        h = self._transition(state.deter, state.stoch, action)
        if self.prior_mode:
            probs = self._probs(self.prior, h)
            z = one_hot(probs.argmax(dim=-1), self.classes, probs.dtype).flatten(1)
        else:
            z, _ = self._imagine_z(h, u[:, 0])
        return LatentState(deter=h, stoch=z)

    def _features(self, deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        return self.feature_out(self._onehot_linear(self.feature_in, deter, stoch, z_first=False)).float()

    def _decode(self, deter: torch.Tensor, stoch: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        if self.keeps_frame and frame is None:
            raise ValueError("rssm with decoder='composite' paints onto the last observed frame: this state has none")
        return self.decoder(torch.cat([deter, stoch.to(deter.dtype)], dim=1), frame if self.keeps_frame else None)

    def encode_goal(self, frames: torch.Tensor) -> torch.Tensor:
        """The encoder's embedding ``e(g)`` of goal frames ``(B, 3, H, W)`` in ``[0, 1]``:
        ``(B, embed_dim)`` float32, the space the feature head regresses onto.

        Raises:
            ValueError: if ``frames`` is not a floating ``(B, 3, H, W)`` tensor of the model's
                size (one line).
        """
        self.check_goal(frames)
        ref = self._reference()
        return self._encode(frames.to(device=ref.device, dtype=ref.dtype)[:, None])[:, 0].float()

    # ------------------------------------------------------------------ rollout
    def forward(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        targets: torch.Tensor | None = None,
        teacher_forcing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Filter and predict (contract: :meth:`visfore_models.base.ForwardModel.forward`).

        In training mode with ``targets`` the posterior sees every frame and the output is
        the reconstruction of ``o_C..o_{C+K-1}`` (the VAE term; the KL in
        :meth:`auxiliary_losses` keeps the prior honest). Otherwise the posterior sees the
        context (and teacher-forced targets) and the output is the prior's open-loop
        prediction, which depends on the past only.

        Args:
            context: ``(B, C, 3, H, W)`` float in ``[0, 1]``: ``o_0..o_{C-1}``.
            actions: ``(B, C + K - 1, A)`` float: ``a_0..a_{C+K-2}``.
            targets: optional ``(B, K, 3, H, W)``: ``o_C..o_{C+K-1}``.
            teacher_forcing_prob: per-sample, per-step probability of observing the true
                frame (posterior) instead of imagining it (prior); needs ``targets``.

        Returns:
            ``(B, K, 3, H, W)`` in ``[0, 1]``: reconstructions (training with targets) or
            sampled predictions of ``o_C..o_{C+K-1}``.

        Raises:
            ValueError: on shape/dtype mismatch, inputs on another device than the model,
                or a bad ``teacher_forcing_prob``.
        """
        C, K = self.check_inputs(context, actions, targets, teacher_forcing_prob)
        context, actions, targets = prepare_inputs(self._reference(), context, actions, targets)
        p = float(teacher_forcing_prob)
        B = context.shape[0]
        reconstruct = self.training and targets is not None
        e_ctx = self._encode(context)
        e_tgt = self._encode(targets) if targets is not None and (reconstruct or p > 0.0) else None

        h = self._initial(B)
        u_post = torch.rand(B, self.stoch, device=context.device)
        prior_probs = self._probs(self.prior, h)  # p(z_0 | h_0), for the KL of step 0
        z_prior: torch.Tensor | None = None
        kls: list[torch.Tensor] = []  # per observed sample and step, summed over latents
        posts: list[tuple[torch.Tensor, torch.Tensor]] = []  # (h_t, z_t) of the posterior states
        preds: list[tuple[torch.Tensor, torch.Tensor]] = []  # (h_{t+1}, z_{t+1}) of the prior
        T = C + K - 1
        # (h_C, z_C ~ prior) after the context: the open-loop term's first step
        first_prior: tuple[torch.Tensor, torch.Tensor] | None = None
        for t in range(T + (1 if reconstruct else 0)):
            u = self._draw(B, context) if t < T else None
            # is o_t observed (posterior) for every sample, some of them, or none?
            mask: torch.Tensor | None = None
            if t < C or reconstruct:
                observed = True
            elif p >= 1.0:
                observed = True
            elif p > 0.0:
                mask = torch.rand(B, device=context.device) < p
                observed = True
            else:
                observed = False
            if observed:
                if t < C:
                    e_t = e_ctx[:, t]
                else:
                    assert e_tgt is not None
                    e_t = e_tgt[:, t - C]
                z_post, post_probs = self._observe(h, e_t, u_post)
                loss = kl_balance(
                    post_probs,
                    prior_probs,
                    dyn_scale=self.dyn_scale,
                    rep_scale=self.rep_scale,
                    free_nats=self.free_nats,
                )
                if mask is not None:
                    assert z_prior is not None
                    z = torch.where(mask[:, None], z_post, z_prior)
                    kls.append(loss[mask])
                else:
                    z = z_post
                    kls.append(loss)
                if reconstruct and t >= C:
                    posts.append((h, z))
            else:
                assert z_prior is not None
                z = z_prior
            if u is None:
                break
            h = self._transition(h, z, actions[:, t])
            z_prior, prior_probs = self._imagine_z(h, u[:, 0])
            if t == C - 1:
                first_prior = (h, z_prior)
            u_post = u[:, 1]
            if not reconstruct and t >= C - 1:
                preds.append((h, z_prior))

        states = posts if reconstruct else preds
        deter = torch.stack([s[0] for s in states], dim=1)  # (B, K, D)
        stoch = torch.stack([s[1] for s in states], dim=1)
        # a composite decoder paints every step onto the last context frame, as in imagine
        back = context[:, -1].repeat_interleave(K, dim=0) if self.keeps_frame else None
        out = self._decode(deter.flatten(0, 1), stoch.flatten(0, 1), back).view(B, K, 3, *self.image_size)

        kl = torch.cat(kls).mean() if kls else context.new_zeros((), dtype=torch.float32)
        H, W = self.image_size
        aux = {"kl": self.kl_scale * kl / (3 * H * W)}
        if reconstruct:
            assert e_tgt is not None
            # the feature head regresses e_t from the (detached) posterior state of o_t: a
            # read-out that never shapes the latent
            feats = self._features(deter.flatten(0, 1).detach(), stoch.flatten(0, 1).detach())
            aux["embed"] = F.mse_loss(feats, e_tgt.flatten(0, 1).detach().float())
            if self.open_loop_weight > 0:
                assert first_prior is not None and targets is not None
                aux["open_loop"] = self.open_loop_weight * self._open_loop_mse(
                    first_prior, actions[:, C:], targets, back
                )
        else:
            aux["embed"] = context.new_zeros((), dtype=torch.float32)
        self._aux = aux
        return out

    def _open_loop_mse(
        self,
        start: tuple[torch.Tensor, torch.Tensor],
        actions: torch.Tensor,
        targets: torch.Tensor,
        back: torch.Tensor | None,
    ) -> torch.Tensor:
        """MSE of the prior's open-loop rollout against ``targets`` ``(B, K, 3, H, W)``: a
        float32 scalar. ``start = (h_C, z_C)`` is the forward pass's own prior step after
        the context (so it is not computed twice); the rollout goes on under ``actions``
        ``(B, K - 1, A)`` (``a_C..a_{C+K-2}``) and is decoded (onto ``back`` for a composite
        decoder). Its uniforms are drawn after the forward pass's, so the reconstructions
        and KL keep the RNG stream of a run without the term."""
        h, z = start
        B, K = targets.shape[:2]
        steps = [(h, z)]
        for k in range(K - 1):
            h = self._transition(h, z, actions[:, k])
            z, _ = self._imagine_z(h, torch.rand(B, self.stoch, device=h.device))
            steps.append((h, z))
        deter = torch.stack([s[0] for s in steps], dim=1).flatten(0, 1)
        stoch = torch.stack([s[1] for s in steps], dim=1).flatten(0, 1)
        pred = self._decode(deter, stoch, back).view(B, K, 3, *self.image_size)
        return F.mse_loss(pred.float(), targets.float())
