"""``visfore plan`` in latent space: the ``latent`` / ``keypoints`` / ``pixels`` costs on
latent world models (visfore.planning.latent_costs, visfore.planning.controllers), the
MPPI optimiser (visfore.planning.mppi), the cost option and labels (visfore.planning.config)
and the command end to end.

The models are tiny ``jepa`` / ``rssm`` built with ``visfore_models.build_model`` (untrained:
the tests check shapes, zeros, call counts and the pipeline, not planning quality) and
saved as ``train-model`` run directories (config.yaml + checkpoints/best.pt, what
``load_model_run`` reads); the probe run records a ``ProbeLayout`` as ``train-model
--probe keypoints`` does.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from visfore_cli_testutils import invoke as _cli
from visfore_cli_testutils import one_error_line as _one_error_line

from visfore.core import runs
from visfore.core.errors import VisforeError
from visfore.data.labels import ProbeLayout
from visfore.planning.cem import CEMConfig, expand_blocks
from visfore.planning.config import controller_label, cost_weights, parse_cost, resolve_plan_defaults
from visfore.planning.controllers import LearnedCEMController, OracleCEMController
from visfore.planning.goal_reaching import make_goal_env
from visfore.planning.latent_costs import keypoint_cost, latent_cost, probe_keypoint_coords, weighted_sum
from visfore.planning.mppi import MPPIConfig, mppi, mppi_weights
from visfore.planning.plan import PlanConfig
from visfore.worldmodels.model_run import load_model_run, sample_seed
from visfore_models import build_model, model_state

SIZE = 32
TINY = {
    "rssm": {"depth": 4, "deter": 16, "hidden": 16, "stoch": 8, "classes": 4, "embed_dim": 8},
    "jepa": {"depth": 4, "embed_dim": 8, "deter": 16, "hidden": 16},
}
#: ReacherPlane-v0's probe layout: elbow and fingertip (x, y), metres, then 2 joint angles.
LAYOUT = ProbeLayout(
    kind="keypoints", env_id="ReacherPlane-v0", keypoint_names=("elbow", "fingertip"),
    axis_names=("x", "y"), joint_names=("joint0", "joint1"),
)  # fmt: skip
SMALL = ["--iterations", "2", "--samples", "8", "--elites", "2", "--blocks", "2", "--repeat", "2"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save_run(out: Path, name: str, probe: bool = False) -> Path:
    """A train-model run directory of a tiny untrained ``name`` (context 2)."""
    torch.manual_seed(0)
    kwargs = dict(TINY[name], probe_dim=LAYOUT.dim if probe else 0)
    model = build_model(name, action_dim=2, image_size=SIZE, **kwargs)
    dataset = {"attrs": {"env_id": "ReacherPlane-v0", "env_kwargs": {}, "steps_per_episode": 12, "policy": "smooth"},
               "num_episodes": 12, "num_rows": 156}  # fmt: skip
    config = {"command": "train-model", "options": {"model": name, "context": 2, "horizon": 2, "device": "cpu"},
              "dataset": dataset}  # fmt: skip
    if probe:
        config["probe"] = LAYOUT.to_dict()
    out.mkdir(parents=True)
    runs.write_config(out, config)
    runs.save_checkpoint(runs.best_checkpoint_path(out),
                         {"format": "visfore-train-model-checkpoint", "model": model_state(model), "epoch": 1})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def latent_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("latent-runs")
    return {
        "jepa": _save_run(root / "jepa", "jepa"),
        "rssm": _save_run(root / "rssm", "rssm"),
        "jepa-probe": _save_run(root / "jepa-probe", "jepa", probe=True),
        "rssm-probe": _save_run(root / "rssm-probe", "rssm", probe=True),
    }


@pytest.fixture
def reacher():
    env = make_goal_env("reacher", {}, SIZE)
    obs, info = env.reset(seed=0)
    yield env, obs, info, env.unwrapped.render_goal()
    env.close()


def _controller(run: Path, env, obs, goal, cfg=None, **kwargs) -> LearnedCEMController:
    cfg = cfg or CEMConfig(iterations=2, samples=6, elites=2, blocks=2, repeat=2)
    ctrl = LearnedCEMController(load_model_run(run), cfg, **kwargs)
    ctrl.reset(env, obs, goal, np.random.default_rng(0))
    return ctrl


def _actions(n: int = 6, k: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, k, 2, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- the cost option, weights and labels -------------------------------------------------------
def test_parse_cost_and_weights():
    assert parse_cost("latent=1,keypoints=0.5") == {"latent": 1.0, "keypoints": 0.5}
    assert parse_cost("pixels+keypoints") == {"pixels": None, "keypoints": None}
    assert cost_weights("keypoints=0.5, latent", keypoint_weight=3.0) == {"latent": 1.0, "keypoints": 0.5}
    assert cost_weights("pixels+keypoints", pixel_weight=2.0, keypoint_weight=3.0) == {"pixels": 2.0, "keypoints": 3.0}
    for text, message in [
        ("latent=abc", "the weight of latent must be a number >= 0, got 'abc'"),
        ("latent=-1", "the weight of latent must be a number >= 0"),
        ("magic", "unknown term 'magic'; valid: pixels, latent, keypoints"),
        ("latent,latent=2", "latent is given twice"),
        ("latent=0", "every weight is zero"),
        (",", "--cost names no term"),
    ]:
        with pytest.raises(VisforeError, match=message):
            cost_weights(text)


def test_controller_labels_name_cost_optimizer_and_state_supervision():
    assert controller_label("learned", ("pixels",), "cem") == "learned-cem"
    assert controller_label("learned", ("latent",), "mppi") == "learned-latent-mppi"
    assert (
        controller_label("learned", ("keypoints", "latent"), "cem") == "learned-latent+keypoints-cem-state-supervised"
    )
    assert controller_label("oracle", ("latent",), "mppi") == "oracle-mppi"


def test_defaults_depend_on_the_model():
    pixel = resolve_plan_defaults(PlanConfig(env="reacher"), latent=False)
    latent = resolve_plan_defaults(PlanConfig(env="reacher"), latent=True)
    assert (pixel.iterations, pixel.samples, pixel.elites, pixel.cost) == (3, 200, 10, "pixels")
    assert (latent.iterations, latent.samples, latent.elites, latent.cost) == (3, 256, 32, "latent")
    assert (pixel.init_std, pixel.execute) == (0.5, "best")
    mppi_cfg = resolve_plan_defaults(PlanConfig(env="reacher", optimizer="mppi"), latent=True)
    assert (mppi_cfg.init_std, mppi_cfg.execute) == (2.0, "mean")  # TD-MPC2's max_std; MPPI's weighted mean
    given = resolve_plan_defaults(PlanConfig(env="reacher", samples=40, cost="pixels"), latent=True)
    assert (given.samples, given.elites, given.cost) == (40, 5, "pixels")  # elites follow --samples


# -- the cost functions ------------------------------------------------------------------------
def test_latent_and_keypoint_cost_functions():
    feats = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
    goal = feats[2, -1].clone()
    final = latent_cost(feats, goal, "final")
    assert final.shape == (5,) and final[2] == 0 and bool(torch.all(final[[0, 1, 3, 4]] > 0))
    torch.testing.assert_close(final, (feats[:, -1] - goal).square().sum(-1))
    every = latent_cost(feats, goal, "all")
    torch.testing.assert_close(every, (feats - goal).square().sum(-1).mean(1))
    assert every[2] > 0  # the earlier steps are elsewhere
    kp = torch.zeros(2, 2, 4)
    kp[1, -1] = torch.tensor([0.3, 0.4, 0.0, 0.0])
    torch.testing.assert_close(keypoint_cost(kp, torch.zeros(4), "final"), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(keypoint_cost(kp, torch.zeros(4), "all"), torch.tensor([0.0, 0.25]))
    with pytest.raises(VisforeError, match="latent cost needs features"):
        latent_cost(feats, torch.zeros(3))


def test_weighted_sum_adds_the_terms():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([10.0, 0.0])
    torch.testing.assert_close(weighted_sum({"latent": a, "keypoints": b}, {"latent": 1.0, "keypoints": 0.5}),
                               torch.tensor([6.0, 2.0]))  # fmt: skip
    with pytest.raises(VisforeError, match="'pixels' was not computed"):
        weighted_sum({"latent": a}, {"pixels": 1.0})


@pytest.mark.parametrize("name", ["jepa", "rssm"])
@pytest.mark.parametrize("cost", ["latent", "pixels", "latent=1,pixels=2"])
def test_each_cost_on_a_latent_model_is_finite_of_shape_n(latent_runs, reacher, name, cost):
    env, obs, _, goal = reacher
    ctrl = _controller(latent_runs[name], env, obs, goal, cost=cost)
    costs = ctrl._cost(_actions())
    assert costs.shape == (6,) and costs.dtype == torch.float32 and bool(torch.isfinite(costs).all())
    assert bool((costs >= 0).all()) and float(costs.std()) > 0  # the candidates differ


def test_keypoint_cost_through_the_probe(latent_runs, reacher):
    env, obs, _, goal = reacher
    ctrl = _controller(
        latent_runs["jepa-probe"], env, obs, goal, cost="latent=1,keypoints=0.5", goal_keypoints="embedding"
    )
    assert ctrl.keypoint_source == "probe" and ctrl.keypoint_coords == 4  # elbow, fingertip x (x, y)
    assert ctrl.name == "learned-latent+keypoints-cem-state-supervised"
    actions = _actions()
    costs = ctrl._cost(actions)
    assert costs.shape == (6,) and bool(torch.isfinite(costs).all())
    # the sum of the two terms, each computed on its own
    model = ctrl.model_run.model
    with torch.no_grad():
        feats = model.imagine(ctrl.latent_state(), actions[None], decode=False)[0][0]
        goal_f = model.encode_goal(ctrl._goal[None])[0]
        kp = model.probe(feats[:, -1:])[..., :4]
        goal_kp = model.probe(goal_f[None])[0, :4]
    expected = latent_cost(feats, goal_f) + 0.5 * (kp[:, 0] - goal_kp).norm(dim=-1)
    torch.testing.assert_close(costs, expected)
    assert probe_keypoint_coords(model, env) == 4  # from the env's key-point sites and axes


@pytest.mark.parametrize("window", [2, 5])
def test_goal_keypoints_are_read_from_the_goal_frame_filtered_at_rest(latent_runs, reacher, window):
    """The default --goal-keypoints rest: the probe reads the goal's key points from the
    state of the goal frame filtered ``window`` times with zero actions, not from
    encode_goal's embedding (the latent cost's goal stays encode_goal)."""
    env, obs, _, goal = reacher
    ctrl = _controller(latent_runs["jepa-probe"], env, obs, goal, cost="latent+keypoints", filter_frames=window)
    model = ctrl.model_run.model
    with torch.no_grad():
        held = ctrl._goal[None, None].repeat(1, window, 1, 1, 1)
        state = model.init_state(held, torch.zeros(1, window - 1, 2))
        expected = model.probe(model.features(state))[0, :4]
        embedded = model.probe(model.encode_goal(ctrl._goal[None]))[0, :4]
    torch.testing.assert_close(ctrl._goal_kp, expected)
    torch.testing.assert_close(ctrl._goal_features, model.encode_goal(ctrl._goal[None])[0])
    # (an untrained jepa's filtered features are its online encoder's embedding, equal to the
    # target encoder's encode_goal; an rssm's features are not its embedding)
    torch.testing.assert_close(embedded, expected)
    rest, again, embedding = (
        _controller(latent_runs["rssm-probe"], env, obs, goal, cost="keypoints", filter_frames=window, goal_keypoints=g)
        for g in ("rest", "rest", "embedding")
    )
    torch.testing.assert_close(rest._goal_kp, again._goal_kp)  # seeded by the episode's generator
    assert rest._goal_kp.shape == (4,) and not torch.allclose(rest._goal_kp, embedding._goal_kp)
    with torch.no_grad():
        model = embedding.model_run.model
        torch.testing.assert_close(embedding._goal_kp, model.probe(model.encode_goal(embedding._goal[None]))[0, :4])
    with pytest.raises(VisforeError, match="--goal-keypoints must be one of rest, embedding, got 'mean'"):
        _controller(latent_runs["jepa-probe"], env, obs, goal, cost="keypoints", goal_keypoints="mean")


def test_latent_cost_is_zero_for_a_candidate_that_reaches_the_goal_features(latent_runs, reacher):
    """The goal made from the model's own imagination of candidate 3: its cost is zero, the
    others' are not."""
    env, obs, _, goal = reacher
    ctrl = _controller(latent_runs["jepa"], env, obs, goal, cost="latent")
    actions = _actions()
    with torch.no_grad():
        feats = ctrl.model_run.model.imagine(ctrl.latent_state(), actions[None], decode=False)[0][0]
    ctrl._goal_features = feats[3, -1].clone()
    costs = ctrl._cost(actions)
    assert float(costs[3]) == 0.0
    assert bool(torch.all(costs[[0, 1, 2, 4, 5]] > 0))


