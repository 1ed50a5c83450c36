"""visfore train-policy: hindsight experience replay, named hyperparameter entries
(``--hyperparams``), an entry's ``env_kwargs`` and ``--time-budget``.

Tiny real runs on the CPU: TargetHumanoid-v0 (100-step episodes; ``goal_conditioned=true``
for HER) and Pendulum-v1, with tiny nets. Named entries come from a test-only
``hyperparams/sac.yml`` (``zoo._zoo_file`` monkeypatched), never written into the package.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner
from visfore_cli_testutils import one_error_line

from visfore.cli.app import app
from visfore.core.errors import VisforeError
from visfore.rl import train_policy as tp
from visfore.rl import zoo
from visfore.rl.policy_run import load_policy_run

os.environ.setdefault("MUJOCO_GL", "egl")

HUMANOID = "TargetHumanoid-v0"
TINY = ["--hp", "buffer_size=1000", "--hp", "batch_size=32", "--hp", "policy_kwargs=dict(net_arch=[16])"]
HER = [
    "--hp",
    "replay_buffer_class=HerReplayBuffer",
    "--hp",
    "replay_buffer_kwargs=dict(n_sampled_goal=2, goal_selection_strategy='future')",
]
COMMON = ["--seed", "0", "--eval-episodes", "1", "--device", "cpu", "--no-progress"]


def _cli(*args: Any):
    return CliRunner().invoke(app, ["train-policy", *(str(a) for a in args)])


def _her_args(algo: str, timesteps: int = 300) -> list[str]:
    return [
        "--env",
        HUMANOID,
        "--env-kwargs",
        "goal_conditioned=true",
        "--algo",
        algo,
        "--timesteps",
        str(timesteps),
        "--eval-freq",
        "150",
        "--hp",
        "learning_starts=100",
        "--hp",
        "normalize=true",
        *TINY,
        *HER,
        *COMMON,
    ]


#: A test-only hyperparams/sac.yml: the env id's own entry and two named recipes.
SAC_ENTRIES: dict[str, dict[str, Any]] = {
    HUMANOID: {"n_timesteps": 1e6, "policy": "MlpPolicy", "gamma": 0.5, "learning_starts": 64, "batch_size": 16},
    "humanoid-joint": {
        "env_kwargs": {"joint_targets": True, "ctrl_cost_weight": 0.5},
        "n_timesteps": 1e6,
        "policy": "MlpPolicy",
        "gamma": 0.8,
        "learning_starts": 64,
        "buffer_size": 1000,
        "batch_size": 16,
        "policy_kwargs": "dict(net_arch=[8])",
    },
    "humanoid-her": {
        "env_kwargs": {"goal_conditioned": True},
        "policy": "MultiInputPolicy",
        "learning_starts": 100,
        "buffer_size": 1000,
        "batch_size": 16,
        "replay_buffer_class": "HerReplayBuffer",
        "replay_buffer_kwargs": "dict(n_sampled_goal=3, goal_selection_strategy='final')",
        "policy_kwargs": "dict(net_arch=[8])",
    },
}


@pytest.fixture
def sac_entries(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    real = zoo._zoo_file
    monkeypatch.setattr(zoo, "_zoo_file", lambda algo: SAC_ENTRIES if algo == "sac" else real(algo))
    return SAC_ENTRIES


# -- the shipped file -----------------------------------------------------------------------
def test_sac_yml_parses_and_has_the_visfore_header():
    assert zoo.load_zoo_hyperparams("sac") == {}  # no entries yet: SB3 defaults, with a warning
    assert zoo.zoo_key("sac", "PerturbHopper-v0") is None
    text = Path(zoo.__file__).with_name("hyperparams").joinpath("sac.yml").read_text()
    assert "visfore's own file" in text and "env_kwargs" in text and "HerReplayBuffer" in text
    assert "visfore" in zoo.hyperparams_source("sac") and "rl-baselines3-zoo" in zoo.hyperparams_source("td3")
    assert "rl-baselines3-zoo" in zoo.hyperparams_source("ppo", "Hopper-v4")
    assert "visfore's entry TargetHumanoid-v0" in zoo.hyperparams_source("ppo", "TargetHumanoid-v0")


# -- hindsight experience replay -------------------------------------------------------------
@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_her_trains_resumes_and_evaluates(algo: str, tmp_path: Path):
    from stable_baselines3 import HerReplayBuffer

    run_dir = tmp_path / algo
    result = _cli(*_her_args(algo), "--out", run_dir)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["policy"] == "MultiInputPolicy" and cfg["env"]["kwargs"] == {"goal_conditioned": True}
    assert cfg["hyperparameters"]["resolved"]["replay_buffer_class"] == "HerReplayBuffer"
    assert cfg["normalize"]["norm_obs"] is True  # every key of the goal Dict is normalised
    buffer_path = run_dir / "checkpoints" / "replay_buffer.pkl"
    with open(buffer_path, "rb") as f:
        buffer = pickle.load(f)
    assert isinstance(buffer, HerReplayBuffer) and buffer.n_sampled_goal == 2 and buffer.env is None
    assert buffer.pos == 300  # three whole 100-step episodes, each known to HER for relabelling
    assert list(np.unique(buffer.ep_start[:300, 0])) == [0, 100, 200] and set(buffer.ep_length[:300, 0]) == {100}
    with open(run_dir / "checkpoints" / "vecnormalize.pkl", "rb") as f:
        stats = pickle.load(f)
    assert set(stats.obs_rms) == {"observation", "achieved_goal", "desired_goal"}
    assert json.loads((run_dir / "metrics.json").read_text())["num_timesteps"] == 300

    result = _cli("--resume", "--out", run_dir, "--timesteps", 450, "--no-progress")
    assert result.exit_code == 0, result.output
    with open(buffer_path, "rb") as f:
        buffer = pickle.load(f)
    assert isinstance(buffer, HerReplayBuffer) and buffer.pos == 450  # 300 restored + 150 new
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["num_timesteps"] == 450 and m["resumed"] and m["timesteps_this_session"] == 150
    assert list(np.load(run_dir / "logs" / "evaluations.npz")["timesteps"]) == [150, 300, 450]

    run = load_policy_run(run_dir)  # no env needed to load a HER model for evaluation
    assert run.algo == algo and run.model.num_timesteps in (300, 450)
    env = run.make_env()
    obs, _ = env.reset(seed=1)
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    for _ in range(3):
        action = run.predict(obs)
        assert env.action_space.contains(action)
        obs, *_ = env.step(action)
    env.close()


def test_her_kwargs_parse():
    from stable_baselines3 import HerReplayBuffer

    kwargs, _ = zoo.build_algo_kwargs(
        "td3",
        {
            "replay_buffer_class": "HerReplayBuffer",
            "replay_buffer_kwargs": "dict(n_sampled_goal=4, goal_selection_strategy='future')",
        },
        None,
    )
    assert kwargs["replay_buffer_class"] is HerReplayBuffer
    assert kwargs["replay_buffer_kwargs"] == {"n_sampled_goal": 4, "goal_selection_strategy": "future"}
    mapping, _ = zoo.build_algo_kwargs(
        "sac",
        {"replay_buffer_class": "stable_baselines3.HerReplayBuffer", "replay_buffer_kwargs": {"n_sampled_goal": 1}},
        None,
    )
    assert mapping["replay_buffer_class"] is HerReplayBuffer and mapping["replay_buffer_kwargs"] == {
        "n_sampled_goal": 1
    }
    for params, match in (
        (
            {"replay_buffer_class": "ReplayBuffer"},
            "replay_buffer_class 'ReplayBuffer' is not allowed; valid: HerReplayBuffer",
        ),
        ({"replay_buffer_class": "os.system"}, "is not allowed"),
        ({"replay_buffer_class": 3}, "is not allowed"),
        (
            {"replay_buffer_class": "HerReplayBuffer", "replay_buffer_kwargs": "dict(x=os.getcwd())"},
            "replay_buffer_kwargs",
        ),
        (
            {"replay_buffer_class": "HerReplayBuffer", "replay_buffer_kwargs": "dict(foo=1)"},
            "unknown HerReplayBuffer option(s) foo",
        ),
        ({"replay_buffer_class": "HerReplayBuffer", "replay_buffer_kwargs": {"n_sampled_goal": 0}}, "n_sampled_goal"),
        (
            {"replay_buffer_class": "HerReplayBuffer", "replay_buffer_kwargs": {"goal_selection_strategy": "past"}},
            "goal_selection_strategy 'past'",
        ),
        ({"replay_buffer_kwargs": [1, 2]}, "must be a mapping"),
    ):
        with pytest.raises(VisforeError, match=match.replace("(", r"\(").replace(")", r"\)")):
            zoo.build_algo_kwargs("sac", params, None)


@pytest.mark.parametrize(
    "args, match",
    [
        (
            ["--algo", "ppo", "--env-kwargs", "goal_conditioned=true,joint_targets=false", *HER],
            "replay_buffer_class 'HerReplayBuffer': a replay buffer is for off-policy algorithms (td3, sac), not ppo",
        ),
        (
            ["--algo", "sac", *HER],
            "HerReplayBuffer needs a goal-conditioned env (Dict observation with observation, achieved_goal, "
            "desired_goal, and compute_reward); TargetHumanoid-v0 has Box observations and no compute_reward",
        ),
        (["--algo", "td3", "--env", "Pendulum-v1", *HER], "Pendulum-v1 has Box observations"),
        (
            ["--algo", "sac", "--env-kwargs", "goal_conditioned=true", "--hp", "learning_starts=50", *HER],
            "learning_starts (50) must be at least max_episode_steps x n_envs (100 x 1)",
        ),
        (["--algo", "sac", "--hp", "replay_buffer_class=DictReplayBuffer"], "is not allowed; valid: HerReplayBuffer"),
        (["--algo", "sac", "--hp", "env_kwargs={a: 1}"], "--hp env_kwargs: use --env-kwargs"),
        (["--algo", "sac", "--time-budget", "0"], "--time-budget must be a number of minutes > 0, got 0.0"),
        (["--algo", "ppo", "--time-budget", "-1"], "--time-budget must be"),
        # the ppo entry's joint_targets clashes with goal_conditioned: the error says where it came from
        (
            ["--algo", "ppo", "--env-kwargs", "goal_conditioned=true"],
            "(the hyperparameter entry TargetHumanoid-v0 sets joint_targets=True, rewards=",
        ),
        (["--algo", "sac", "--hyperparams", "nope"], "'nope' is not an entry of hyperparams/sac.yml; its keys: (none)"),
    ],
)
def test_bad_presets_are_one_line_and_write_nothing(args: list[str], match: str, tmp_path: Path):
    base = ["--env", HUMANOID, "--timesteps", "300"] if "--env" not in args else ["--timesteps", "300"]
    # learning_starts=100 covers an episode; a later --hp of args wins
    result = _cli(*base, "--hp", "learning_starts=100", *args, *COMMON, "--out-dir", tmp_path / "runs")
    assert match in one_error_line(result)
    assert not (tmp_path / "runs").exists()


# -- named entries and their env_kwargs ----------------------------------------------------
def test_hyperparams_key_selects_the_entry(sac_entries: dict, tmp_path: Path):
    own = zoo.resolve_hyperparameters("sac", HUMANOID, None, {})
    assert own.zoo_key == HUMANOID and own.selected == "env id" and own.resolved["gamma"] == 0.5
    named = zoo.resolve_hyperparameters("sac", HUMANOID, None, {"gamma": 0.7}, "humanoid-joint")
    assert named.zoo_key == "humanoid-joint" and named.selected == "--hyperparams"
    assert named.resolved["gamma"] == 0.7 and "env_kwargs" not in named.resolved
    assert named.env_kwargs == {"joint_targets": True, "ctrl_cost_weight": 0.5}
    with pytest.raises(VisforeError) as excinfo:
        zoo.resolve_hyperparameters("sac", HUMANOID, None, {}, "nope")
    assert str(excinfo.value) == (
        "--hyperparams 'nope' is not an entry of hyperparams/sac.yml; its keys: "
        "TargetHumanoid-v0, humanoid-joint, humanoid-her"
    )
    line = one_error_line(_cli("--env", HUMANOID, "--algo", "sac", "--timesteps", 100, "--hyperparams", "nope",
                               *COMMON, "--out-dir", tmp_path / "runs"))  # fmt: skip
    assert line.endswith("its keys: TargetHumanoid-v0, humanoid-joint, humanoid-her")
    assert not (tmp_path / "runs").exists()


def test_entry_env_kwargs_reach_the_env_under_the_users(sac_entries: dict, tmp_path: Path):
    from stable_baselines3 import SAC

    run_dir = tmp_path / "joint"
    args = ["--env", HUMANOID, "--algo", "sac", "--timesteps", 150, "--eval-freq", 0, "--hyperparams", "humanoid-joint"]
    result = _cli(*args, "--env-kwargs", "ctrl_cost_weight=0.1", *COMMON, "--out", run_dir)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["options"]["hyperparams"] == "humanoid-joint"
    hp = cfg["hyperparameters"]
    assert hp["zoo_key"] == "humanoid-joint" and hp["selected_by"] == "--hyperparams"
    assert hp["env_kwargs"] == {"joint_targets": True, "ctrl_cost_weight": 0.5}
    assert "env_kwargs" not in hp["resolved"] and hp["resolved"]["gamma"] == 0.8
    expected = {"joint_targets": True, "ctrl_cost_weight": 0.1}  # the user's ctrl_cost_weight wins
    assert cfg["env"]["kwargs"] == expected and cfg["env"]["eval_kwargs"] == expected
    model = SAC.load(run_dir / "checkpoints" / "last_model.zip", device="cpu")
    assert model.gamma == 0.8 and model.observation_space.shape == (90,)  # joint targets: 76 + 14
    run = load_policy_run(run_dir)
    assert run.env_kwargs == expected
    env = run.make_env()
    assert env.unwrapped.joint_targets is True and env.unwrapped.ctrl_cost_weight == 0.1
    env.close()
    # --resume rebuilds the same env from config.yaml (the entry is not read again)
    result = _cli("--resume", "--out", run_dir, "--timesteps", 200, "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "metrics.json").read_text())["num_timesteps"] == 200


def test_entry_holds_a_whole_her_recipe(sac_entries: dict, tmp_path: Path):
    from stable_baselines3 import HerReplayBuffer

    run_dir = tmp_path / "her"
    result = _cli("--env", HUMANOID, "--algo", "sac", "--timesteps", 200, "--eval-freq", 0,
                  "--hyperparams", "humanoid-her", *COMMON, "--out", run_dir)  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["env"]["kwargs"] == {"goal_conditioned": True} and cfg["policy"] == "MultiInputPolicy"
    with open(run_dir / "checkpoints" / "replay_buffer.pkl", "rb") as f:
        buffer = pickle.load(f)
    assert isinstance(buffer, HerReplayBuffer) and buffer.n_sampled_goal == 3 and buffer.pos == 200


# -- time budget --------------------------------------------------------------------------
def test_time_budget_stops_early_and_finishes_the_run(tmp_path: Path):
    from stable_baselines3 import PPO

    run_dir = tmp_path / "budget"
    total = 10_000_000
    args = ["--env", "Pendulum-v1", "--algo", "ppo", "--timesteps", total, "--eval-freq", "0", "--eval-episodes", 1]
    tiny = [
        "--hp",
        "n_steps=64",
        "--hp",
        "batch_size=32",
        "--hp",
        "n_epochs=1",
        "--hp",
        "policy_kwargs=dict(net_arch=[8])",
    ]
    result = _cli(*args, *tiny, "--time-budget", 0.02, "--device", "cpu", "--out", run_dir)
    assert result.exit_code == 0, result.output
    assert "stopped by the time budget of 0.02 min" in " ".join(result.output.split())
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["stopped_by"] == "time budget" and m["time_budget_minutes"] == 0.02
    assert 64 <= m["num_timesteps"] < total and m["total_timesteps"] == total
    assert 1.2 <= m["train_seconds"] < 60
    assert PPO.load(run_dir / "checkpoints" / "last_model.zip", device="cpu").num_timesteps == m["num_timesteps"]
    with np.load(run_dir / "logs" / "evaluations.npz") as evals:  # the final evaluation, as for a finished run
        assert list(evals["timesteps"]) == [m["num_timesteps"]]
    assert (run_dir / "checkpoints" / "best_model.zip").is_file()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["options"]["time_budget"] == 0.02 and cfg["total_timesteps"] == total

    # --resume: a budget given again limits the new session
    result = _cli("--resume", "--out", run_dir, "--time-budget", 0.01, "--no-progress")
    assert result.exit_code == 0, result.output
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["resumed"] and again["stopped_by"] == "time budget" and again["time_budget_minutes"] == 0.01
    assert (
        again["timesteps_this_session"] > 0
        and again["num_timesteps"] == m["num_timesteps"] + again["timesteps_this_session"]
    )
    assert 0.6 <= again["train_seconds"] < 60


def test_time_budget_callback():
    cb = tp.TimeBudgetCallback(None)
    assert cb._on_step() and not cb.reached
    cb = tp.TimeBudgetCallback(1.0)
    cb._on_training_start()
    assert cb._on_step() and not cb.reached
    cb.t0 -= 61.0
    assert not cb._on_step() and cb.reached
