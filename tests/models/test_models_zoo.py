"""Model-specific behaviour of the zoo: CDNA/DNA transforms and normalisation, the frame
stack, SVG-LP's KL hook, posterior and seeded prior sampling. (The shared contract is in
test_models_interface.py, learning in test_models_learning.py.)"""

from __future__ import annotations

import copy

import pytest
import torch

from visfore_models import (
    CDNAForwardModel,
    DNAForwardModel,
    FrameStackForwardModel,
    SVGLPForwardModel,
    build_model,
    cdna_transform,
    dna_transform,
)
from visfore_models.svg_lp import gaussian_kl

TINY_SVG = {"channels": [8, 8, 8], "bottleneck_channels": 4, "g_dim": 16, "z_dim": 4, "rnn_size": 16}
TINY_FINN = {"lstm_channels": [4, 4, 8, 8, 8, 8, 4]}


def inputs(B: int, C: int, K: int, size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(B, C, 3, size, size, generator=g),
        torch.rand(B, C + K - 1, 2, generator=g) * 2 - 1,
        torch.rand(B, K, 3, size, size, generator=g),
    )


# ---------------------------------------------------------------------------- CDNA / DNA
def test_cdna_and_dna_transforms_shift_and_agree() -> None:
    x = torch.rand(2, 3, 8, 8)
    k = 3
    shift = torch.zeros(2, 1, k, k)
    shift[:, 0, 1, 2] = 1.0  # out[i, j] = x[i, j + 1]
    out = cdna_transform(x, shift)
    assert out.shape == (2, 1, 3, 8, 8)
    torch.testing.assert_close(out[:, 0, :, :, :-1], x[:, :, :, 1:])
    torch.testing.assert_close(out[:, 0, :, :, -1], x[:, :, :, -1])  # replicate padding
    # DNA with the same kernel at every pixel == CDNA
    kernels = torch.softmax(torch.randn(2, k * k), dim=1)
    per_pixel = kernels[:, :, None, None].expand(2, k * k, 8, 8)
    torch.testing.assert_close(dna_transform(x, per_pixel), cdna_transform(x, kernels.view(2, 1, k, k))[:, 0])


def test_cdna_kernels_are_normalised() -> None:
    torch.manual_seed(0)
    model = CDNAForwardModel(action_dim=2, image_size=16, num_kernels=3, **TINY_FINN)
    kernels = model.kernels(torch.randn(2, 8, 2, 2), torch.randn(2, 2))
    assert kernels.shape == (2, 3, 5, 5)
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum(dim=(2, 3)), torch.ones(2, 3))


def test_dna_output_is_convex_combination_of_previous_frame() -> None:
    """A constant frame is a fixed point of DNA (convex weights of its own pixels)."""
    torch.manual_seed(0)
    model = DNAForwardModel(action_dim=2, image_size=16, **TINY_FINN).eval()
    context = torch.full((2, 1, 3, 16, 16), 0.3)
    with torch.no_grad():
        out = model(context, torch.randn(2, 3, 2))
    torch.testing.assert_close(out, torch.full_like(out, 0.3))


# ---------------------------------------------------------------------------- frame stack
def test_frame_stack_repeats_earliest_then_slides() -> None:
    model = FrameStackForwardModel(action_dim=2, image_size=16, stack=4)
    f = [torch.full((1, 3, 2, 2), float(i)) for i in range(6)]
    firsts = lambda s: s[0, ::3, 0, 0].tolist()  # noqa: E731 - the first channel of each frame
    assert firsts(model.stack_frames(f[:1])) == [0, 0, 0, 0]
    assert firsts(model.stack_frames(f[:2])) == [0, 0, 0, 1]
    assert firsts(model.stack_frames(f[:4])) == [0, 1, 2, 3]
    assert firsts(model.stack_frames(f[:6])) == [2, 3, 4, 5]


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_frame_stack_sees_older_frames_of_the_window(core: str) -> None:
    """With C = 3, the first prediction depends on every context frame through the stack."""
    torch.manual_seed(0)
    model = FrameStackForwardModel(
        action_dim=2, image_size=16, core=core, channels=[8, 8, 8], latent_dim=16, hidden_size=16
    )
    context, actions, _ = inputs(1, 3, 2)
    context.requires_grad_(True)
    out = model(context, actions)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), context)
    assert (grad.abs().sum(dim=(0, 2, 3, 4)) > 0).all()


# ---------------------------------------------------------------------------- SVG-LP
def svg(seed: int = 0, **kwargs) -> SVGLPForwardModel:
    torch.manual_seed(seed)
    model = build_model("svg_lp", action_dim=2, image_size=16, **{**TINY_SVG, **kwargs})
    assert isinstance(model, SVGLPForwardModel)
    return model


def test_gaussian_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(5, 4, generator=g) for _ in range(4))
    q = torch.distributions.Normal(mu_q, (0.5 * lv_q).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * lv_p).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(1).mean()
    torch.testing.assert_close(gaussian_kl(mu_q, lv_q, mu_p, lv_p), expected)
    assert gaussian_kl(mu_q, lv_q, mu_q, lv_q) == 0


def test_svg_kl_after_training_forward() -> None:
    model = svg(beta=1e-4).train()
    assert model.auxiliary_losses() == {}
    context, actions, targets = inputs(3, 2, 3)
    out = model(context, actions, targets, teacher_forcing_prob=1.0)
    aux = model.auxiliary_losses()
    assert set(aux) == {"kl"}
    kl = aux["kl"]
    assert kl.dim() == 0 and kl.requires_grad and torch.isfinite(kl) and kl.item() > 0.0
    torch.testing.assert_close(kl, 1e-4 * model._kl)
    loss = ((out - targets) ** 2).mean() + kl
    loss.backward()
    assert model.prior.mu.weight.grad is not None and model.prior.mu.weight.grad.abs().sum() > 0
    copy.deepcopy(model)  # the stored KL (with its graph) does not travel
    # eval with one context frame: no posterior step at all -> zero KL
    model.eval()
    with torch.no_grad():
        model(context[:, :1], actions[:, :3])
    assert model.auxiliary_losses()["kl"].item() == 0.0


def test_svg_posterior_sees_targets_only_in_training() -> None:
    model = svg()
    context, actions, targets = inputs(2, 2, 3)
    t2 = targets.clone()
    t2[:, 0] = torch.rand_like(t2[:, 0])
    model.train()
    torch.manual_seed(5)
    a = model(context, actions, targets)
    torch.manual_seed(5)
    b = model(context, actions, t2)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-5, "the posterior's z_t must see o_{t+1} in training"
    model.eval()
    with torch.no_grad():
        torch.manual_seed(5)
        a = model(context, actions, targets)
        torch.manual_seed(5)
        b = model(context, actions, t2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_svg_prior_samples_are_seeded_and_vary() -> None:
    model = svg().eval()
    context, actions, _ = inputs(2, 2, 4)
    with torch.no_grad():
        torch.manual_seed(0)
        s0 = model(context, actions)
        s0_again = model(context, actions)  # RNG moved on: a new sample
        torch.manual_seed(0)
        s0_repeat = model(context, actions)
        torch.manual_seed(1)
        s1 = model(context, actions)
    torch.testing.assert_close(s0, s0_repeat, rtol=0, atol=0)
    assert (s0 - s1).abs().max() > 1e-5
    assert (s0 - s0_again).abs().max() > 1e-5
    # a random z at every step: the first returned frame already varies
    assert (s0[:, 0] - s1[:, 0]).abs().max() > 1e-6