def test_keypoints_without_a_probe_refuse_in_one_line(latent_runs, reacher, tmp_path):
    env, obs, _, goal = reacher
    with pytest.raises(VisforeError, match="--cost keypoints needs --translator RUN .* the jepa model of .* has none"):
        _controller(latent_runs["jepa"], env, obs, goal, cost="keypoints")
    line = _one_error_line(_cli("plan", "--model", latent_runs["jepa"], "--cost", "latent,keypoints",
                                "--episodes", 1, "--steps", 1, "--out", tmp_path / "o", "--quiet"))  # fmt: skip
    assert "--cost latent,keypoints needs --translator RUN (a key-point translator) or a model with a probe" in line
    assert not (tmp_path / "o").exists()


class _CountingImagine:
    """Wraps ``model.imagine``, counting the calls by ``decode`` (and recording ``last_only``)."""

    def __init__(self, model):
        self.model, self.original = model, model.imagine
        self.calls = {True: 0, False: 0}
        self.shapes = []
        self.last_only = []

    def __call__(self, state, actions, decode=True, last_only=False):
        self.calls[bool(decode)] += 1
        self.shapes.append(tuple(actions.shape))
        self.last_only.append(last_only)
        return self.original(state, actions, decode=decode, last_only=last_only)


@pytest.mark.parametrize("optimizer", ["cem", "mppi"])
def test_one_imagine_call_per_iteration_without_decoding(latent_runs, reacher, optimizer):
    """A plan of I iterations x N samples calls imagine(decode=False) I times, each with all
    N candidates, and never decodes in the control step; the plan's frames (for GIFs) are
    decoded once, when ``imagined`` is read."""
    env, obs, info, goal = reacher
    kwargs = dict(iterations=3, samples=10, elites=3, blocks=2, repeat=2)
    cfg = MPPIConfig(**kwargs) if optimizer == "mppi" else CEMConfig(**kwargs)
    ctrl = _controller(latent_runs["rssm"], env, obs, goal, cfg, cost="latent")
    assert ctrl.name == f"learned-latent-{optimizer}" and ctrl.optimizer == optimizer
    counter = _CountingImagine(ctrl.model_run.model)
    ctrl.model_run.model.imagine = counter
    action = ctrl.act(obs, info)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    assert counter.calls == {False: 3, True: 0}
    assert counter.shapes == [(1, 10, 4, 2)] * 3  # every sample of an iteration in one batch
    assert counter.last_only == [True] * 3  # a final-step cost: only step T is featurised
    assert ctrl.imagined.shape == (4, SIZE, SIZE, 3)
    assert counter.calls == {False: 3, True: 1} and counter.shapes[-1] == (1, 1, 4, 2)
    ctrl.imagined  # noqa: B018 -- read again: not decoded again
    assert counter.calls[True] == 1


