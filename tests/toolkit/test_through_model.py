"""``visfore train-through-model`` (formerly ``train-policy --through-model``): a policy
trained by backpropagating the goal cost through a frozen forward model
(visfore.planning.through_model and its modules).

A tiny ConvLSTM is trained for one epoch on the shared 32x32 reacher dataset by the real
``visfore train-model`` CLI, once per module; every policy run here is a few iterations of
batch 4 on it, and the real-env evaluations are 2 episodes of 3 steps.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from visfore_cli_testutils import invoke as _cli
from visfore_cli_testutils import one_error_line as _one_error_line

from visfore.core.errors import VisforeError
from visfore.planning.config import ThroughModelConfig
from visfore.planning.goal_reaching import episode_reset_seed, make_goal_env, run_goal_episodes
from visfore.planning.imagination import Imagination, goal_loss, imagination_mode
from visfore.planning.through_model import train_through_model
from visfore.planning.through_model_policy import (
    COMMAND,
    GoalPolicyNet,
    ThroughModelPolicy,
    load_through_model_policy,
)
from visfore_models import MODELS, build_model

TINY_CONVLSTM = {"encoder_channels": [4, 8], "lstm_channels": [8], "decoder_channels": [8, 4], "num_kernels": 1}
#: small configurations of every model (as tests/models/test_models_interface.py)
TINY: dict[str, dict] = {
    "convlstm": {"encoder_channels": [8, 8], "lstm_channels": [8], "decoder_channels": [8, 8], "num_kernels": 2},
    "rnn_deconv": {"channels": [8, 8, 8], "bottleneck_channels": 4, "latent_dim": 16, "hidden_size": 16},
    "cdna": {"lstm_channels": [4, 4, 8, 8, 8, 8, 4], "num_kernels": 2},
    "dna": {"lstm_channels": [4, 4, 8, 8, 8, 8, 4]},
    "framestack": {"channels": [8, 8, 8], "bottleneck_channels": 4, "latent_dim": 16, "hidden_size": 16},
    "svg_lp": {"channels": [8, 8, 8], "bottleneck_channels": 4, "g_dim": 16, "z_dim": 4, "rnn_size": 16},
    "rssm": {"depth": 4, "deter": 16, "hidden": 16, "stoch": 16, "classes": 4, "embed_dim": 8},
    "jepa": {"depth": 4, "embed_dim": 8, "deter": 16, "hidden": 16},
}
SIZE = 32  # frame size of the shared dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sensitive_run_dir(model_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with a model that reacts strongly to actions.

    One epoch on 8 clips leaves the ConvLSTM near its copy-last-frame initialisation, so
    actions barely change its predictions and no policy can lower the goal error. Here the
    weights of the action inputs of its first ConvLSTM gate convolution are multiplied by
    30 and the background-keep logit is lowered to 0 (keep probability 0.5), in both
    checkpoints."""
    out = tmp_path_factory.mktemp("model-runs") / "sensitive"
    shutil.copytree(model_run_dir, out)
    c2 = TINY_CONVLSTM["encoder_channels"][1]
    for name in ("best.pt", "last.pt"):
        path = out / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        sd = state["model"]["state_dict"]
        sd["cells.0.conv.weight"][:, c2 : c2 + 2] *= 30.0
        sd["mask_head.bias"][0] = 0.0
        torch.save(state, path)
    return out


