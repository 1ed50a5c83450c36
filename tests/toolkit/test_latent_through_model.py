"""``visfore train-through-model`` with a latent world model (rssm, jepa): the policy is
trained in the model's latent space (visfore.planning.imagination.LatentImagination,
latent_goal_loss, visfore.planning.through_model_policy.LatentPolicyNet) and acts in the
real env from the latent state of the real frames (LatentThroughModelPolicy).

The models are tiny untrained ``jepa`` / ``rssm`` built with ``visfore_models.build_model``
and saved as ``train-model`` run directories on the shared 32x32 reacher dataset (as
tests/toolkit/test_latent_planning.py does); the probe run records a ``ProbeLayout`` as
``train-model --probe keypoints`` does. Each policy run is a few iterations of batch 4.
The learning test uses a toy latent model whose latent is a point the actions move.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from torch import nn
from visfore_cli_testutils import invoke as _cli
from visfore_cli_testutils import one_error_line as _one_error_line

from visfore.core import runs
from visfore.data.labels import ProbeLayout
from visfore.planning.config import ThroughModelConfig
from visfore.planning.goal_reaching import make_goal_env, run_goal_episodes
from visfore.planning.imagination import LatentImagination, latent_goal_loss
from visfore.planning.through_model import train_through_model
from visfore.planning.through_model_evaluation import print_summary
from visfore.planning.through_model_policy import (
    COMMAND,
    LatentPolicyNet,
    LatentThroughModelPolicy,
    load_through_model_policy,
)
from visfore.worldmodels.model_run import frames_to_model
from visfore_models import LatentState, build_model, model_state
from visfore_models.latent import LatentForwardModel

SIZE = 32
TINY = {
    "rssm": {"depth": 4, "deter": 16, "hidden": 16, "stoch": 4, "classes": 4, "embed_dim": 8},
    "jepa": {"depth": 4, "embed_dim": 8, "deter": 16, "hidden": 16},
}
#: ReacherPlane-v0's probe layout: elbow and fingertip (x, y), metres, then 2 joint angles.
LAYOUT = ProbeLayout(
    kind="keypoints", env_id="ReacherPlane-v0", keypoint_names=("elbow", "fingertip"),
    axis_names=("x", "y"), joint_names=("joint0", "joint1"),
)  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save_run(out: Path, name: str, data: Path, probe: bool = False, action_gain: float = 1.0) -> Path:
    """A train-model run directory of a tiny untrained ``name`` (context 2) on ``data``;
    ``action_gain`` multiplies the weights of the action inputs of jepa's predictor (an
    untrained model barely reacts to actions, so no policy could move its latent far)."""
    torch.manual_seed(0)
    model = build_model(name, action_dim=2, image_size=SIZE, probe_dim=LAYOUT.dim if probe else 0, **TINY[name])
    if action_gain != 1.0:
        with torch.no_grad():
            model.pred_in[0].weight[:, TINY[name]["embed_dim"] :] *= action_gain  # Linear(cat[z, a])
    config = {
        "command": "train-model",
        "options": {"model": name, "context": 2, "horizon": 2, "device": "cpu"},
        "dataset": {"path": str(data), "attrs": {"env_id": "ReacherPlane-v0", "env_kwargs": {}}},
        "split": {"train_episodes": list(range(9)), "val_episodes": [9, 10, 11]},
    }
    if probe:
        config["probe"] = LAYOUT.to_dict()
    out.mkdir(parents=True)
    runs.write_config(out, config)
    runs.save_checkpoint(runs.best_checkpoint_path(out),
                         {"format": "visfore-train-model-checkpoint", "model": model_state(model), "epoch": 1})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def latent_runs(small_reacher_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("latent-model-runs")
    return {
        "jepa": _save_run(root / "jepa", "jepa", small_reacher_dataset),
        "rssm": _save_run(root / "rssm", "rssm", small_reacher_dataset),
        "jepa-probe": _save_run(root / "jepa-probe", "jepa", small_reacher_dataset, probe=True),
        "jepa-sensitive": _save_run(root / "jepa-sensitive", "jepa", small_reacher_dataset, action_gain=5.0),
    }


def _config(model: Path, tmp_path: Path, **kwargs) -> ThroughModelConfig:
    options = dict(
        model=str(model), iterations=3, val_every=3, batch_size=4, val_batch=4, horizon=2, hidden=32,
        eval_episodes=0, device="cpu", num_threads=1, out_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    options.update(kwargs)
    return ThroughModelConfig(**options)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["policy"]["state_dict"]


# -- the policy net ------------------------------------------------------------------------------
def test_latent_policy_output_shape_and_bounds():
    net = LatentPolicyNet(feature_dim=8, action_dim=2, action_low=[-2, 0], action_high=[2, 0.5], hidden=16)
    f, g = torch.randn(64, 8), torch.randn(64, 8)
    a = net(f, g, torch.zeros(64, 2))
    assert a.shape == (64, 2)
    # DDPG's last-layer initialisation: the first actions are near the middle of the bounds
    np.testing.assert_allclose(a.detach().mean(0).numpy(), [0.0, 0.25], atol=0.05)
    torch.nn.init.normal_(net.head[-1].weight, std=100.0)  # saturate the tanh
    a = net(f * 10, g, torch.zeros(64, 2))
    assert (a[:, 0] >= -2).all() and (a[:, 0] <= 2).all() and (a[:, 1] >= 0).all() and (a[:, 1] <= 0.5).all()
    assert a[:, 0].abs().max() > 1.9  # it reaches the bounds, not only their middle
    rebuilt = LatentPolicyNet(**{k: v for k, v in net.config().items() if k != "net"})
    rebuilt.load_state_dict(net.state_dict())
    torch.testing.assert_close(rebuilt(f, g, a), net(f, g, a))
    assert net.config()["net"] == "latent-mlp" and net.config()["layers"] == 2
    with pytest.raises(ValueError, match="low < high"):
        LatentPolicyNet(feature_dim=8, action_dim=2, action_low=[0, 0], action_high=[0, 1])


# -- gradients through the latent models -----------------------------------------------------------
@pytest.mark.parametrize("name", ["rssm", "jepa"])
def test_gradients_reach_the_policy_and_not_the_frozen_model(name: str):
    torch.manual_seed(0)
    model = build_model(name, action_dim=2, image_size=SIZE, probe_dim=LAYOUT.dim, **TINY[name]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    net = LatentPolicyNet(feature_dim=model.feature_dim, action_dim=2, hidden=16)
    g = torch.Generator().manual_seed(1)
    B, C, K = 3, 2, 3
    context = torch.rand(B, C, 3, SIZE, SIZE, generator=g)
    goals = torch.rand(B, 3, SIZE, SIZE, generator=g)
    actions0 = torch.rand(B, C - 1, 2, generator=g) * 2 - 1
    imagination = LatentImagination(model, C, keypoint_coords=LAYOUT.keypoint_coords)
    rollout = imagination.rollout(net, context, actions0, goals, K)
    assert rollout.features.shape == (B, K, model.feature_dim) and rollout.actions.shape == (B, K, 2)
    assert rollout.start.shape == rollout.goal.shape == (B, model.feature_dim)
    loss, parts = latent_goal_loss(
        rollout, net.scale_action(rollout.actions), weights={"latent": 1.0, "keypoints": 0.5}, steps="all",
        action_penalty=0.0, keypoints=imagination.keypoints,
    )  # fmt: skip
    assert {"latent", "final_latent", "keypoints", "final_keypoints", "goal_cost", "action"} <= set(parts)
    # the goal's key points: the probe on each goal frame filtered C times at rest (no gradient)
    assert rollout.goal_keypoints is not None and rollout.goal_keypoints.shape == (B, LAYOUT.keypoint_coords)
    assert not rollout.goal_keypoints.requires_grad
    with torch.no_grad():
        final_kp = imagination.keypoints(rollout.features[:, -1])
        expected = (final_kp - rollout.goal_keypoints).norm(dim=-1).mean()
    assert parts["final_keypoints"] == pytest.approx(float(expected), rel=1e-5)
    if name == "jepa":  # deterministic: the same state as init_state of the goal held still
        with torch.no_grad():
            held = model.init_state(goals[:, None].repeat(1, C, 1, 1, 1), torch.zeros(B, C - 1, 2))
            torch.testing.assert_close(rollout.goal_keypoints, model.probe(model.features(held))[:, :4])
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # the cost alone (no action penalty) reaches the first layer: through the latent dynamics
    assert float(net.head[0].weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())  # the model stays frozen
    if name == "jepa":  # deterministic: the features are model.imagine of the actions taken
        with torch.no_grad():
            direct, _ = model.imagine(model.init_state(context, actions0), rollout.actions, decode=False)
        torch.testing.assert_close(rollout.features, direct, rtol=0, atol=1e-6)


class _PointModel(LatentForwardModel):
    """A toy latent model: the latent is a point in the plane that each action moves by
    ``0.3 * a``; a frame's point is its red and green means mapped to [-1, 1]."""

    name = "toy-point"

    def __init__(self) -> None:
        super().__init__(action_dim=2, image_size=8)
        self.gain = nn.Parameter(torch.tensor(0.3), requires_grad=False)

    @property
    def feature_dim(self) -> int:
        return 2

    def config(self) -> dict:
        return {}

    def forward(self, context, actions, targets=None, teacher_forcing_prob=0.0):
        raise NotImplementedError

    def encode_goal(self, frames: torch.Tensor) -> torch.Tensor:
        return frames[:, :2].mean(dim=(-1, -2)) * 2 - 1

    def _filter(self, context, actions):
        return [LatentState(deter=p, stoch=p) for p in (context[:, :, :2].mean(dim=(-1, -2)) * 2 - 1).unbind(1)]

    def _step(self, state, action):
        p = state.deter + self.gain * action
        return LatentState(deter=p, stoch=p)

    def _features(self, deter, stoch):
        return deter

    def _decode(self, deter, stoch):
        return deter.new_zeros(deter.shape[0], 3, 8, 8)