def test_pixels_cost_on_a_latent_model_decodes(latent_runs, reacher):
    env, obs, _, goal = reacher
    ctrl = _controller(latent_runs["jepa"], env, obs, goal, cost="pixels")
    assert ctrl.name == "learned-cem" and ctrl.needs_frames and not ctrl.needs_features
    counter = _CountingImagine(ctrl.model_run.model)
    ctrl.model_run.model.imagine = counter
    actions = _actions()
    costs = ctrl._cost(actions)
    assert counter.calls == {True: 1, False: 0}
    with torch.no_grad():
        frames = counter.original(ctrl.latent_state(), actions[None])[0][0]
    torch.testing.assert_close(costs, (frames[:, -1] - ctrl._goal).square().flatten(1).mean(1))


@pytest.mark.parametrize("cost_frames", ["final", "all"])
def test_a_final_step_cost_imagines_the_last_step_only(latent_runs, reacher, cost_frames):
    """With ``--cost-steps final`` the controller asks imagine for the last step only
    (``last_only``) and gets the same costs as from the full rollout; with ``all`` it
    reads every step."""
    env, obs, _, goal = reacher
    ctrl = _controller(latent_runs["rssm"], env, obs, goal, cost="latent", cost_frames=cost_frames)
    state = ctrl.latent_state()  # drawn before the seed is fixed below
    counter = _CountingImagine(ctrl.model_run.model)
    ctrl.model_run.model.imagine = counter
    ctrl._draw_seed = lambda: 0  # the rollout's draws: the same as the reference's
    actions = _actions()
    costs = ctrl._cost(actions)
    assert counter.last_only == [cost_frames == "final"]
    with torch.no_grad(), sample_seed(0, ctrl.device):
        feats = counter.original(state, actions[None], decode=False)[0][0]
    assert feats.shape == (6, 4, ctrl.model_run.model.feature_dim)
    torch.testing.assert_close(costs, latent_cost(feats, ctrl._goal_features, cost_frames), rtol=1e-5, atol=1e-6)


