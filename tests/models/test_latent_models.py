"""The latent world models rssm and jepa (visfore_models.rssm, visfore_models.jepa,
visfore_models.latent): shapes and dtypes of every method, the candidate layout, features
of imagine(decode=False) against the state path, seeded determinism, no future leak,
JEPA's encoder shielded from the frame loss and its EMA target, RSSM's KL balancing and
free-bits floor, the probe, and a loss that falls on a tiny moving-square data set.

The shared contract (shapes, alignment, teacher forcing, errors, serialisation) is tested
for every model of the registry in test_models_interface.py and test_models_stepping.py.
"""

from __future__ import annotations

import pytest
import torch
from visfore_models_testutils import moving_square_clips

from visfore_models import JEPAForwardModel, LatentState, ModelState, RSSMForwardModel, build_model
from visfore_models.jepa import vicreg_terms
from visfore_models.rssm import categorical_kl, kl_balance, one_hot, straight_through_sample, unimix_probs

A, H = 2, 16
LATENT = ("rssm", "jepa")
#: small but not tiny: 16 latents, so a new frame changes some one-hot sample (see
#: test_models_interface.TINY)
SMALL = {
    "rssm": {"depth": 8, "deter": 32, "hidden": 32, "stoch": 16, "classes": 8, "embed_dim": 16},
    "jepa": {"depth": 8, "embed_dim": 16, "deter": 32, "hidden": 32},
}


def make(name: str, seed: int = 0, **kwargs) -> RSSMForwardModel | JEPAForwardModel:
    torch.manual_seed(seed)
    model = build_model(name, action_dim=A, image_size=H, **{**SMALL[name], **kwargs}).eval()
    assert isinstance(model, (RSSMForwardModel, JEPAForwardModel))
    return model


def inputs(B: int, C: int, K: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(B, C, 3, H, H, generator=g),
        torch.rand(B, C + K - 1, A, generator=g) * 2 - 1,
        torch.rand(B, K, 3, H, H, generator=g),
    )


