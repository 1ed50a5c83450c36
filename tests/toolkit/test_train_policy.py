"""visfore train-policy (visfore.rl.train_policy) and loading its runs (visfore.rl.policy_run).

Tiny real runs on PerturbHopper-v0 (MuJoCo, state observations) on the CPU: PPO and TD3
with the zoo's Hopper hyperparameters shrunk by ``--hp`` so each run takes a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner
from visfore_cli_testutils import one_error_line as _one_error_line

from visfore.cli.app import app
from visfore.core.errors import VisforeError
from visfore.rl import train_policy as tp
from visfore.rl import zoo
from visfore.rl.policy_run import load_policy_run

os.environ.setdefault("MUJOCO_GL", "egl")

ENV = "PerturbHopper-v0"
PPO_ARGS = [
    "--env",
    ENV,
    "--algo",
    "ppo",
    "--timesteps",
    "256",
    "--seed",
    "3",
    "--hp",
    "n_steps=64",
    "--hp",
    "batch_size=32",
    "--hp",
    "n_epochs=2",
    "--hp",
    "policy_kwargs=dict(net_arch=[32, 32])",
    "--eval-freq",
    "128",
    "--eval-episodes",
    "2",
    "--device",
    "cpu",
    "--no-progress",
]
TD3_ARGS = [
    "--env",
    ENV,
    "--algo",
    "td3",
    "--timesteps",
    "200",
    "--seed",
    "1",
    "--hp",
    "learning_starts=64",
    "--hp",
    "buffer_size=2000",
    "--hp",
    "batch_size=32",
    "--hp",
    "policy_kwargs=dict(net_arch=[32, 32])",
    "--randomize",
    "0.9-1.1",
    "--eval-freq",
    "100",
    "--eval-episodes",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


SAC_ARGS = [
    "--env",
    ENV,
    "--algo",
    "sac",
    "--timesteps",
    "200",
    "--seed",
    "2",
    "--hp",
    "learning_starts=64",
    "--hp",
    "buffer_size=2000",
    "--hp",
    "batch_size=32",
    "--hp",
    "policy_kwargs=dict(net_arch=[16, 16])",
    "--eval-freq",
    "100",
    "--eval-episodes",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


def _cli(*args: str):
    return CliRunner().invoke(app, ["train-policy", *args])


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ppo")
    result = _cli(*PPO_ARGS, "--out-dir", str(out), "--name", "ppo")
    assert result.exit_code == 0, result.output
    return out / "train-policy-ppo"


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("td3")
    result = _cli(*TD3_ARGS, "--out-dir", str(out), "--name", "td3")
    assert result.exit_code == 0, result.output
    return out / "train-policy-td3"


# -- parsing and hyperparameters ----------------------------------------------------------
def test_parse_randomize():
    assert tp.parse_randomize(None) is None
    assert tp.parse_randomize("Extreme") == "extreme"
    assert tp.parse_randomize("0.8-1.2") == (0.8, 1.2)
    assert tp.parse_randomize(" 0.5 : 2 ") == (0.5, 2.0)
    for bad in ("1.2-0.8", "0-1", "abc", "0.8", "-0.8-1.2", "0.8-1.2-1.3"):
        with pytest.raises(VisforeError, match="--randomize"):
            tp.parse_randomize(bad)


def test_parse_hp_overrides():
    hp = zoo.parse_hp_overrides(
        [
            "learning_rate=1e-3",
            "batch_size=64",
            "train_freq=[1, episode]",
            "use_sde=true",
            "clip_range=lin_0.2",
            "policy_kwargs=dict(net_arch=[8])",
            "batch_size=32",
        ]
    )
    assert hp == {
        "learning_rate": 1e-3,
        "batch_size": 32,
        "train_freq": [1, "episode"],
        "use_sde": True,
        "clip_range": "lin_0.2",
        "policy_kwargs": "dict(net_arch=[8])",
    }
    assert isinstance(hp["learning_rate"], float)
    for bad, match in (
        ("lr", "key=value"),
        ("1x=2", "key=value"),
        ("n_timesteps=5", "--timesteps"),
        ("policy=CnnPolicy", "--obs-mode"),
        ("n_envs=2", "--n-envs"),
        ("seed=1", "visfore sets"),
    ):
        with pytest.raises(VisforeError, match=match):
            zoo.parse_hp_overrides([bad])


def test_parse_policy_kwargs_is_safe_and_reads_zoo_strings():
    text = (
        "dict(log_std_init=-2,\n ortho_init=False,\n activation_fn=nn.ReLU,\n"
        " net_arch=dict(pi=[256, 256], vf=[256, 256])\n )"
    )
    assert zoo.parse_policy_kwargs(text) == {
        "log_std_init": -2,
        "ortho_init": False,
        "activation_fn": torch.nn.ReLU,
        "net_arch": {"pi": [256, 256], "vf": [256, 256]},
    }
    assert zoo.parse_policy_kwargs("dict(net_arch=[400, 300])") == {"net_arch": [400, 300]}
    assert zoo.parse_policy_kwargs({"activation_fn": "th.nn.Tanh"})["activation_fn"] is torch.nn.Tanh
    for bad in ("__import__('os').system('true')", "dict(a=os.getcwd())", "dict(x=nn.Module)", "[1, 2]", "dict(a=1"):
        with pytest.raises(VisforeError, match="policy_kwargs"):
            zoo.parse_policy_kwargs(bad)


def test_schedules_and_normalize():
    lin = zoo.make_schedule("learning_rate", "lin_3e-4")
    assert lin(1.0) == pytest.approx(3e-4) and lin(0.5) == pytest.approx(1.5e-4) and lin(0.0) == 0.0
    assert zoo.make_schedule("learning_rate", 7e-4) == 7e-4
    with pytest.raises(VisforeError):
        zoo.make_schedule("learning_rate", "cos_1e-3")
    assert zoo.parse_normalize(True, 0.98) == {"norm_obs": True, "norm_reward": True, "gamma": 0.98}
    assert zoo.parse_normalize("dict(norm_obs=False, norm_reward=True)")["norm_obs"] is False
    assert zoo.parse_normalize(False) == {"norm_obs": False, "norm_reward": False}


def test_zoo_lookup_and_values():
    assert zoo.robot_name("PerturbHopper-v0") == "Hopper" == zoo.robot_name("Hopper-v5")
    assert zoo.robot_name("Walker2DBulletEnv-v0") == "Walker2d"
    assert zoo.zoo_key("td3", "PerturbHopper-v0") == "Hopper-v4"
    assert zoo.zoo_key("ppo", "PerturbWalker2d-v0", "pybullet") == "Walker2DBulletEnv-v0"
    assert zoo.zoo_key("ppo", "PerturbHalfCheetah-v0", "mujoco") == "HalfCheetah-v4"
    assert zoo.zoo_key("td3", "PerturbAnt-v0", "pybullet") == "AntBulletEnv-v0"
    assert zoo.zoo_key("td3", "Pendulum-v1") is None
    td3 = zoo.load_zoo_hyperparams("td3")
    assert td3["Hopper-v4"] == {
        "n_timesteps": 1e6,
        "policy": "MlpPolicy",
        "learning_starts": 10000,
        "noise_type": "normal",
        "noise_std": 0.1,
        "train_freq": 1,
        "gradient_steps": 1,
        "learning_rate": 1e-3,
        "batch_size": 256,
        "policy_kwargs": "dict(net_arch=[400, 300])",
    }
    assert td3["HopperBulletEnv-v0"]["learning_rate"] == 7e-4 and td3["AntBulletEnv-v0"]["gamma"] == 0.98
    ppo = zoo.load_zoo_hyperparams("ppo")
    assert ppo["Hopper-v4"]["learning_rate"] == 9.80828e-05 and ppo["Hopper-v4"]["n_steps"] == 512
    assert ppo["Walker2DBulletEnv-v0"]["clip_range"] == "lin_0.4" and ppo["Walker2DBulletEnv-v0"]["n_envs"] == 16
    assert ppo["Ant-v4"] == {"normalize": True, "n_timesteps": 1e6, "policy": "MlpPolicy"}
    for algo, extra in (
        ("td3", set()),
        ("ppo", {"ReacherPlane-v0", "TargetHumanoid-v0", "TargetHumanoid-v0-reacher-zoo"}),
    ):
        assert {k for k in zoo.load_zoo_hyperparams(algo)} == {
            *zoo.ZOO_MUJOCO_KEYS.values(),
            *zoo.ZOO_PYBULLET_KEYS.values(),
            *extra,
        }
    assert zoo.zoo_key("ppo", "ReacherPlane-v0") == "ReacherPlane-v0" and zoo.zoo_key("td3", "ReacherPlane-v0") is None
    assert ppo["ReacherPlane-v0"]["gamma"] == 0.9 and ppo["ReacherPlane-v0"]["learning_rate"] == 0.000104019
    hyper = zoo.resolve_hyperparameters("ppo", ENV, None, {"n_steps": 64})
    assert hyper.zoo_key == "Hopper-v4" and hyper.resolved["n_steps"] == 64
    assert "n_timesteps" not in hyper.resolved and "policy" not in hyper.resolved


# -- runs ---------------------------------------------------------------------------------
def test_ppo_run_directory(ppo_run: Path):
    ckpt = ppo_run / "checkpoints"
    for name in ("best_model.zip", "last_model.zip", "vecnormalize.pkl", "best_vecnormalize.pkl"):
        assert (ckpt / name).is_file(), name
    assert not (ckpt / "replay_buffer.pkl").exists()
    assert (ppo_run / "logs" / "evaluations.npz").is_file()
    assert list((ppo_run / "logs").glob("tb_1/events.out.tfevents.*"))
    assert not list(ckpt.glob(".*tmp*"))
    cfg = yaml.safe_load((ppo_run / "config.yaml").read_text())
    assert cfg["command"] == "train-policy" and cfg["algo"] == "ppo" and cfg["policy"] == "MlpPolicy"
    assert cfg["env"]["id"] == ENV and cfg["env"]["kwargs"] == {} and cfg["env"]["max_episode_steps"] == 1000
    hp = cfg["hyperparameters"]
    assert hp["zoo_key"] == "Hopper-v4" and "rl-baselines3-zoo" in hp["source"]
    assert hp["resolved"]["n_steps"] == 64 and hp["resolved"]["gamma"] == 0.999
    assert cfg["normalize"] == {"norm_obs": True, "norm_reward": True, "gamma": 0.999}
    assert cfg["total_timesteps"] == 256 and cfg["options"]["seed"] == 3
    assert cfg["runtime"]["torch_threads"] == 1 and cfg["runtime"]["device"] == "cpu"
    assert cfg["runtime"]["versions"]["stable-baselines3"]
    m = json.loads((ppo_run / "metrics.json").read_text())
    assert m["num_timesteps"] == 256 and m["episodes"] == 2 and len(m["returns"]) == 2
    assert set(m["return"]) == {"mean", "std", "min", "max", "median"} and set(m["length"]) == set(m["return"])
    assert m["return"]["mean"] == pytest.approx(np.mean(m["returns"]))
    assert m["best_eval_mean_return"] is not None and m["steps_per_second"] > 0
    evals = np.load(ppo_run / "logs" / "evaluations.npz")
    assert list(evals["timesteps"]) == [128, 256] and evals["results"].shape == (2, 2)
    # a policy run writes no images: no empty images/ either
    assert sorted(p.name for p in ppo_run.iterdir()) == ["checkpoints", "config.yaml", "logs", "metrics.json"]


def test_td3_run_directory(td3_run: Path):
    ckpt = td3_run / "checkpoints"
    for name in ("best_model.zip", "last_model.zip", "vecnormalize.pkl", "best_vecnormalize.pkl", "replay_buffer.pkl"):
        assert (ckpt / name).is_file(), name
    cfg = yaml.safe_load((td3_run / "config.yaml").read_text())
    assert cfg["env"]["kwargs"] == {"randomize": [0.9, 1.1]} and cfg["env"]["eval_kwargs"] == {}
    assert cfg["hyperparameters"]["resolved"]["noise_type"] == "normal"
    assert cfg["hyperparameters"]["resolved"]["learning_rate"] == 1e-3
    assert cfg["normalize"] == {"norm_obs": False, "norm_reward": False}
    with open(ckpt / "replay_buffer.pkl", "rb") as f:
        buffer = pickle.load(f)
    assert buffer.buffer_size == 2000 and buffer.pos == 200
    m = json.loads((td3_run / "metrics.json").read_text())
    assert m["num_timesteps"] == 200 and m["algo"] == "td3"


def test_evaluations_npz_ends_with_the_final_evaluation(tmp_path: Path):
    """``logs/evaluations.npz`` exists at the end of every finished run and ends at its
    final timestep: with ``--eval-freq`` above ``--timesteps`` it holds only the final
    evaluation (the one in metrics.json), ``--resume`` appends to it, and a last periodic
    evaluation before the final timestep is followed by the final one."""
    base = dict(
        env=ENV,
        algo="ppo",
        seed=0,
        eval_episodes=2,
        hp=["n_steps=64", "batch_size=32", "n_epochs=1", "policy_kwargs=dict(net_arch=[16])"],
        runs_root=str(tmp_path),
        device="cpu",
        progress=False,
    )
    metrics = tp.train_policy(tp.PolicyTrainConfig(timesteps=128, eval_freq=1000, name="once", **base))
    run_dir = tmp_path / "train-policy-once"
    with np.load(run_dir / "logs" / "evaluations.npz") as evals:
        assert list(evals["timesteps"]) == [128]
        assert list(evals["results"][-1]) == metrics["returns"] and list(evals["ep_lengths"][-1]) == metrics["lengths"]
    assert (run_dir / "checkpoints" / "best_model.zip").is_file()
    assert metrics["best_eval_mean_return"] == pytest.approx(np.mean(metrics["returns"]))

    resumed = tp.train_policy(
        tp.PolicyTrainConfig(resume=True, out=str(run_dir), timesteps=192, device="cpu", progress=False)
    )
    with np.load(run_dir / "logs" / "evaluations.npz") as evals:
        assert list(evals["timesteps"]) == [128, 192] and list(evals["results"][-1]) == resumed["returns"]

    tp.train_policy(tp.PolicyTrainConfig(timesteps=128, eval_freq=100, name="odd", **base))
    with np.load(tmp_path / "train-policy-odd" / "logs" / "evaluations.npz") as evals:
        assert list(evals["timesteps"]) == [100, 128]


def test_print_metrics_single_episode_std_is_na():
    """One evaluation episode: its std is undefined, the table says n/a (not 0.0)."""
    from rich.console import Console

    one = {"mean": 12.5, "std": 0.0, "min": 12.5, "median": 12.5, "max": 12.5}
    metrics = {
        "algo": "td3",
        "env_id": ENV,
        "episodes": 1,
        "return": one,
        "length": {**one, "mean": 40.0, "min": 40.0, "median": 40.0, "max": 40.0},
        "best_eval_mean_return": 12.5,
        "steps_per_second": None,
        "num_timesteps": 200,
        "total_timesteps": 200,
        "timesteps_this_session": 200,
        "train_seconds": 1.0,
        "run_dir": "run",
    }
    console = Console(record=True, width=120, file=io.StringIO())
    tp.print_metrics(metrics, console)
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
    stds = {row[0]: row[2] for row in rows if row and row[0] in ("return", "length")}  # columns: "", mean, std, ...
    assert stds == {"return": "n/a", "length": "n/a"}, rows
    console = Console(record=True, width=120, file=io.StringIO())
    tp.print_metrics({**metrics, "episodes": 2}, console)
    assert "n/a" not in console.export_text()


@pytest.mark.parametrize("which", ["ppo", "td3"])
def test_load_policy_run_predicts(which: str, ppo_run: Path, td3_run: Path):
    run_dir = ppo_run if which == "ppo" else td3_run
    run = load_policy_run(run_dir)
    assert run.checkpoint == "best" and run.model_path.name == "best_model.zip"
    assert run.algo == which and run.env_id == ENV and "randomize" not in run.env_kwargs
    assert torch.get_num_threads() == 1 and run.model.device.type == "cpu"
    env = run.make_env(perturbation={"thigh.length": 1.2})
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        action = run.predict(obs)
        assert action.dtype == np.float32 and action.shape == env.action_space.shape
        assert env.action_space.contains(action)
        assert np.array_equal(action, run.predict(obs))
        obs, *_ = env.step(action)
    env.close()
    assert env.spec.max_episode_steps == 1000
    last = load_policy_run(run_dir, "last")
    assert last.checkpoint == "last" and last.model_path.name == "last_model.zip"
    with pytest.raises(VisforeError, match="checkpoint"):
        load_policy_run(run_dir, "middle")


def test_saved_vecnormalize_is_applied(ppo_run: Path):
    from stable_baselines3.common.vec_env import VecNormalize

    run = load_policy_run(ppo_run, "last")
    with open(ppo_run / "checkpoints" / "vecnormalize.pkl", "rb") as f:
        saved = pickle.load(f)
    assert isinstance(run.vec_normalize, VecNormalize) and run.vec_normalize.norm_obs
    np.testing.assert_array_equal(run.vec_normalize.obs_rms.mean, saved.obs_rms.mean)
    np.testing.assert_array_equal(run.vec_normalize.obs_rms.var, saved.obs_rms.var)
    assert saved.obs_rms.count > 256 and np.any(saved.obs_rms.mean != 0)
    env = run.make_env()
    obs, _ = env.reset(seed=5)
    rms, clip = saved.obs_rms, saved.clip_obs
    manual = np.clip((obs - rms.mean) / np.sqrt(rms.var + saved.epsilon), -clip, clip).astype(np.float32)
    expected, _ = run.model.predict(manual, deterministic=True)
    np.testing.assert_allclose(run.predict(obs), expected, rtol=0, atol=1e-6)
    assert not np.allclose(run.predict(obs), run.model.predict(obs, deterministic=True)[0])


def test_policy_run_errors(tmp_path: Path, ppo_run: Path):
    with pytest.raises(VisforeError, match="not a directory"):
        load_policy_run(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("command: train-model\noptions: {}\n")
    with pytest.raises(VisforeError, match="not a train-policy run"):
        load_policy_run(tmp_path / "other")
    with pytest.raises(VisforeError, match="not a train-policy run"):
        load_policy_run(tmp_path)


def test_resume_continues_to_larger_total(ppo_run: Path, tmp_path: Path):
    run_dir = tmp_path / "train-policy-ppo"
    shutil.copytree(ppo_run, run_dir)
    with open(run_dir / "checkpoints" / "vecnormalize.pkl", "rb") as f:
        count_before = pickle.load(f).obs_rms.count
    before = _tree_digest(run_dir)
    result = _cli("--resume", str(run_dir), "--timesteps", "384", "--seed", "9", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "ignored --seed 9 (the run uses 3)" in result.output
    after = _tree_digest(run_dir)
    for name in (
        "checkpoints/last_model.zip",
        "checkpoints/vecnormalize.pkl",
        "metrics.json",
        "config.yaml",
        "logs/evaluations.npz",
    ):
        assert after[name] != before[name], name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["num_timesteps"] == 384 and m["resumed"] and m["timesteps_this_session"] == 128
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["total_timesteps"] == 384 and cfg["options"]["seed"] == 3
    with open(run_dir / "checkpoints" / "vecnormalize.pkl", "rb") as f:
        assert pickle.load(f).obs_rms.count > count_before + 100  # statistics continued, not reset
    assert list(np.load(run_dir / "logs" / "evaluations.npz")["timesteps"]) == [128, 256, 384]
    assert len(list((run_dir / "logs").glob("tb_*"))) == 1  # the same TensorBoard run continues
    from stable_baselines3 import PPO

    assert PPO.load(run_dir / "checkpoints" / "last_model.zip", device="cpu").num_timesteps == 384
    # already at its total: evaluates only
    again = _cli("--resume", str(run_dir), "--no-progress")
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "metrics.json").read_text())["num_timesteps"] == 384


def test_resume_with_name_finds_the_run_under_runs_root(ppo_run: Path, tmp_path: Path):
    """``--resume --name NAME`` (as train-model and train-through-model): the run
    ``RUNS_ROOT/train-policy-NAME``, not an error asking for --out."""
    runs_root = tmp_path / "runs"
    shutil.copytree(ppo_run, runs_root / "train-policy-again")
    result = _cli("--name", "again", "--resume", "--out-dir", str(runs_root), "--timesteps", "384", "--no-progress")
    assert result.exit_code == 0, result.output
    m = json.loads((runs_root / "train-policy-again" / "metrics.json").read_text())
    assert m["num_timesteps"] == 384 and m["resumed"]
    assert "needs the run directory" in _one_error_line(_cli("--resume", "--no-progress"))


def test_td3_resume_restores_replay_buffer(td3_run: Path, tmp_path: Path):
    run_dir = tmp_path / "train-policy-td3"
    shutil.copytree(td3_run, run_dir)
    result = _cli("--resume", str(run_dir), "--timesteps", "260", "--no-progress")
    assert result.exit_code == 0, result.output
    with open(run_dir / "checkpoints" / "replay_buffer.pkl", "rb") as f:
        assert pickle.load(f).pos == 260  # 200 restored + 60 new transitions


def test_interrupt_saves_last_model_and_resume_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    class Interrupted(tp.StopFlag):
        def __init__(self) -> None:
            self.requested = True  # as if Ctrl-C came during the first step

    config = tp.PolicyTrainConfig(
        env=ENV,
        algo="ppo",
        timesteps=128,
        seed=0,
        eval_freq=0,
        eval_episodes=1,
        hp=["n_steps=64", "batch_size=32", "n_epochs=1"],
        name="int",
        runs_root=str(tmp_path),
        device="cpu",
        progress=False,
    )
    with monkeypatch.context() as m:
        m.setattr(tp, "StopFlag", Interrupted)
        with pytest.raises(KeyboardInterrupt) as excinfo:
            tp.train_policy(config)
    run_dir = tmp_path / "train-policy-int"
    # The note for the CLI's one "interrupted" line: where it stopped and how to continue.
    assert re.fullmatch(
        rf"at \d+/128 timesteps; saved {re.escape(str(run_dir))}/checkpoints/last_model.zip; "
        rf"continue with --resume --out {re.escape(str(run_dir))}",
        str(excinfo.value),
    ), str(excinfo.value)
    assert (run_dir / "checkpoints" / "last_model.zip").is_file()
    assert (run_dir / "checkpoints" / "vecnormalize.pkl").is_file()
    assert not (run_dir / "metrics.json").exists()
    from stable_baselines3 import PPO

    stopped_at = PPO.load(run_dir / "checkpoints" / "last_model.zip", device="cpu").num_timesteps
    assert 1 <= stopped_at < 64  # stopped during the first rollout
    metrics = tp.train_policy(tp.PolicyTrainConfig(resume=True, out=str(run_dir), device="cpu", progress=False))
    assert metrics["num_timesteps"] >= 128 and metrics["resumed"]
    assert metrics["timesteps_this_session"] == metrics["num_timesteps"] - stopped_at
    # --eval-freq 0: the final evaluation alone is in evaluations.npz (none after the interruption)
    with np.load(run_dir / "logs" / "evaluations.npz") as evals:
        assert list(evals["timesteps"]) == [metrics["num_timesteps"]]


def test_seeded_runs_are_identical(tmp_path: Path):
    from stable_baselines3 import PPO

    params = []
    for name in ("a", "b"):
        tp.train_policy(
            tp.PolicyTrainConfig(
                env=ENV,
                algo="ppo",
                timesteps=128,
                seed=7,
                eval_freq=0,
                eval_episodes=1,
                name=name,
                hp=["n_steps=64", "batch_size=32", "n_epochs=2"],
                runs_root=str(tmp_path),
                device="cpu",
                progress=False,
            )
        )
        model = PPO.load(tmp_path / f"train-policy-{name}" / "checkpoints" / "last_model.zip", device="cpu")
        params.append(model.policy.state_dict())
    assert params[0].keys() == params[1].keys()
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key


def test_sac_trains_saves_resumes_and_evaluates(tmp_path: Path):
    """--algo sac: an off-policy run like td3 (replay buffer saved and restored on
    --resume), loadable by load_policy_run and by visfore evaluate."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.buffers import ReplayBuffer

    run_dir = tmp_path / "sac"
    result = _cli(*SAC_ARGS, "--out", str(run_dir))
    assert result.exit_code == 0, result.output
    ckpt = run_dir / "checkpoints"
    for name in ("best_model.zip", "last_model.zip", "vecnormalize.pkl", "best_vecnormalize.pkl", "replay_buffer.pkl"):
        assert (ckpt / name).is_file(), name
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["algo"] == "sac" and cfg["policy"] == "MlpPolicy"
    assert cfg["checkpoints"]["replay_buffer"] == "checkpoints/replay_buffer.pkl"
    hp = cfg["hyperparameters"]
    assert hp["zoo_key"] is None and hp["source"] == "stable-baselines3 defaults" and hp["resolved"]["batch_size"] == 32
    with open(ckpt / "replay_buffer.pkl", "rb") as f:
        buffer = pickle.load(f)
    assert type(buffer) is ReplayBuffer and buffer.buffer_size == 2000 and buffer.pos == 200
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["algo"] == "sac" and m["num_timesteps"] == 200 and m["stopped_by"] == "timesteps"

    result = _cli("--resume", "--out", str(run_dir), "--timesteps", "260", "--no-progress")
    assert result.exit_code == 0, result.output
    with open(ckpt / "replay_buffer.pkl", "rb") as f:
        assert pickle.load(f).pos == 260  # 200 restored + 60 new transitions
    model = SAC.load(ckpt / "last_model.zip", device="cpu")
    assert model.num_timesteps == 260 and model.batch_size == 32
    assert list(np.load(run_dir / "logs" / "evaluations.npz")["timesteps"]) == [100, 200, 260]

    run = load_policy_run(run_dir, "last")
    assert run.algo == "sac" and isinstance(run.model, SAC)
    env = run.make_env(perturbation={"thigh.length": 1.2})
    obs, _ = env.reset(seed=0)
    action = run.predict(obs)
    assert env.action_space.contains(action) and np.array_equal(action, run.predict(obs))
    env.close()
    report = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(run_dir),
            "--Lthigh",
            "1.2",
            "--episodes",
            "1",
            "--seeds",
            "0",
            "--out",
            str(report),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((report / "summary.json").read_text())
    assert summary["meta"]["algo"] == "sac" and len(summary["cells"]) == 2