def test_rssm_costs_are_seeded_by_the_episode(latent_runs, reacher):
    """The stochastic rssm draws from the controller's generator: the same episode seed gives
    the same costs, another seed other costs."""
    env, obs, _, goal = reacher
    costs = []
    for seed in (0, 0, 1):
        ctrl = LearnedCEMController(
            load_model_run(latent_runs["rssm"]), CEMConfig(samples=6, elites=2, blocks=2, repeat=2)
        )
        ctrl.reset(env, obs, goal, np.random.default_rng(seed))
        costs.append(ctrl._cost(_actions()))
    assert torch.equal(costs[0], costs[1]) and not torch.equal(costs[0], costs[2])


def test_oracle_latent_cost_encodes_rendered_frames(latent_runs, reacher):
    """The oracle's latent term: rendered frames through the model's encode_goal, zero for a
    rollout that stays at the goal pose (the goal image is the rendered reset frame)."""
    env, obs, _, _ = reacher
    model = load_model_run(latent_runs["jepa"]).model
    cfg = CEMConfig(iterations=1, samples=4, elites=2, blocks=1, repeat=1)
    oracle = OracleCEMController(cfg, cost="latent", goal_encoder=model.encode_goal)
    with pytest.raises(VisforeError, match="latent cost needs a model"):
        OracleCEMController(cfg, cost="latent")
    start = env.unwrapped.data.qpos.copy()
    oracle.reset(env, obs, obs["pixels"], np.random.default_rng(0))
    qpos = oracle.rollout_qpos(np.zeros((1, 1, 2)))[0, -1]
    # the frame after a zero action, as the goal: the zero-action candidate costs 0
    oracle._goal_features = model.encode_goal(
        torch.from_numpy(oracle.render(qpos[None])).permute(0, 3, 1, 2).float() / 255
    )[0]
    costs = oracle._cost(torch.tensor([[[0.0, 0.0]], [[1.0, -1.0]]]))
    assert costs.shape == (2,) and float(costs[0]) == pytest.approx(0.0, abs=1e-6) and float(costs[1]) > 0
    np.testing.assert_array_equal(env.unwrapped.data.qpos, start)  # the env is never touched