def test_the_latent_loss_falls_on_a_toy_model():
    """30 Adam steps through a toy latent model whose goals are reachable in K = 3 steps:
    the goal cost of a fixed batch falls far below the start's."""
    torch.manual_seed(0)
    model = _PointModel().eval()
    imagination = LatentImagination(model, 1)
    net = LatentPolicyNet(feature_dim=2, action_dim=2, hidden=32)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)

    def batch(seed: int, n: int = 16) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        colour = lambda: (0.2 + 0.6 * torch.rand(n, 3, 1, 1, generator=g)).expand(n, 3, 8, 8)  # noqa: E731
        return colour()[:, None], torch.zeros(n, 0, 2), colour()

    def loss_of(data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict]:
        rollout = imagination.rollout(net, *data, 3)
        return latent_goal_loss(rollout, net.scale_action(rollout.actions), weights={"latent": 1.0}, steps="all")

    fixed = batch(10_000)
    with torch.no_grad():
        first = loss_of(fixed)[1]["goal_cost"]
    losses = []
    for i in range(30):
        loss, _ = loss_of(batch(i))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        last = loss_of(fixed)[1]["goal_cost"]
    assert last < 0.3 * first, (first, last)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


# -- the pipeline ----------------------------------------------------------------------------------
def test_training_through_jepa_lowers_the_goal_cost_of_the_validation_batch(latent_runs, tmp_path: Path):
    metrics = train_through_model(
        _config(latent_runs["jepa-sensitive"], tmp_path, iterations=30, val_every=10, batch_size=8, val_batch=16,
                horizon=4, hidden=64, lr=1e-2, name="learn")
    )  # fmt: skip
    val = metrics["validation"]
    assert val["iteration"] == [0, 10, 20, 30] and set(val) == {"iteration", "goal_cost", "goal_latent", "loss"}
    assert val["goal_cost"] == val["goal_latent"]  # cost latent=1
    # the imagined final state of the fixed validation batch gets closer to the goal's features
    assert val["goal_cost"][-1] < 0.95 * val["goal_cost"][0], val["goal_cost"]
    assert metrics["best_val_goal_cost"] == min(val["goal_cost"])
    assert metrics["val_start"]["latent"] > 0 and metrics["val_start_latent"] == metrics["val_start"]["latent"]
    curve = metrics["loss_curve"]
    assert len(curve["loss"]) == 30 and all(np.isfinite(curve["loss"]))
    assert set(curve) == {"iteration", "loss", "latent", "final_latent", "goal_cost", "action"}
    run = Path(metrics["run_dir"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["imagination"] == "latent" and config["model"]["latent"] is True
    assert config["policy"]["net"] == "latent-mlp" and config["policy"]["feature_dim"] == 8
    assert config["policy"]["hidden"] == 64 and config["policy"]["layers"] == 2
    assert config["loss"]["cost"] == "latent=1" and "pixel" not in config["loss"]
    assert config["supervision"] == "self-supervised"
    assert list((run / "logs").iterdir())  # TensorBoard events
    for name in ("last.pt", "best.pt"):
        assert torch.load(run / "checkpoints" / name, weights_only=True)["format"] == (
            "visfore-through-model-policy-checkpoint"
        )


def test_resume_continues_exactly_through_the_stochastic_rssm(latent_runs, tmp_path: Path):
    a = train_through_model(_config(latent_runs["rssm"], tmp_path, iterations=4, val_every=2, name="a"))
    b = train_through_model(_config(latent_runs["rssm"], tmp_path, iterations=4, val_every=2, name="b"))
    wa, wb = _weights(Path(a["run_dir"])), _weights(Path(b["run_dir"]))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["loss_curve"]["loss"] == b["loss_curve"]["loss"]

    # 2 iterations, then --resume to 4: the same weights and curve as the uninterrupted run
    half = train_through_model(_config(latent_runs["rssm"], tmp_path, iterations=2, val_every=2, name="half"))
    run = Path(half["run_dir"])
    resumed = train_through_model(
        # one thread like the other runs: bit-equal weights need the same reduction order,
        # and the default follows the machine's free cores
        ThroughModelConfig(
            resume=True, out=str(run), iterations=4, device="cpu", progress=False, eval_episodes=0, num_threads=1
        )
    )
    assert resumed["iterations"] == 4 and resumed["session"]["iterations"] == 2
    assert resumed["loss_curve"] == a["loss_curve"]
    assert resumed["validation"] == a["validation"]
    wr = _weights(run)
    assert all(torch.equal(wa[k], wr[k]) for k in wa)


def test_cli_run_evaluates_and_plan_policy_runs_the_latent_policy(latent_runs, tmp_path: Path):
    out_dir = tmp_path / "runs"
    result = _cli(
        "train-through-model", "--model", latent_runs["jepa"], "--iterations", 2, "--val-every", 1,
        "--batch-size", 4, "--val-batch", 4, "--horizon", 2, "--hidden", 32, "--eval-episodes", 1,
        "--eval-steps", 3, "--device", "cpu", "--num-threads", 1, "--out-dir", out_dir, "--name", "cli",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "imagined goal cost" in text and "self-supervised" in text and "state-supervised" not in text
    run = out_dir / f"{COMMAND}-cli"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval"]["summary"]["n"] == 1 and metrics["supervision"] == "self-supervised"

    policy = load_through_model_policy(run)
    assert isinstance(policy, LatentThroughModelPolicy) and policy.name == "through-model"
    assert policy.env_id == "ReacherPlane-v0" and policy.image_size == (SIZE, SIZE)
    episodes = run_goal_episodes(
        lambda: make_goal_env(policy.env_id, policy.env_kwargs, SIZE), policy, episodes=1, seed=0, steps=3
    )
    assert episodes[0].final_distance == metrics["eval"]["summary"]["final_distance"]["mean"]

    # the first action: the net on the features of the reset frame filtered as the training's start
    # states (init_state of C copies of it, zero actions) and the goal frame's features
    env = make_goal_env("reacher", {}, SIZE)
    try:
        obs, info = env.reset(seed=5)
        goal = env.unwrapped.render_goal()
        policy.reset(env, obs, goal, np.random.default_rng(0))
        a1 = policy.act(obs, info)
        assert a1.dtype == np.float32 and a1.shape == (2,) and np.all(np.abs(a1) < 1)
        model = policy.model_run.model
        with torch.no_grad():
            frames = frames_to_model(np.repeat(obs["pixels"][None], 2, axis=0))[None]
            state = model.init_state(frames, torch.zeros(1, 1, 2))
            g = model.encode_goal(frames_to_model(goal)[None])
            expected = policy.net(model.features(state), g, torch.zeros(1, 2))[0].numpy()
        np.testing.assert_array_equal(a1, expected)
        first = obs["pixels"]
        obs, _, _, _, info = env.step(a1)
        a2 = policy.act(obs, info)  # the window is now (reset frame, new frame) with the action between
        with torch.no_grad():
            frames = frames_to_model(np.stack([first, obs["pixels"]]))[None]
            state = model.init_state(frames, torch.from_numpy(a1)[None, None])
            expected2 = policy.net(model.features(state), g, torch.from_numpy(a1)[None])[0].numpy()
        np.testing.assert_array_equal(a2, expected2)
    finally:
        env.close()

    plan_out = tmp_path / "plan"
    result = _cli(
        "plan", "--policy", run, "--controllers", "through-model", "--env", "reacher", "--size", SIZE,
        "--episodes", 1, "--steps", 3, "--no-gifs", "--device", "cpu", "--num-threads", 1, "--out", plan_out,
        "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((plan_out / "summary.json").read_text())
    assert list(summary["controllers"]) == ["through-model"]
    assert summary["controllers"]["through-model"]["steps_mean"] == 3


def test_keypoint_cost_is_labelled_state_supervised_and_latent_alone_is_not(latent_runs, tmp_path: Path):
    """A probe model trained through with --cost latent is self-supervised (the probe is not
    read); with a keypoints term config.yaml, metrics.json and the summary say
    state-supervised."""
    plain = train_through_model(_config(latent_runs["jepa-probe"], tmp_path, name="plain"))
    kp = train_through_model(
        _config(latent_runs["jepa-probe"], tmp_path, name="kp", cost="latent=1,keypoints=0.5", loss_steps="all")
    )

    def summary(metrics: dict) -> str:
        buf = io.StringIO()
        print_summary(metrics, Console(file=buf, width=200))
        return buf.getvalue()

    for metrics, supervised in ((plain, False), (kp, True)):
        run = Path(metrics["run_dir"])
        config_text = (run / "config.yaml").read_text()
        metrics_text = (run / "metrics.json").read_text()
        for text in (config_text, metrics_text, summary(metrics)):
            assert ("state-supervised" in text) is supervised, text
        assert yaml.safe_load(config_text)["supervision"].startswith("state-supervised" if supervised else "self")
    assert kp["cost"] == {"latent": 1.0, "keypoints": 0.5}
    assert set(kp["validation"]) == {"iteration", "goal_cost", "goal_latent", "goal_keypoints", "loss"}
    assert kp["val_start"]["keypoints"] > 0
    v = kp["validation"]
    np.testing.assert_allclose(v["goal_cost"], np.add(v["goal_latent"], np.multiply(0.5, v["goal_keypoints"])))
    assert {"keypoints", "final_keypoints"} <= set(kp["loss_curve"])
    assert load_through_model_policy(kp["run_dir"]).supervision.startswith("state-supervised")
    # plan labels the controller by what it used
    from visfore.planning.plan import load_through_model_controller

    assert load_through_model_controller(kp["run_dir"]).name == "through-model-state-supervised"
    assert load_through_model_controller(plain["run_dir"]).name == "through-model"


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        ("jepa", ["--cost", "pixels"], "--cost pixels: pixels needs decoded frames"),
        ("jepa", ["--cost", "keypoints"], "needs a model with a probe (visfore train-model --probe keypoints)"),
        ("jepa", ["--cost", "latent=abc"], "the weight of latent must be a number >= 0, got 'abc'"),
        ("jepa", ["--policy-frames", "2"], "--policy-frames is for pixel models"),
        ("jepa", ["--policy-layers", "0"], "--policy-layers must be an integer >= 1"),
        ("pixel", ["--cost", "latent"], "--cost is for latent models (rssm, jepa)"),
    ],
)
def test_bad_latent_options_are_one_line_and_write_nothing(
    latent_runs, model_run_dir: Path, tmp_path: Path, model: str, args: list, message: str
):
    run = model_run_dir if model == "pixel" else latent_runs[model]
    line = _one_error_line(
        _cli("train-through-model", "--model", run, "--out-dir", tmp_path / "runs", "--device", "cpu", "--quiet", *args)
    )
    assert message in line
    assert not (tmp_path / "runs").exists()