def seeded(fn, *args, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    with torch.no_grad():
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", LATENT)
def test_shapes_and_dtypes_of_every_method(name: str) -> None:
    model = make(name, probe_dim=5)
    B, C, K, N = 3, 2, 4, 5
    context, actions, targets = inputs(B, C, K)
    D, F = SMALL[name]["deter"], model.feature_dim
    S = SMALL["rssm"]["stoch"] * SMALL["rssm"]["classes"] if name == "rssm" else SMALL["jepa"]["embed_dim"]
    assert F == SMALL[name]["embed_dim"] and model.latent
    with torch.no_grad():
        state = seeded(model.init_state, context, actions[:, : C - 1])
        assert isinstance(state, LatentState) and state.batch_size == B
        assert state.deter.shape == (B, D) and state.stoch.shape == (B, S)
        assert state.deter.dtype == state.stoch.dtype == torch.float32
        frames, new = seeded(model.imagine, state, actions[:, C - 1 :])
        assert frames.shape == (B, K, 3, H, H) and frames.dtype == torch.float32
        assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
        assert new.deter.shape == (B, D) and new.stoch.shape == (B, S)
        feats, _ = seeded(model.imagine, state, actions[:, C - 1 :], decode=False)
        assert feats.shape == (B, K, F) and feats.dtype == torch.float32
        cand = torch.rand(B, N, K, A) * 2 - 1
        frames_n, new_n = seeded(model.imagine, state, cand)
        feats_n, _ = seeded(model.imagine, state, cand, decode=False)
        assert frames_n.shape == (B, N, K, 3, H, H) and feats_n.shape == (B, N, K, F)
        assert new_n.deter.shape == (B * N, D) and new_n.stoch.shape == (B * N, S)
        assert model.decode(new).shape == (B, 3, H, H) and model.decode(new).dtype == torch.float32
        assert model.features(new).shape == (B, F) and model.features(new).dtype == torch.float32
        goal = model.encode_goal(context[:, 0])
        assert goal.shape == (B, F) and goal.dtype == torch.float32
        obs = seeded(model.observe, context, actions[:, : C - 1])
        assert obs.shape == (B, C, F) and obs.dtype == torch.float32
        assert model.probe(feats).shape == (B, K, 5) and model.probe(goal[0]).shape == (5,)
        out = seeded(model, context, actions, targets)
        assert out.shape == (B, K, 3, H, H) and out.dtype == torch.float32
    loss = model.probe_loss(feats, torch.zeros(B, K, 5))
    assert loss.dim() == 0 and loss.dtype == torch.float32


@pytest.mark.parametrize("name", LATENT)
def test_errors_are_one_line_value_errors(name: str) -> None:
    model = make(name)
    context, actions, _ = inputs(2, 2, 2)
    state = model.init_state(context, actions[:, :1])
    pixel_state = ModelState(frames=context, actions=actions[:, :1])
    cases = [
        (lambda: model.imagine(pixel_state, actions), "needs a LatentState"),
        (lambda: model.decode(pixel_state), "needs a LatentState"),
        (lambda: model.imagine(state, actions[:, :, :1]), "action_dim=2"),
        (lambda: model.imagine(state, actions[:1]), "batch size"),
        (lambda: model.imagine(state, torch.zeros(2, A)), "(B, K, A) or (B, N, K, A)"),
        (lambda: model.encode_goal(torch.rand(2, 3, H, H + 8)), f"(B, 3, {H}, {H})"),
        (lambda: model.encode_goal((context[:, 0] * 255).to(torch.uint8)), "floating"),
        (lambda: model.probe(torch.zeros(2, model.feature_dim)), "no probe"),
        (lambda: build_model(name, action_dim=2, image_size=H, probe_dim=-1), "probe_dim"),
        (lambda: build_model(name, action_dim=2, image_size=H, depth=0), "depth must be a positive int"),
    ]
    for fn, fragment in cases:
        with pytest.raises(ValueError) as info:
            fn()
        assert fragment in str(info.value) and "\n" not in str(info.value)
    probed = make(name, probe_dim=3)
    for fn, fragment in [
        (lambda: probed.probe(torch.zeros(2, probed.feature_dim + 1)), "features must be a"),
        (lambda: probed.probe_loss(torch.zeros(2, probed.feature_dim), torch.zeros(2, 4)), "labels must have shape"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            fn()
    convlstm = build_model("convlstm", action_dim=A, image_size=H)
    with pytest.raises(ValueError, match="needs a ModelState"):
        convlstm.imagine(state, actions)
    for bad in [
        {"unimix": 1.0},
        {"free_nats": -1.0},
        {"dyn_scale": "x"},
    ]:
        with pytest.raises(ValueError):
            build_model("rssm", action_dim=2, image_size=H, **bad)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        build_model("jepa", action_dim=2, image_size=H, momentum=1.0)


# ---------------------------------------------------------------------------- layout, features
@pytest.mark.parametrize("name", LATENT)
def test_candidate_layout(name: str) -> None:
    """Candidate n of state b is row b * N + n of the new state, and its rollout is the
    rollout of state b alone under that sequence (exactly, for the batch of repeated
    states under the same seed; for jepa also from a batch of one)."""
    model = make(name)
    B, N, K = 2, 3, 4
    context, actions, _ = inputs(B, 2, 1)
    state = seeded(model.init_state, context, actions[:, :1])
    cand = torch.rand(B, N, K, A, generator=torch.Generator().manual_seed(3)) * 2 - 1
    rep = state.repeat_interleave(N)
    for b in range(B):
        for n in range(N):
            assert torch.equal(rep.deter[b * N + n], state.deter[b]) and torch.equal(
                rep.stoch[b * N + n], state.stoch[b]
            )
    out, new = seeded(model.imagine, state, cand, seed=4)
    flat, new_flat = seeded(model.imagine, rep, cand.reshape(B * N, K, A), seed=4)
    assert torch.equal(out.reshape(B * N, K, 3, H, H), flat) and torch.equal(new.deter, new_flat.deter)
    feats, _ = seeded(model.imagine, state, cand, decode=False, seed=4)
    for b in range(B):
        for n in range(N):
            torch.testing.assert_close(model.features(new)[b * N + n], feats[b, n, -1], rtol=1e-5, atol=1e-5)
            if not model.stochastic:
                one = LatentState(deter=state.deter[b : b + 1], stoch=state.stoch[b : b + 1])
                single, _ = seeded(model.imagine, one, cand[b, n][None])
                torch.testing.assert_close(single[0], out[b, n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LATENT)
def test_imagined_features_follow_the_state_path(name: str) -> None:
    """imagine(decode=False) == features of the states met one step at a time, and
    imagine(decode=True) == their decoded frames, under the same RNG stream."""
    model = make(name)
    B, K = 3, 5
    context, actions, _ = inputs(B, 2, K)
    state = seeded(model.init_state, context, actions[:, :1])
    feats, end = seeded(model.imagine, state, actions[:, 1:], decode=False, seed=5)
    frames, _ = seeded(model.imagine, state, actions[:, 1:], seed=5)
    torch.manual_seed(5)
    step_feats, step_frames = [], []
    s = state
    with torch.no_grad():
        for k in range(K):
            _, s = model.imagine(s, actions[:, 1 + k : 2 + k], decode=False)
            step_feats.append(model.features(s))
            step_frames.append(model.decode(s))
    torch.testing.assert_close(torch.stack(step_feats, 1), feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(step_frames, 1), frames, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.deter, end.deter, rtol=1e-5, atol=1e-6)
    # observe(): one filtering pass; the features after each real frame = features of
    # init_state on that prefix under the same seed (the draws of a prefix come first)
    obs = seeded(model.observe, context, actions[:, :1], seed=6)
    for t in range(2):
        prefix = seeded(model.init_state, context[:, : t + 1], actions[:, :t], seed=6)
        torch.testing.assert_close(obs[:, t], model.features(prefix), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seeded(model.observe, context, actions[:, :1])[:, 1], model.features(state))
    # filter_states(): the states behind observe(), one per real frame
    states = seeded(model.filter_states, context, actions[:, :1], seed=6)
    assert len(states) == 2 and all(isinstance(s, LatentState) for s in states)
    torch.testing.assert_close(torch.stack([model.features(s) for s in states], 1), obs)


@pytest.mark.parametrize("name", LATENT)
def test_seeded_determinism(name: str) -> None:
    model = make(name)
    context, actions, targets = inputs(2, 2, 4)
    a = seeded(model, context, actions, seed=1)
    b = seeded(model, context, actions, seed=1)
    c = seeded(model, context, actions, seed=2)
    assert torch.equal(a, b)
    assert model.stochastic == (not torch.equal(a, c))  # rssm samples, jepa does not
    assert torch.equal(
        seeded(make(name, seed=3), context, actions, seed=1), seeded(make(name, seed=3), context, actions, seed=1)
    )
    assert not torch.equal(seeded(make(name, seed=4), context, actions, seed=1), a)
    model.train()
    torch.manual_seed(7)
    t1 = model(context, actions, targets)
    aux1 = {k: v.detach() for k, v in model.auxiliary_losses().items()}
    model2 = make(name).train()
    torch.manual_seed(7)
    t2 = model2(context, actions, targets)
    assert torch.equal(t1, t2)
    assert all(torch.equal(aux1[k], v.detach()) for k, v in model2.auxiliary_losses().items())


# ---------------------------------------------------------------------------- causality
@pytest.mark.parametrize("name", LATENT)
def test_no_future_leak(name: str) -> None:
    """With full teacher forcing (the targets are read), the prediction of o_{C+k} is
    unchanged when o_{C+k} or a_{C+k} changes, and changes with o_{C+k-1} and a_{C+k-1}."""
    model = make(name)
    C, K = 2, 4
    context, actions, targets = inputs(2, C, K)
    base = seeded(model, context, actions, targets, teacher_forcing_prob=1.0)
    for k in range(K - 1):
        t2 = targets.clone()
        t2[:, k] = torch.rand_like(t2[:, k])
        out = seeded(model, context, actions, t2, teacher_forcing_prob=1.0)
        assert torch.equal(out[:, : k + 1], base[:, : k + 1]), f"pred of o_{C + k} sees o_{C + k}"
        assert (out[:, k + 1] - base[:, k + 1]).abs().max() > 1e-5, f"pred of o_{C + k + 1} ignores o_{C + k}"
        a2 = actions.clone()
        a2[:, C + k] += 0.5
        out = seeded(model, context, a2, targets, teacher_forcing_prob=1.0)
        assert torch.equal(out[:, : k + 1], base[:, : k + 1]), f"pred of o_{C + k} sees a_{C + k}"
        assert (out[:, k + 1] - base[:, k + 1]).abs().max() > 1e-5, f"pred of o_{C + k + 1} ignores a_{C + k}"
    # the last context frame matters for the first prediction
    c2 = context.clone()
    c2[:, C - 1] = torch.rand_like(c2[:, C - 1])
    assert (seeded(model, c2, actions)[:, 0] - seeded(model, context, actions)[:, 0]).abs().max() > 1e-5


def test_rssm_reconstructs_in_training_and_predicts_in_eval() -> None:
    """Training mode with targets: the output for o_{C+k} is the posterior's reconstruction
    (it reads o_{C+k}); eval mode: a prediction that never reads the targets."""
    model = make("rssm")
    C, K = 2, 3
    context, actions, targets = inputs(2, C, K)
    t2 = targets.clone()
    t2[:, 1] = torch.rand_like(t2[:, 1])
    model.train()
    a, b = seeded(model, context, actions, targets), seeded(model, context, actions, t2)
    assert torch.equal(a[:, 0], b[:, 0]) and (a[:, 1] - b[:, 1]).abs().max() > 1e-5
    assert model.auxiliary_losses()["embed"] > 0
    model.eval()
    a, b = seeded(model, context, actions, targets), seeded(model, context, actions, t2)
    assert torch.equal(a, b)
    assert model.auxiliary_losses()["embed"] == 0


def test_jepa_output_never_reads_targets_without_teacher_forcing() -> None:
    """In training mode the targets feed only the latent losses: the decoded predictions are
    the same for other targets."""
    model = make("jepa").train()
    context, actions, targets = inputs(2, 2, 3)
    a = seeded(model, context, actions, targets)
    b = seeded(model, context, actions, torch.rand_like(targets))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------- JEPA
def test_jepa_encoder_gets_no_gradient_from_the_frame_loss() -> None:
    model = make("jepa").train()
    context, actions, targets = inputs(4, 2, 3)
    out = model(context, actions, targets)
    frame_loss = ((out - targets) ** 2).mean()
    frame_loss.backward(retain_graph=True)
    shielded = [n for n, _ in model.named_parameters() if not n.startswith("decoder.")]
    grads = dict(model.named_parameters())
    assert all(grads[n].grad is None or grads[n].grad.abs().sum() == 0 for n in shielded)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in grads.items() if n.startswith("decoder."))
    model.zero_grad(set_to_none=True)
    sum(model.auxiliary_losses().values()).backward()
    assert all(p.grad is None for n, p in grads.items() if n.startswith("decoder."))
    for n in ("encoder.conv.net.0.weight", "encoder.proj.weight", "gru.weight_ih", "pred_out.3.weight"):
        assert grads[n].grad is not None and grads[n].grad.abs().sum() > 0, n
    # in eval mode the frames stay differentiable with respect to the actions (planners)
    model.eval()
    acts = actions.clone().requires_grad_(True)
    model(context, acts)[:, -1].mean().backward()
    assert acts.grad is not None and acts.grad[:, 1:].abs().sum() > 0


def test_jepa_inverse_dynamics_term_trains_the_encoder_from_the_actions() -> None:
    """PLDM's inverse-dynamics term, on three frames (a torque shows in the change of
    velocity): an MLP reads a_t from (E(o_{t-1}), E(o_t), E(o_{t+1})) of every three
    consecutive observed frames; its loss reaches the encoder, depends on the actions, and
    weight 0 removes the head and the term."""
    model = make("jepa", idm_weight=10.0).train()
    context, actions, targets = inputs(4, 2, 3)
    model(context, actions, targets)
    idm = model.auxiliary_losses()["inverse_dynamics"]
    with torch.no_grad():
        z = model._encode(torch.cat([context, targets], dim=1))  # (4, 5, D): 3 triples
        triples = torch.cat([z[:, :-2], z[:, 1:-1], z[:, 2:]], dim=-1).flatten(0, 1)
        expected = 10.0 * ((model.inverse_dynamics(triples) - actions[:, 1:4].flatten(0, 1)) ** 2).mean()
    torch.testing.assert_close(idm.detach(), expected)
    idm.backward()
    assert model.encoder.proj.weight.grad is not None and model.encoder.proj.weight.grad.abs().sum() > 0
    assert model.gru.weight_ih.grad is None  # the predictor is not part of this term
    model(context, -actions, targets)
    assert not torch.allclose(model.auxiliary_losses()["inverse_dynamics"], idm.detach())
    plain = make("jepa", idm_weight=0.0).train()
    plain(context, actions, targets)
    assert plain.inverse_dynamics is None and "inverse_dynamics" not in plain.auxiliary_losses()
    assert plain.config()["idm_weight"] == 0.0


def test_jepa_temporal_variance_is_the_hinge_over_each_clips_steps() -> None:
    """The variance hinge taken over time within each clip: a clip of one repeated frame
    (nothing changes) pays the full hinge, and weight 0 leaves the term out."""
    model = make("jepa", temporal_var_weight=2.0).train()
    context, actions, targets = inputs(3, 2, 3)
    model(context, actions, targets)
    with torch.no_grad():
        z = model._encode(torch.cat([context, targets], dim=1))
        expected = 2.0 * torch.relu(1.0 - torch.sqrt(z.var(dim=1) + 1e-4)).mean()
    torch.testing.assert_close(model.auxiliary_losses()["temporal_variance"].detach(), expected)
    frozen = context[:, :1].expand(-1, 2, -1, -1, -1)
    model(frozen, actions, frozen[:, :1].expand(-1, 3, -1, -1, -1))
    torch.testing.assert_close(model.auxiliary_losses()["temporal_variance"].detach(), torch.tensor(2.0 * (1 - 1e-2)))
    plain = make("jepa", temporal_var_weight=0.0).train()
    plain(context, actions, targets)
    assert "temporal_variance" not in plain.auxiliary_losses()


def test_jepa_ema_target_update_and_hook() -> None:
    """Without the hook a training forward first moves the target by (1 - m) toward the
    online weights; after after_optimizer_step() (which does that update) forward stops."""
    model = make("jepa", momentum=0.9).train()
    context, actions, targets = inputs(2, 2, 2)
    online = dict(model.encoder.named_parameters())
    name = "conv.net.0.weight"
    target0 = model._target_params()[name].clone()
    assert torch.equal(target0, online[name])  # a copy at construction
    assert len(model._target_params()) == len(online) and all(not p.requires_grad for p in model.buffers())
    with torch.no_grad():
        online[name].add_(1.0)  # as an optimizer step would
    model(context, actions, targets)
    torch.testing.assert_close(model._target_params()[name], 0.9 * target0 + 0.1 * online[name].detach())
    after_forward = model._target_params()[name].clone()
    model.eval()
    model(context, actions, targets)  # eval: no update
    assert torch.equal(model._target_params()[name], after_forward)
    model.train()
    model.after_optimizer_step()
    after_hook = model._target_params()[name].clone()
    torch.testing.assert_close(after_hook, 0.9 * after_forward + 0.1 * online[name].detach())
    model(context, actions, targets)  # the hook was called: forward no longer updates
    assert torch.equal(model._target_params()[name], after_hook)
    # the target is in the state dict (checkpoints) and encode_goal uses it
    assert "target_0" in model.state_dict()
    goal = context[:, 0]
    torch.testing.assert_close(model.encode_goal(goal), model.target_encode(goal))
    assert not torch.allclose(model.encode_goal(goal), model.encoder(goal))


def test_expect_after_optimizer_step_turns_the_forward_fallback_off() -> None:
    """A trainer that says it will call the hook: forward never updates the target, not
    even before the first call (so a resumed run matches an uninterrupted one)."""
    model = make("jepa", momentum=0.9).train()
    context, actions, targets = inputs(2, 2, 2)
    name = "conv.net.0.weight"
    with torch.no_grad():
        dict(model.encoder.named_parameters())[name].add_(1.0)
    before = model._target_params()[name].clone()
    model.expect_after_optimizer_step()
    model(context, actions, targets)
    assert torch.equal(model._target_params()[name], before)
    # every model accepts the call (a no-op for those without a fallback)
    pixel = build_model("convlstm", action_dim=A, image_size=H)
    reference = {k: v.clone() for k, v in pixel.state_dict().items()}
    pixel.expect_after_optimizer_step()
    assert all(torch.equal(v, reference[k]) for k, v in pixel.state_dict().items())


def test_vicreg_terms() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 8, generator=g) * 2.0  # std 2 > gamma: no variance penalty
    variance, covariance = vicreg_terms(z)
    assert variance == 0 and covariance < 0.05
    collapsed = torch.ones(64, 8) + 1e-3 * torch.randn(64, 8, generator=g)
    variance, _ = vicreg_terms(collapsed)
    assert variance > 0.95  # std ~0 -> relu(1 - sqrt(var + eps)) ~ 1 per dimension
    x = torch.randn(2048, 1, generator=g)
    correlated = torch.cat([x, x], dim=1)
    _, covariance = vicreg_terms(correlated)
    torch.testing.assert_close(covariance, 2 * x.var() ** 2 / 2, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- RSSM
def test_categorical_kl_and_free_bits_floor() -> None:
    g = torch.Generator().manual_seed(0)
    post = unimix_probs(torch.randn(6, 4, 5, generator=g), 0.01)
    prior = unimix_probs(torch.randn(6, 4, 5, generator=g), 0.01)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(probs=post), torch.distributions.Categorical(probs=prior)
    ).sum(-1)
    torch.testing.assert_close(categorical_kl(post, prior), expected)
    assert torch.all(categorical_kl(post, post).abs() < 1e-6)
    # below the floor: the constant (0.5 + 0.1) * 1 nat, and no gradient at all
    logits = torch.randn(6, 4, 5, generator=g, requires_grad=True)
    near = unimix_probs(logits, 0.01)
    loss = kl_balance(near, near.detach() * 0.999 + 0.001 / 5)
    torch.testing.assert_close(loss, torch.full((6,), 0.6))
    loss.sum().backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)
    # above it: 0.5 KL + 0.1 KL, with gradients; dyn reaches the prior, rep the posterior
    post_logits = (3 * torch.randn(6, 4, 5, generator=g)).requires_grad_(True)
    prior_logits = torch.randn(6, 4, 5, generator=g).requires_grad_(True)
    q, p = unimix_probs(post_logits, 0.01), unimix_probs(prior_logits, 0.01)
    kl = categorical_kl(q, p)
    assert torch.all(kl > 1.0)
    torch.testing.assert_close(kl_balance(q, p), 0.6 * kl)
    kl_balance(q, p, dyn_scale=1.0, rep_scale=0.0).sum().backward()
    assert post_logits.grad is not None and torch.all(post_logits.grad == 0)
    assert prior_logits.grad is not None and prior_logits.grad.abs().sum() > 0


def test_rssm_kl_term_is_the_floor_when_free_bits_dominate() -> None:
    """With free bits above every KL the model's "kl" is the constant floor scaled by
    kl_scale / (3 H W), and the prior gets no gradient from it."""
    model = make("rssm", free_nats=1000.0, kl_scale=2.0).train()
    context, actions, targets = inputs(3, 2, 3)
    model(context, actions, targets)
    kl = model.auxiliary_losses()["kl"]
    torch.testing.assert_close(kl, torch.tensor(2.0 * (0.5 + 0.1) * 1000.0 / (3 * H * H)))
    kl.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.prior.parameters())
    # with free bits off the same step does train the prior
    model = make("rssm", free_nats=0.0).train()
    model(context, actions, targets)
    model.auxiliary_losses()["kl"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prior.parameters())