# -- MPPI ------------------------------------------------------------------------------------
def _quadratic(target: torch.Tensor):
    def cost(actions: torch.Tensor) -> torch.Tensor:  # (N, T, A) -> (N,)
        return (actions - target).square().sum(dim=(1, 2))

    return cost


def test_mppi_weights():
    w = mppi_weights(torch.tensor([3.0, 1.0, 2.0]), temperature=0.5)
    assert float(w.sum()) == pytest.approx(1.0) and int(w.argmax()) == 1 and w[1] > w[2] > w[0]
    # normalised: the same weights for costs 1000x larger
    torch.testing.assert_close(w, mppi_weights(torch.tensor([3000.0, 1000.0, 2000.0]), temperature=0.5))
    raw = mppi_weights(torch.tensor([3.0, 1.0, 2.0]), temperature=0.5, normalize=False)
    torch.testing.assert_close(raw, torch.softmax(-0.5 * torch.tensor([2.0, 0.0, 1.0]), 0))  # TD-MPC2's form
    torch.testing.assert_close(mppi_weights(torch.ones(4), 0.5), torch.full((4,), 0.25))


def test_mppi_weighted_mean_moves_toward_the_best_samples():
    """One iteration: the new mean is the weighted mean of the elites, which lies nearer the
    minimum than their plain mean; over iterations it converges on the quadratic's minimum."""
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    blocks = torch.tensor([[0.5, -0.3], [-0.6, 0.2], [0.1, 0.7]])
    target = expand_blocks(blocks, 2)
    cost = _quadratic(target)
    one = MPPIConfig(iterations=1, samples=64, elites=16, blocks=3, repeat=2, init_std=0.5, include_mean=False)
    result = mppi(cost, low, high, one, torch.Generator().manual_seed(0))
    # recompute the samples of that iteration from the same generator
    eps = torch.randn((64, 3, 2), generator=torch.Generator().manual_seed(0))
    cand = (0.5 * eps).clamp(-1, 1)
    c = cost(expand_blocks(cand, 2))
    elite = torch.argsort(c, stable=True)[:16]
    w = mppi_weights(c[elite], 0.5)
    torch.testing.assert_close(result.mean, (w.view(-1, 1, 1) * cand[elite]).sum(0))
    dist = lambda m: float((m - blocks).square().sum())  # noqa: E731
    assert dist(result.mean) < dist(cand[elite].mean(0)) < dist(torch.zeros(3, 2))
    many = dataclasses.replace(one, iterations=10)
    result = mppi(cost, low, high, many, torch.Generator().manual_seed(0))
    assert torch.allclose(result.mean, blocks, atol=0.1) and result.cost < 0.05
    assert [h["best"] for h in result.history][-1] < result.history[0]["best"]
    assert result.evaluations == 10 * 64 and result.mean_actions.shape == (6, 2)