@pytest.fixture(scope="module")
def cli_run(model_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLI run: 4 iterations, validation every 2, 2 real episodes of 3 steps."""
    out_dir = tmp_path_factory.mktemp("policy-runs")
    result = _cli(
        "train-through-model",
        "--model",
        model_run_dir,
        "--env",
        "reacher",
        "--iterations",
        4,
        "--val-every",
        2,
        "--batch-size",
        4,
        "--horizon",
        2,
        "--eval-episodes",
        2,
        "--eval-steps",
        3,
        "--seed",
        3,
        "--device",
        "cpu",
        "--out-dir",
        out_dir,
        "--name",
        "cli",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    return out_dir / f"{COMMAND}-cli"


def _config(model_run_dir: Path, tmp_path: Path, **kwargs) -> ThroughModelConfig:
    options = dict(
        model=str(model_run_dir),
        iterations=3,
        val_every=3,
        batch_size=4,
        horizon=2,
        eval_episodes=0,
        device="cpu",
        out_dir=str(tmp_path),
        progress=False,
        # one thread: bit-equal weights across runs need the same reduction order, and
        # the default follows the machine's free cores, which change while tests run
        num_threads=1,
    )
    options.update(kwargs)
    return ThroughModelConfig(**options)


# -- gradients through every model ---------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_goal_loss_gradient_reaches_the_policy_through_each_model(name: str):
    torch.manual_seed(0)
    model = build_model(name, action_dim=2, image_size=16, **TINY[name]).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    net = GoalPolicyNet(net="cnn", image_size=(16, 16), action_dim=2, frames=2)
    B, C, K = 3, 2, 3
    g = torch.Generator().manual_seed(1)
    context = torch.rand(B, C, 3, 16, 16, generator=g)
    goal = torch.rand(B, 3, 16, 16, generator=g)
    actions0 = torch.rand(B, C - 1, 2, generator=g) * 2 - 1
    preds, acts = Imagination(model, C).rollout(net, context, actions0, goal, K, frames=2)
    assert preds.shape == (B, K, 3, 16, 16) and acts.shape == (B, K, 2)
    loss, parts = goal_loss(preds, goal, net.scale_action(acts), steps="all", scales=2, action_penalty=0.0)
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # the pixel loss alone (no action penalty) reaches the first convolution: through the model
    assert float(net.encoder[0].weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())  # the model stays frozen


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_is_differentiable_wrt_actions(name: str):
    torch.manual_seed(0)
    model = build_model(name, action_dim=2, image_size=16, **TINY[name]).eval()
    actions = torch.zeros(2, 4, 2, requires_grad=True)
    pred = model(torch.rand(2, 2, 3, 16, 16), actions)
    (pred[:, -1] - 0.5).pow(2).mean().backward()
    assert torch.isfinite(actions.grad).all()
    assert float(actions.grad[:, 1:].abs().sum()) > 0  # the actions that lead to the predictions


@pytest.mark.parametrize("name", ["convlstm", "cdna", "dna", "rnn_deconv", "framestack"])
def test_closed_loop_imagination_equals_the_open_loop_forward(name: str):
    """In the recurrent modes the imagined frames are exactly model(context, actions taken)."""
    torch.manual_seed(0)
    model = build_model(name, action_dim=2, image_size=16, **TINY[name]).eval()
    net = GoalPolicyNet(net="mlp", image_size=(16, 16), action_dim=2, mlp_size=4, hidden=8)
    torch.nn.init.normal_(net.head[-1].weight, std=1.0)  # non-trivial actions
    context, goal = torch.rand(2, 2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    actions0 = torch.rand(2, 1, 2) * 2 - 1
    with torch.no_grad():
        preds, acts = Imagination(model, 2).rollout(net, context, actions0, goal, 4)
        direct = model(context, torch.cat([actions0, acts], dim=1))
    assert imagination_mode(model) in ("recurrent", "framestack")
    assert acts.abs().max() > 0.05 and acts.abs().max() < 1
    torch.testing.assert_close(preds, direct, rtol=0, atol=1e-6)


def test_imagination_modes_and_policy_output_bounds():
    assert imagination_mode(build_model("cdna", action_dim=2, image_size=16, **TINY["cdna"])) == "recurrent"
    assert (
        imagination_mode(build_model("framestack", action_dim=2, image_size=16, **TINY["framestack"])) == "framestack"
    )
    assert imagination_mode(build_model("svg_lp", action_dim=2, image_size=16, **TINY["svg_lp"])) == "window"
    net = GoalPolicyNet(net="cnn", image_size=(16, 16), action_dim=2, action_low=[-2, 0], action_high=[2, 0.5])
    torch.nn.init.normal_(net.head[-1].weight, std=100.0)  # saturate the tanh
    a = net(torch.rand(64, 1, 3, 16, 16), torch.rand(64, 3, 16, 16), torch.zeros(64, 2))
    assert a.shape == (64, 2)
    assert (a[:, 0] >= -2).all() and (a[:, 0] <= 2).all() and (a[:, 1] >= 0).all() and (a[:, 1] <= 0.5).all()
    with pytest.raises(ValueError, match="at least 16x16"):
        GoalPolicyNet(net="cnn", image_size=(8, 8), action_dim=2)


# -- training ----------------------------------------------------------------------------
def test_training_lowers_the_imagined_goal_error(sensitive_run_dir: Path, tmp_path: Path):
    metrics = train_through_model(
        _config(sensitive_run_dir, tmp_path, iterations=40, val_every=20, batch_size=8, lr=3e-3, name="learn")
    )
    val = metrics["validation"]
    assert val["iteration"] == [0, 20, 40]
    assert len(metrics["loss_curve"]["loss"]) == 40
    # the fixed validation batch: the imagined final frame gets closer to the goal
    assert val["goal_mse"][-1] < 0.99 * val["goal_mse"][0], val["goal_mse"]
    # and so does the training objective (pyramid MSE + action penalty) on that batch
    assert val["loss"][-1] < 0.99 * val["loss"][0], val["loss"]
    assert all(np.isfinite(metrics["loss_curve"]["loss"]))


def test_seeded_runs_are_identical_and_resume_continues_exactly(model_run_dir: Path, tmp_path: Path):
    def weights(run: Path) -> dict:
        return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["policy"]["state_dict"]

    a = train_through_model(_config(model_run_dir, tmp_path, iterations=4, val_every=2, name="a"))
    b = train_through_model(_config(model_run_dir, tmp_path, iterations=4, val_every=2, name="b"))
    c = train_through_model(_config(model_run_dir, tmp_path, iterations=4, val_every=2, seed=1, name="c"))
    wa, wb, wc = (weights(Path(m["run_dir"])) for m in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a["loss_curve"]["loss"] == b["loss_curve"]["loss"]

    # 2 iterations, then --resume to 4: the same weights as the uninterrupted run
    half = train_through_model(_config(model_run_dir, tmp_path, iterations=2, val_every=2, name="half"))
    run = Path(half["run_dir"])
    resumed = train_through_model(
        ThroughModelConfig(
            resume=True, out=str(run), iterations=4, device="cpu", progress=False, eval_episodes=0, num_threads=1
        )
    )
    assert resumed["iterations"] == 4 and resumed["session"]["iterations"] == 2
    assert resumed["loss_curve"]["loss"] == a["loss_curve"]["loss"]
    wr = weights(run)
    assert all(torch.equal(wa[k], wr[k]) for k in wa)


def test_resume_keeps_the_runs_evaluation_options_unless_given(model_run_dir: Path, tmp_path: Path):
    """A resumed run evaluates as it was configured (--eval-episodes 1 --eval-steps 2), not
    with the defaults (20 episodes of the env's time limit); options given now still win."""
    first = train_through_model(
        _config(model_run_dir, tmp_path, iterations=1, val_every=1, eval_episodes=1, eval_steps=2, name="ev")
    )
    run = Path(first["run_dir"])
    resumed = train_through_model(ThroughModelConfig(resume=True, out=str(run), iterations=2, progress=False))
    assert resumed["iterations"] == 2
    assert (resumed["eval"]["episodes"], resumed["eval"]["steps"]) == (1, 2)
    again = train_through_model(
        ThroughModelConfig(resume=True, out=str(run), iterations=3, eval_steps=3, progress=False)
    )
    assert (again["eval"]["episodes"], again["eval"]["steps"]) == (1, 3)


def test_resume_iterations_is_the_new_target(model_run_dir: Path, tmp_path: Path):
    """--resume --iterations N is the run's total (as train-model's --epochs): a larger one
    trains on and config.yaml keeps it; one at or below the iterations done trains nothing
    (one line says so) and the run is only evaluated again."""
    first = train_through_model(_config(model_run_dir, tmp_path, iterations=1, val_every=1, name="target"))
    run = Path(first["run_dir"])

    def resume(**kw):
        return train_through_model(ThroughModelConfig(resume=True, out=str(run), device="cpu", progress=False, **kw))

    more = resume(iterations=2)
    assert more["iterations"] == 2 and more["session"]["iterations"] == 1
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["options"]["iterations"] == 2 and cfg["targets"][0]["previous_iterations"] == 1
    before = (run / "checkpoints" / "last.pt").read_bytes()
    again = resume()  # keeps the new target: nothing left
    assert again["iterations"] == 2 and again["session"]["iterations"] == 0
    result = _cli("train-through-model", "--resume", "--out", run, "--iterations", 1, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--iterations 1: " in text and "has already done 2 iterations; nothing to train, evaluating only" in text
    assert "(pass --iterations above 2 to train on)" in text and "loss nan" not in text
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # nothing trained, nothing saved
    assert yaml.safe_load((run / "config.yaml").read_text())["options"]["iterations"] == 2


def test_cli_ctrl_c_prints_interrupted_once(model_run_dir: Path, tmp_path: Path, monkeypatch):
    """A real SIGINT during the first iteration: it ends, is validated and saved, and the
    command prints one line 'interrupted; at iteration 1; saved ...; continue with
    --resume --out RUN' (a warning of its own made it two); exit 130."""
    import signal

    from visfore.planning import through_model_training as tmt

    original = tmt.ThroughModelTask.train_step

    def step_then_ctrl_c(self, batch, state):
        result = original(self, batch, state)
        if state.global_step == 0:
            signal.raise_signal(signal.SIGINT)  # StopOnInterrupt's handler takes it
        return result

    monkeypatch.setattr(tmt.ThroughModelTask, "train_step", step_then_ctrl_c)
    result = _cli(
        "train-through-model", "--model", model_run_dir, "--iterations", 4, "--val-every", 2, "--batch-size", 2,
        "--horizon", 2, "--eval-episodes", 0, "--device", "cpu", "--out-dir", tmp_path, "--name", "ctrl-c", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 130, result.output
    assert result.output.count("interrupted") == 1, result.output
    run = tmp_path / f"{COMMAND}-ctrl-c"
    last = run / "checkpoints" / "last.pt"
    assert f"interrupted; at iteration 1; saved {last}; continue with --resume --out {run}" in result.output
    assert torch.load(last, weights_only=False)["iteration"] == 1


# -- the CLI run, its files and the policy ----------------------------------------------------
def test_cli_run_writes_config_checkpoints_metrics_and_eval(cli_run: Path, model_run_dir: Path):
    config = yaml.safe_load((cli_run / "config.yaml").read_text())
    assert config["command"] == COMMAND
    assert config["options"]["horizon"] == 2 and config["options"]["policy_net"] == "cnn"
    assert config["model"]["run_dir"] == str(model_run_dir.resolve())
    assert config["model"]["imagination"] == "recurrent"
    assert config["env"]["id"] == "ReacherPlane-v0"
    assert config["policy"]["image_size"] == [SIZE, SIZE]
    for name in ("last.pt", "best.pt"):
        state = torch.load(cli_run / "checkpoints" / name, weights_only=True)
        assert state["format"] == "visfore-through-model-policy-checkpoint"
    assert torch.load(cli_run / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 4
    assert list((cli_run / "logs").iterdir())  # TensorBoard events

    metrics = json.loads((cli_run / "metrics.json").read_text())
    assert metrics["iterations"] == 4 and metrics["validation"]["iteration"] == [0, 2, 4]
    assert metrics["loss_curve"]["iteration"] == [1, 2, 3, 4]
    summary = metrics["eval"]["summary"]
    assert summary["n"] == 2 and summary["success_threshold"] == 0.02
    assert 0.0 <= summary["success_rate"] <= 1.0 and "success_rate@0.05" in summary
    assert summary["final_distance"]["mean"] > 0 and summary["seconds_per_step_mean"] > 0

    with open(cli_run / "eval" / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["episode"]) for r in rows] == [0, 1]
    assert [int(r["reset_seed"]) for r in rows] == [episode_reset_seed(3, 0), episode_reset_seed(3, 1)]
    assert all(r["controller"] == "through-model" and int(r["steps"]) == 3 for r in rows)
    assert np.isclose(np.mean([float(r["final_distance"]) for r in rows]), summary["final_distance"]["mean"])


def test_loaded_policy_reproduces_the_evaluation(cli_run: Path):
    policy = load_through_model_policy(cli_run)
    assert isinstance(policy, ThroughModelPolicy) and policy.name == "through-model"
    assert policy.env_id == "ReacherPlane-v0" and policy.image_size == (SIZE, SIZE)
    episodes = run_goal_episodes(
        lambda: make_goal_env(policy.env_id, policy.env_kwargs, SIZE), policy, episodes=2, seed=3, steps=3
    )
    with open(cli_run / "eval" / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [e.final_distance for e in episodes] == [float(r["final_distance"]) for r in rows]

    # the same net rebuilt by hand from best.pt gives the same actions
    state = torch.load(cli_run / "checkpoints" / "best.pt", weights_only=True)
    net = GoalPolicyNet(**state["policy"]["config"])
    net.load_state_dict(state["policy"]["state_dict"])
    env = make_goal_env("reacher", {}, SIZE)
    try:
        obs, info = env.reset(seed=11)
        goal = env.unwrapped.render_goal()
        policy.reset(env, obs, goal, np.random.default_rng(0))
        a1 = policy.act(obs, info)
        assert a1.dtype == np.float32 and a1.shape == (2,) and np.all(np.abs(a1) <= 1)
        with torch.no_grad():
            x = torch.from_numpy(obs["pixels"]).permute(2, 0, 1)[None, None].float() / 255
            g = torch.from_numpy(goal).permute(2, 0, 1)[None].float() / 255
            expected = net(x, g, torch.zeros(1, 2))[0].numpy()
        np.testing.assert_array_equal(a1, expected)
        obs, _, _, _, info = env.step(a1)
        a2 = policy.act(obs, info)
        with torch.no_grad():
            x = torch.from_numpy(obs["pixels"]).permute(2, 0, 1)[None, None].float() / 255
            expected2 = net(x, g, torch.from_numpy(a1)[None])[0].numpy()
        np.testing.assert_array_equal(a2, expected2)
    finally:
        env.close()
    with pytest.raises(VisforeError, match="uint8 frames"):
        policy.reset(None, {"pixels": np.zeros((16, 16, 3), np.uint8)}, goal, np.random.default_rng(0))


def test_action_scale_narrows_the_policy_bounds(model_run_dir: Path, tmp_path: Path):
    """--action-scale 0.3: the net squashes into [-0.3, 0.3] (ReacherPlane-v0's box is
    [-1, 1]), is saved that way, and its real-env actions stay inside."""
    metrics = train_through_model(
        _config(model_run_dir, tmp_path, iterations=2, val_every=2, action_scale=0.3, name="scaled")
    )
    run = Path(metrics["run_dir"])
    policy = load_through_model_policy(run)
    np.testing.assert_allclose(policy.action_low, [-0.3, -0.3], rtol=1e-6)
    np.testing.assert_allclose(policy.action_high, [0.3, 0.3], rtol=1e-6)
    assert yaml.safe_load((run / "config.yaml").read_text())["options"]["action_scale"] == 0.3
    net = GoalPolicyNet(
        image_size=(SIZE, SIZE), action_dim=2, action_low=policy.action_low, action_high=policy.action_high
    )
    with torch.no_grad():  # extreme pre-activations saturate the tanh at the scaled bounds
        for p in net.parameters():
            p.fill_(10.0)
        a = net(torch.ones(1, 1, 3, SIZE, SIZE), torch.zeros(1, 3, SIZE, SIZE), torch.zeros(1, 2))
    assert torch.all(a.abs() <= 0.3 + 1e-6) and torch.all(a.abs() > 0.29)


def test_load_errors(tmp_path: Path, model_run_dir: Path):
    with pytest.raises(VisforeError, match="not a directory"):
        load_through_model_policy(tmp_path / "missing")
    # the command's name, not the deprecated `train-policy --through-model` spelling
    with pytest.raises(VisforeError, match=r"is not a train-through-model run \(config.yaml is from train-model\)"):
        load_through_model_policy(model_run_dir)
    with pytest.raises(VisforeError, match=r"not a directory \(expected a train-through-model run\)"):
        load_through_model_policy(tmp_path / "missing")
    with pytest.raises(VisforeError, match="unknown checkpoint"):
        load_through_model_policy(model_run_dir, checkpoint="newest")


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--horizon", "0"], "--horizon must be an integer >= 1"),
        (["--policy-net", "rnn"], "--policy-net must be one of cnn, mlp"),
        (["--env", "hopper"], "is not the env of the model's dataset"),
        (["--lr", "-1"], "--lr must be a finite number > 0"),
        (["--action-scale", "1.5"], "--action-scale must be in (0, 1], got 1.5"),
        (["--action-scale", "0"], "--action-scale must be in (0, 1], got 0.0"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(extra: list[str], match: str, model_run_dir: Path, tmp_path: Path):
    line = _one_error_line(
        _cli("train-through-model", "--model", model_run_dir, "--out-dir", tmp_path / "runs", "--quiet", *extra)
    )
    assert match in line
    assert not (tmp_path / "runs").exists()


def test_bad_model_runs_and_misplaced_options(tmp_path: Path, model_run_dir: Path):
    out = tmp_path / "runs"
    line = _one_error_line(_cli("train-through-model", "--model", tmp_path, "--out-dir", out))
    assert "not a train-model run directory" in line
    line = _one_error_line(_cli("train-through-model", "--model", tmp_path / "nope", "--out-dir", out))
    assert "not a directory" in line
    line = _one_error_line(
        _cli("train-through-model", "--model", model_run_dir, "--resume", tmp_path, "--out-dir", out)
    )
    assert "not both" in line
    line = _one_error_line(_cli("train-through-model", "--resume", "--out-dir", out))
    assert "--resume needs the run directory" in line
    line = _one_error_line(_cli("train-through-model", "--resume", "--out", tmp_path / "nope"))
    assert "nope" in line
    # SB3 options are not options of this command (click's usage error, exit 2)
    result = _cli("train-through-model", "--model", model_run_dir, "--algo", "td3", "--out-dir", out)
    assert result.exit_code == 2 and "--algo" in result.output
    assert not out.exists()


def test_cli_resume_is_a_switch_with_out_and_the_old_form_still_works(model_run_dir: Path, tmp_path: Path):
    """``--resume --out RUN_DIR`` (and ``--resume --name NAME``) continues a run, like
    train-model and train-policy; the old ``--resume RUN_DIR`` and ``--resume=RUN_DIR`` still do."""
    out_dir = tmp_path / "runs"
    common = ["--iterations", 1, "--val-every", 1, "--batch-size", 2, "--horizon", 1, "--eval-episodes", 0]
    result = _cli(
        "train-through-model", "--model", model_run_dir, *common, "--device", "cpu", "--out-dir", out_dir,
        "--name", "r", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = out_dir / f"{COMMAND}-r"

    def iterations() -> int:
        return int(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"])

    assert iterations() == 1
    for i, resume in enumerate(
        (
            ["--resume", "--out", run],
            ["--resume", "--name", "r", "--out-dir", out_dir],
            ["--resume", run],
            [f"--resume={run}"],
        )
    ):
        result = _cli(
            "train-through-model", *resume, "--iterations", i + 2, "--eval-episodes", 0, "--device", "cpu", "--quiet"
        )
        assert result.exit_code == 0, (resume, result.output)
        assert iterations() == i + 2, resume
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["options"]["resume"] is False and "--resume" not in config["command_line"]


def test_old_train_policy_resume_of_a_through_model_run_still_works(model_run_dir: Path, tmp_path: Path):
    """``visfore train-policy --resume RUN_DIR`` (the old way to continue a through-model
    run: --through-model with --resume was refused) is forwarded to train-through-model."""
    out_dir = tmp_path / "runs"
    common = ["--iterations", 1, "--val-every", 1, "--batch-size", 2, "--horizon", 1, "--eval-episodes", 0]
    result = _cli(
        "train-through-model", "--model", model_run_dir, *common, "--device", "cpu", "--out-dir", out_dir,
        "--name", "old", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = out_dir / f"{COMMAND}-old"
    for i, resume in enumerate((["--resume", run], ["--resume", "--out", run])):
        result = _cli("train-policy", *resume, "--iterations", i + 2, "--eval-episodes", 0, "--no-progress")
        assert result.exit_code == 0, (resume, result.output)
        assert int(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"]) == i + 2
    # a train-policy run, or no run at all, is still train-policy's
    assert "not a directory" in _one_error_line(_cli("train-policy", "--resume", tmp_path / "nope"))


def test_old_train_policy_through_model_command_lines_still_work(model_run_dir: Path, tmp_path: Path):
    """``visfore train-policy --through-model RUN ...`` (README's spelling, with today's
    option names: --out-dir, --no-progress) is forwarded to train-through-model --model RUN."""
    out_dir = tmp_path / "runs"
    result = _cli(
        "train-policy",
        "--through-model",
        model_run_dir,
        "--env",
        "reacher",
        "--policy-net",
        "cnn",
        "--iterations",
        1,
        "--val-every",
        1,
        "--batch-size",
        2,
        "--horizon",
        1,
        "--eval-episodes",
        0,
        "--device",
        "cpu",
        "--out-dir",
        out_dir,
        "--name",
        "old",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out_dir / f"{COMMAND}-old" / "config.yaml").read_text())
    assert config["options"]["model"] == str(model_run_dir) and config["options"]["iterations"] == 1
    result = _cli(
        "train-policy", "--through-model", model_run_dir, "--out-dir", out_dir, "--no-progress", "--policy-net", "rnn"
    )  # the output also holds the deprecation warning
    assert result.exit_code == 2 and "error: --policy-net must be one of cnn, mlp" in result.output