def test_straight_through_samples_follow_the_probabilities() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[[2.0, 0.0, -1.0, -5.0]]]).expand(20000, 1, 4).clone().requires_grad_(True)
    probs = unimix_probs(logits, 0.01)
    sample = straight_through_sample(probs, torch.rand(20000, 1, generator=g))
    assert set(sample.detach().sum(-1).flatten().tolist()) == {1.0}
    assert set(sample.detach().flatten().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(sample.detach().mean(0), probs.detach()[0], atol=0.01, rtol=0)
    assert float(probs.detach().min()) >= 0.01 / 4 - 1e-7  # unimix keeps every class possible
    (sample * torch.arange(4.0)).sum().backward()  # straight-through: the gradient of probs
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- probe
@pytest.mark.parametrize("name", LATENT)
def test_probe_trains_only_its_head(name: str) -> None:
    model = make(name, probe_dim=4).train()
    context, actions, _ = inputs(8, 3, 1)
    feats = model.observe(context, actions[:, :2])  # with gradients
    labels = torch.rand(8, 3, 4)
    optimizer = torch.optim.Adam(model.probe_head.parameters(), lr=1e-2)  # type: ignore[union-attr]
    first = None
    for _ in range(30):
        loss = model.probe_loss(feats, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
        for n, p in model.named_parameters():
            assert n.startswith("probe_head.") or p.grad is None, f"the probe's loss reaches {n}"
    assert float(model.probe_loss(feats, labels).detach()) < 0.5 * first


@pytest.mark.parametrize("name", LATENT)
def test_probe_loss_wraps_angles_and_scales_outputs(name: str) -> None:
    """The probe reads (pi - 0.1, 0.5) for labels (-pi + 0.1, 0.3): the angle's error wraps
    to 0.2 (not 2 pi - 0.2), the second output's 0.2 is divided by its scale 0.1."""
    import math

    model = make(name, probe_dim=2)
    head = torch.nn.Linear(model.feature_dim, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([math.pi - 0.1, 0.5]))
    model.probe_head = head
    feats, labels = torch.randn(5, model.feature_dim), torch.tensor([-math.pi + 0.1, 0.3]).expand(5, 2)
    angular, scale = torch.tensor([True, False]), torch.tensor([1.0, 0.1])
    loss = model.probe_loss(feats, labels, angular=angular, scale=scale)
    assert loss.dtype == torch.float32 and abs(float(loss) - (0.2**2 + 2.0**2) / 2) < 1e-4
    raw = model.probe_loss(feats, labels)
    assert abs(float(raw) - ((2 * math.pi - 0.2) ** 2 + 0.2**2) / 2) < 1e-4
    with pytest.raises(ValueError, match=r"scale must be a \(2,\) tensor, got shape \(3,\)"):
        model.probe_loss(feats, labels, scale=torch.ones(3))


# ---------------------------------------------------------------------------- learning
STEPS, BATCH, C, K = 30, 16, 2, 3


@pytest.mark.parametrize("name", [*LATENT, "rssm-composite"])
def test_loss_falls_on_moving_square(name: str) -> None:
    """30 Adam steps on 16x16 moving-square clips, with the trainer's loss (frame MSE of
    forward with targets + the auxiliary losses, after_optimizer_step after each step),
    lower the frame MSE (rssm: the reconstruction; jepa: the decoder's) and the held-out
    open-loop prediction MSE (eval mode); for jepa also the latent prediction error relative
    to the spread of the target embeddings (its raw MSE grows with that spread, which
    VICReg's variance term pushes toward 1)."""
    frames, acts = moving_square_clips(128, C + K, size=H, square=4, seed=0)
    test_frames, test_acts = moving_square_clips(32, C + K, size=H, square=4, seed=1)
    torch.manual_seed(0)
    kind, _, decoder = name.partition("-")
    extra = {"decoder": decoder} if decoder else {}
    model = build_model(kind, action_dim=A, image_size=H, **SMALL[kind], **extra)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def held_out() -> float:
        model.eval()
        pred = seeded(model, test_frames[:, :C], test_acts)
        model.train()
        return float(((pred - test_frames[:, C:]) ** 2).mean())

    before = held_out()
    g = torch.Generator().manual_seed(0)
    history: list[dict[str, float]] = []
    for _ in range(STEPS):
        idx = torch.randint(0, frames.shape[0], (BATCH,), generator=g)
        targets = frames[idx, C:]
        out = model(frames[idx, :C], acts[idx], targets)
        mse = ((out - targets) ** 2).mean()
        aux = model.auxiliary_losses()
        assert all(torch.isfinite(v) and v >= 0 for v in aux.values())
        loss = mse + sum(aux.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_optimizer_step()
        row = {
            "loss": float(loss.detach()),
            "mse": float(mse.detach()),
            **{k: float(v.detach()) for k, v in aux.items()},
        }
        if isinstance(model, JEPAForwardModel):
            spread = model.target_encode(frames[idx, 1:].flatten(0, 1)).var(dim=0).mean()
            row["relative_prediction"] = row["prediction"] / model.sim_weight / float(spread)
        history.append(row)
    after = held_out()

    def mean(key: str, part: slice) -> float:
        values = [h[key] for h in history[part]]
        return sum(values) / len(values)

    first, last = slice(0, 5), slice(-5, None)
    print(name, {k: (round(mean(k, first), 4), round(mean(k, last), 4)) for k in history[0]}, before, after)
    assert mean("mse", last) < 0.8 * mean("mse", first)
    assert after < 0.8 * before
    if kind == "jepa":
        assert mean("relative_prediction", last) < 0.5 * mean("relative_prediction", first)
        assert mean("variance", last) < 0.2 * mean("variance", first)  # no collapse: the spread grows


def test_rssm_prior_mode_imagines_deterministically() -> None:
    """prior_mode: every imagined step takes each categorical's most likely class, so two
    rollouts under different RNG draws are equal (and one-hot); sampling differs."""
    model = make("rssm").eval()
    context, actions, _ = inputs(4, 2, 5)
    with torch.no_grad():
        state = model.init_state(context, actions[:, :1])
        model.prior_mode = True
        torch.manual_seed(1)
        a, end = model.imagine(state, actions[:, 1:], decode=False)
        torch.manual_seed(2)
        b, _ = model.imagine(state, actions[:, 1:], decode=False)
        model.prior_mode = False
        torch.manual_seed(1)
        c, _ = model.imagine(state, actions[:, 1:], decode=False)
        torch.manual_seed(2)
        d, _ = model.imagine(state, actions[:, 1:], decode=False)
    assert a.shape == (4, 5, model.feature_dim) and torch.equal(a, b)
    assert not torch.equal(c, d)
    z = end.stoch.view(4, model.stoch, model.classes)
    assert torch.equal(z.sum(-1), torch.ones(4, model.stoch))


# ---------------------------------------------------------------------------- composite decoder
def test_rssm_composite_decoder_paints_onto_the_last_observed_frame() -> None:
    """decoder="composite": the state carries o_{C-1} (and each filtered state its own
    frame); with the mask forced shut the decoded frames are exactly that frame, forced open
    they are the generated image; imagine equals forward in eval mode; features never see
    the frame."""
    model = make("rssm", decoder="composite")
    context, actions, _ = inputs(3, 4, 5)
    with torch.no_grad():
        state = seeded(model.init_state, context, actions[:, :3])
        assert torch.equal(state.frame, context[:, -1])
        states = seeded(model.filter_states, context, actions[:, :3])
        assert all(torch.equal(s.frame, context[:, t]) for t, s in enumerate(states))
        # under one seed from the start, init_state + imagine draws what forward draws
        torch.manual_seed(0)
        st = model.init_state(context, actions[:, :3])
        via_imagine, end = model.imagine(st, actions[:, 3:])
        torch.manual_seed(0)
        via_forward = model(context, actions)
        assert via_imagine.shape == (3, 5, 3, H, H) and torch.equal(end.frame, context[:, -1])
        torch.testing.assert_close(via_imagine, via_forward)
        # features: the same with another frame attached
        other = LatentState(deter=state.deter, stoch=state.stoch, frame=torch.zeros_like(state.frame))
        f1, _ = seeded(model.imagine, state, actions[:, 3:], decode=False)
        f2, _ = seeded(model.imagine, other, actions[:, 3:], decode=False)
        assert torch.equal(f1, f2)
        last = model.decoder.net[-1]
        last.bias[3] = -1e4  # mask shut: the background comes through
        torch.testing.assert_close(model.decode(state), context[:, -1])
        last.bias[3] = 1e4  # mask open: the generated image alone
        dec = model.decoder
        logits = dec.net(dec.fc(torch.cat([state.deter, state.stoch], 1)).view(-1, *dec.grid))
        torch.testing.assert_close(model.decode(state), torch.sigmoid(logits[:, :3]))
        # candidates: each candidate row decodes onto its own state's frame
        last.bias[3] = -1e4
        cand, _ = seeded(model.imagine, state, actions[:, 3:][:, None].expand(3, 4, 5, A))
        torch.testing.assert_close(cand, context[:, -1][:, None, None].expand(3, 4, 5, 3, H, H))


def test_rssm_composite_decoder_errors_and_config() -> None:
    """A composite model decoding a state without a frame, and a bad decoder name, are
    one-line ValueErrors; the config rebuilds the decoder, and a config without the key
    (runs from before the option) builds the plain decoder."""
    model = make("rssm", decoder="composite")
    context, actions, _ = inputs(2, 2, 3)
    with torch.no_grad():
        state = seeded(model.init_state, context, actions[:, :1])
        bare = LatentState(deter=state.deter, stoch=state.stoch)
        with pytest.raises(ValueError, match="composite") as err:
            model.decode(bare)
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError, match="background"):
            model.decoder(torch.cat([state.deter, state.stoch], 1), torch.zeros(2, 3, H + 1, H))
    with pytest.raises(ValueError, match="decoder must be one of plain, composite, got 'mask'"):
        make("rssm", decoder="mask")
    assert RSSMForwardModel(**model.config()).decoder_kind == "composite"
    old = {k: v for k, v in make("rssm").config().items() if k != "decoder"}
    rebuilt = RSSMForwardModel(**old)
    assert rebuilt.decoder_kind == "plain" and not rebuilt.keeps_frame
    assert seeded(rebuilt.init_state, context, actions[:, :1]).frame is None
    assert bare.repeat_interleave(2).frame is None
    assert torch.equal(state.repeat_interleave(2).frame, context[:, -1].repeat_interleave(2, dim=0))


# ---------------------------------------------------------------------------- open-loop pixel term
def test_rssm_open_loop_term_trains_the_prior_through_its_decoded_rollout() -> None:
    """open_loop_weight w > 0 adds ``"open_loop"`` in training with targets only: linear in
    w, drawn after the forward pass (so the reconstructions are the same as with w = 0), and
    its gradient reaches the prior, which the reconstruction MSE never does; w = 0 adds no
    key; a negative w is a one-line error and the config rebuilds it."""
    context, actions, targets = inputs(3, 2, 4)
    outs, losses = {}, {}
    for w in (0.0, 1.0, 2.0):
        model = make("rssm", decoder="composite", open_loop_weight=w).train()
        torch.manual_seed(5)
        outs[w] = model(context, actions, targets)
        losses[w] = model.auxiliary_losses()
        if w == 1.0:
            recon = ((outs[w] - targets) ** 2).mean()
            recon.backward(retain_graph=True)
            assert all(p.grad is None or not p.grad.any() for p in model.prior.parameters())
            model.zero_grad()
            losses[w]["open_loop"].backward()
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.prior.parameters())
            assert RSSMForwardModel(**model.config()).open_loop_weight == 1.0
            model.eval()
            with torch.no_grad():
                model(context, actions, targets)
            assert "open_loop" not in model.auxiliary_losses()
    assert "open_loop" not in losses[0.0]
    assert torch.equal(outs[0.0], outs[1.0]) and torch.equal(outs[1.0], outs[2.0])
    assert float(losses[1.0]["open_loop"].detach()) > 0
    assert torch.allclose(losses[2.0]["open_loop"], 2 * losses[1.0]["open_loop"])
    with pytest.raises(ValueError, match="open_loop_weight must be a non-negative number, got -1") as err:
        make("rssm", open_loop_weight=-1)
    assert "\n" not in str(err.value)


def test_rssm_no_grad_lookup_equals_the_matrix_product_after_the_weights_change() -> None:
    """Without gradients a one-hot latent's part of ``img_in`` / ``feature_in`` is a lookup
    in cached weight columns: the same value as the plain product, also after an optimizer
    step and after load_state_dict (either must invalidate the cache)."""
    torch.manual_seed(0)
    model = build_model("rssm", action_dim=2, image_size=32)
    S, K = model.stoch, model.classes
    z = torch.nn.functional.one_hot(torch.randint(0, K, (5, S)), K).float().flatten(1)
    a, h = torch.rand(5, 2), torch.rand(5, model.deter)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            fast = (model._onehot_linear(model.img_in, a, z, True), model._onehot_linear(model.feature_in, h, z, False))
        with torch.enable_grad():
            slow = (model._onehot_linear(model.img_in, a, z, True), model._onehot_linear(model.feature_in, h, z, False))
        for f, s in zip(fast, slow):
            torch.testing.assert_close(f, s.detach(), rtol=1e-5, atol=1e-5)
        return fast

    before = both()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model._onehot_linear(model.img_in, a, z, True).sum().backward()
    (model._onehot_linear(model.feature_in, h, z, False)).sum().backward()
    opt.step()
    stepped = both()
    assert not torch.allclose(before[0], stepped[0]) and not torch.allclose(before[1], stepped[1])
    fresh = build_model("rssm", action_dim=2, image_size=32)
    model.load_state_dict(fresh.state_dict())
    loaded = both()
    assert not torch.allclose(stepped[0], loaded[0])


def test_one_hot_equals_torch_one_hot() -> None:
    idx = torch.randint(0, 7, (4, 3))
    assert torch.equal(one_hot(idx, 7, torch.float32), torch.nn.functional.one_hot(idx, 7).float())