def test_mppi_std_clamp_and_bad_config():
    low, high = torch.full((1,), -2.0), torch.full((1,), 2.0)  # half-range 2
    cfg = MPPIConfig(iterations=2, samples=20, elites=4, blocks=2, repeat=1, min_std=0.3, max_std=0.5)
    result = mppi(_quadratic(torch.zeros(2, 1)), low, high, cfg, torch.Generator().manual_seed(0))
    assert bool(torch.all(result.std >= 0.6 - 1e-6)) and bool(torch.all(result.std <= 1.0 + 1e-6))
    for bad, message in [
        (dict(temperature=0.0), "--temperature must be > 0"),
        (dict(min_std=3.0), "--min-std 3.0 must be <= --max-std 2.0"),
        (dict(elites=600), "--elites 600 must be <= --samples 512"),
        (dict(execute="median"), "--execute must be one of best, mean"),
    ]:
        with pytest.raises(VisforeError, match=message):
            MPPIConfig(**bad).validate()


# -- the command ---------------------------------------------------------------------------------
def test_plan_latent_model_end_to_end(latent_runs, tmp_path):
    out = tmp_path / "plan"
    result = _cli("plan", "--model", latent_runs["jepa"], "--controllers", "learned", "--episodes", 1,
                  "--steps", 2, *SMALL, "--device", "cpu", "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["controllers"]) == ["learned-latent-cem"]
    meta = summary["meta"]
    assert meta["cost"] == "latent" and meta["cost_weights"] == {"latent": 1.0} and meta["model_latent"] is True
    assert meta["state_supervised"] is False and meta["budget"]["optimizer"] == "cem"
    assert summary["controllers"]["learned-latent-cem"]["seconds_per_step_mean"] > 0
    assert (out / "gifs" / "learned-latent-cem-ep000.gif").is_file()
    report = (out / "report.md").read_text()
    assert "1 x latent on final step(s)" in report and "CEM (min std" in report
    assert "state-supervised" not in report


def test_plan_probe_mppi_with_oracle_is_labelled_state_supervised(latent_runs, tmp_path):
    out = tmp_path / "plan"
    result = _cli("plan", "--model", latent_runs["jepa-probe"], "--controllers", "learned,oracle",
                  "--cost", "latent=1,keypoints=0.5", "--optimizer", "mppi", "--cost-steps", "all",
                  "--episodes", 1, "--steps", 2, *SMALL, "--no-gifs", "--device", "cpu", "--out", out,
                  "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    label = "learned-latent+keypoints-mppi-state-supervised"
    assert list(summary["controllers"]) == [label, "oracle-mppi"]
    meta = summary["meta"]
    assert meta["cost_weights"] == {"latent": 1.0, "keypoints": 0.5} and meta["keypoint_source"] == "probe"
    assert meta["oracle_cost_resolved"] == "latent+keypoints on all frame(s)"
    assert meta["budget"]["execute"] == "mean" and meta["budget"]["init_std"] == 2.0
    assert meta["model_supervision"] == "state-supervised (probe: keypoints)"
    report = (out / "report.md").read_text()
    assert label in report and "**state-supervised:**" in report and "MPPI (temperature 0.5" in report
    assert "1 x latent + 0.5 x keypoints on all step(s)" in report and "probe" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cost", "latent"], "--cost latent needs --model RUN"),
        (["--cost", "pixels,magic"], "unknown term 'magic'"),
        (["--cost", "pixels=x"], "the weight of pixels must be a number >= 0, got 'x'"),
        (["--optimizer", "adam"], "--optimizer must be one of cem, mppi, got 'adam'"),
        (["--optimizer", "mppi", "--temperature", "0"], "--temperature must be > 0"),
        (["--optimizer", "mppi", "--max-std", "0.01"], "--min-std 0.05 must be <= --max-std 0.01"),
    ],
)
def test_plan_latent_options_bad_input(tmp_path, args, message):
    line = _one_error_line(_cli("plan", "--env", "reacher", "--size", SIZE, "--controllers", "oracle,random",
                                "--episodes", 1, "--steps", 1, "--out", tmp_path / "out", "--quiet", *args))  # fmt: skip
    assert message in line
    assert not (tmp_path / "out").exists()