def test_sac_accepts_action_noise():
    """SAC takes noise_type/noise_std as td3 does (off-policy); ppo does not."""
    from gymnasium import spaces
    from stable_baselines3.common.noise import NormalActionNoise

    box = spaces.Box(-1.0, 1.0, (3,))
    kwargs, _ = zoo.build_algo_kwargs("sac", {"noise_type": "normal", "noise_std": 0.2, "ent_coef": "auto"}, box)
    assert isinstance(kwargs["action_noise"], NormalActionNoise) and kwargs["ent_coef"] == "auto"
    np.testing.assert_allclose(kwargs["action_noise"]._sigma, 0.2)
    with pytest.raises(VisforeError, match="off-policy"):
        zoo.build_algo_kwargs("ppo", {"noise_type": "normal"}, box)


# -- bad input ----------------------------------------------------------------------------
def test_existing_run_dir_is_left_untouched(ppo_run: Path):
    before = _tree_digest(ppo_run)
    result = _cli(*PPO_ARGS, "--out-dir", str(ppo_run.parent), "--name", "ppo")
    line = _one_error_line(result)
    assert "already exists" in line and "--resume" in line
    assert _tree_digest(ppo_run) == before


@pytest.mark.parametrize(
    "args, match",
    [
        (["--algo", "a2c"], "--algo must be one of td3, ppo, sac, got 'a2c'"),
        (["--timesteps", "0"], "--timesteps must be"),
        (["--randomize", "1.2-0.8"], "--randomize"),
        (["--randomize", "wild"], "--randomize"),
        (["--hp", "learning_rate"], "key=value"),
        (["--hp", "not_a_param=1"], "unknown ppo hyperparameter"),
        (["--hp", "policy_kwargs=dict(a=os.system)"], "policy_kwargs"),
        (["--hp", "noise_type=normal"], "off-policy"),
        (["--obs-mode", "depth"], "--obs-mode must be one of"),
        (["--obs-mode", "pixels", "--size", "32"], "--size 32 is too small for --obs-mode pixels"),
        (["--obs-mode", "state+pixels", "--size", "16"], "at least 36x36 pixels"),
        (["--env", "NoSuchEnv-v0"], "PerturbHopper-v0"),
        (["--env", "Pendulum-v1", "--randomize", "default"], "need a visfore env"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args: list[str], match: str, tmp_path: Path):
    base = {"--env": ENV, "--algo": "ppo", "--timesteps": "64"}
    for flag, value in zip(args[::2], args[1::2]):
        if flag in base:
            base[flag] = value
    extra = [a for pair in zip(args[::2], args[1::2]) if pair[0] not in base for a in pair]
    result = _cli(*[a for kv in base.items() for a in kv], *extra, "--out-dir", str(tmp_path / "runs"), "--no-progress")
    assert match in _one_error_line(result)
    assert not (tmp_path / "runs").exists()


def test_resume_of_non_run_is_an_error(tmp_path: Path):
    assert "not a directory" in _one_error_line(_cli("--resume", str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    assert "not a train-policy run" in _one_error_line(_cli("--resume", str(tmp_path / "empty")))
    assert "--timesteps is required" in _one_error_line(_cli("--env", ENV, "--algo", "td3"))