def test_reading_the_imagined_frames_changes_no_action(latent_runs):
    """The stochastic rssm's plan frames are decoded lazily with a seed drawn at plan time:
    the actions are the same whether or not the frames are read (GIFs or --no-gifs), and
    frames read after the next observation are still those of their plan."""
    runs_actions, frames = [], []
    for read in (False, True):
        env = make_goal_env("reacher", {}, SIZE)
        obs, info = env.reset(seed=0)
        ctrl = _controller(latent_runs["rssm"], env, obs, env.unwrapped.render_goal(), replan_every=1)
        acts = []
        for _ in range(3):
            acts.append(ctrl.act(obs, info))
            if read:
                frames.append(ctrl.imagined)
            obs, _, _, _, info = env.step(acts[-1])
        runs_actions.append(acts)
        env.close()
    assert all(np.array_equal(a, b) for a, b in zip(*runs_actions))
    assert len(frames) == 3 and all(f.shape == (4, SIZE, SIZE, 3) for f in frames)


# -- --filter-frames ---------------------------------------------------------------------------
def test_filter_frames_filters_the_last_real_frames_into_the_state(latent_runs):
    """With filter_frames=4 the latent state before a plan is jepa's init_state of the last 4
    real frames and the 3 actions between them (the first frame repeated, at rest, before
    there are 4), not of the last C = 2."""
    from visfore.worldmodels.model_run import frames_to_model

    env = make_goal_env("reacher", {}, SIZE)
    obs, info = env.reset(seed=0)
    ctrl = _controller(latent_runs["jepa"], env, obs, env.unwrapped.render_goal(), filter_frames=4)
    assert ctrl.window == 4 and ctrl._frames.shape == (4, 3, SIZE, SIZE) and ctrl._actions.shape == (3, 2)
    seen, acts = [obs["pixels"]] * 4, [np.zeros(2, np.float32)] * 3
    for _ in range(5):
        acts.append(ctrl.act(obs, info).astype(np.float32))
        obs, _, _, _, info = env.step(acts[-1])
        seen.append(obs["pixels"])
    ctrl._observe(obs, acts[-1])
    model = ctrl.model_run.model
    frames = frames_to_model(np.stack(seen[-4:]), ctrl.device)[None]
    expected = model.init_state(frames, torch.from_numpy(np.stack(acts[-3:]))[None])
    # jepa's features are the last frame's embedding; its recurrent state carries the history
    assert torch.allclose(ctrl.latent_state().deter, expected.deter, atol=1e-6)
    short = model.init_state(frames[:, -2:], torch.from_numpy(acts[-1])[None, None])
    assert not torch.allclose(short.deter, expected.deter, atol=1e-4)
    env.close()


def test_filter_frames_below_the_context_is_refused_in_one_line(latent_runs, reacher, tmp_path):
    env, obs, _, goal = reacher
    with pytest.raises(VisforeError, match="--filter-frames must be >= the model's context 2, got 1"):
        _controller(latent_runs["jepa"], env, obs, goal, filter_frames=1)
    line = _one_error_line(_cli("plan", "--model", latent_runs["jepa"], "--filter-frames", 0,
                                "--episodes", 1, "--steps", 1, "--out", tmp_path / "o", "--quiet"))  # fmt: skip
    assert "--filter-frames must be an integer in 1..1000, got 0" in line
    assert not (tmp_path / "o").exists()


def test_imagine_mode_needs_a_stochastic_latent_model(latent_runs, tmp_path):
    line = _one_error_line(_cli("plan", "--model", latent_runs["jepa"], "--imagine", "mode",
                                "--episodes", 1, "--steps", 1, "--out", tmp_path / "o", "--quiet"))  # fmt: skip
    assert "--imagine mode needs a stochastic latent model (rssm); got jepa" in line
    assert not (tmp_path / "o").exists()


def test_imagine_mode_plans_with_rssm_and_is_recorded(latent_runs, tmp_path):
    out = tmp_path / "o"
    result = _cli("plan", "--model", latent_runs["rssm"], "--imagine", "mode", "--controllers", "learned",
                  "--episodes", 1, "--steps", 2, *SMALL, "--out", out, "--quiet", "--no-gifs")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["budget"]["imagine"] == "mode"
