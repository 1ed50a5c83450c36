"""``visfore evaluate`` without perturbations (the nominal-only mode) and the success
metrics of goal-reaching envs (``info["is_success"]`` / ``info["distance"]``).

One tiny PPO run on ``TargetHumanoid-v0`` (64 timesteps, a few seconds) is trained per
module through the CLI; the locomotion and plain-Gymnasium cases use small stand-in runs.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

from visfore.core.errors import VisforeError
from visfore.reports import robustness_report as rr
from visfore.rl import evaluate as ev

os.environ.setdefault("MUJOCO_GL", "egl")
runner = CliRunner()

GOAL_SUMMARY_FIELDS = rr.SUCCESS_FIELDS + rr.DISTANCE_FIELDS
#: Text of the goal columns in the console table, report.md and report.html.
GOAL_WORDS = ("95% CI", "final dist", "Wilson", "nominal success", "| success |", "<th>success</th>", " success ")


@pytest.fixture(scope="module")
def app():
    from visfore.cli.app import app

    return app


@pytest.fixture(scope="module")
def humanoid_run(app, tmp_path_factory) -> Path:
    """A train-policy run on TargetHumanoid-v0: PPO, 1 env, 64 timesteps (the entry's
    VecNormalize, joint targets and rewards kept)."""
    out = tmp_path_factory.mktemp("policy-runs") / "target-humanoid"
    result = runner.invoke(app, [
        "train-policy", "--env", "TargetHumanoid-v0", "--algo", "ppo", "--timesteps", "64",
        "--seed", "0", "--n-envs", "1", "--hp", "n_steps=64", "--hp", "batch_size=64",
        "--hp", "n_epochs=1", "--hp", "policy_kwargs=dict(net_arch=[16, 16])",
        "--eval-freq", "0", "--eval-episodes", "1", "--device", "cpu", "--no-progress",
        "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


# -- the Wilson interval -----------------------------------------------------------------
def test_wilson_interval_known_values():
    # reference values: statsmodels proportion_confint(k, n, method="wilson")
    assert rr.wilson_interval(0, 10) == (0.0, pytest.approx(0.2775327998628892, abs=1e-12))
    low, high = rr.wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2365930905125640, abs=1e-12), pytest.approx(0.7634069094874360, abs=1e-12))
    assert rr.wilson_interval(10, 10) == (pytest.approx(0.7224672001371108, abs=1e-12), 1.0)
    # Newcombe (1998), Statistics in Medicine 17, 857-872, Table I, example (a): 81 of 263
    low, high = rr.wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert rr.wilson_interval(0, 1)[0] == 0.0 and rr.wilson_interval(1, 1)[1] == 1.0
    for bad in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            rr.wilson_interval(*bad)


def test_summarize_success_and_distance_statistics():
    cells = [ev.Cell(0, "nominal").row()]
    success = [True, False, True, True]
    distance = [0.05, 0.4, 0.08, 0.02]
    episodes = [
        {**cells[0], "seed": 0, "episode": k, "return": -float(k), "length": 100, "terminated": False,
         "success": s, "final_distance": d}
        for k, (s, d) in enumerate(zip(success, distance))
    ]  # fmt: skip
    (row,) = rr.summarize(cells, episodes)
    assert row["successes"] == 3 and row["success_rate"] == 0.75
    assert (row["success_ci_low"], row["success_ci_high"]) == rr.wilson_interval(3, 4)
    assert row["final_distance_mean"] == pytest.approx(np.mean(distance))
    assert row["final_distance_std"] == pytest.approx(np.std(distance))
    assert row["final_distance_median"] == pytest.approx(np.median(distance))
    assert rr.summary_fields([row]) == rr.SUMMARY_FIELDS + GOAL_SUMMARY_FIELDS
    # only a distance: no success columns
    (row,) = rr.summarize(cells, [{k: v for k, v in e.items() if k != "success"} for e in episodes])
    assert not set(rr.SUCCESS_FIELDS) & set(row) and set(rr.DISTANCE_FIELDS) <= set(row)


# -- nominal-only on TargetHumanoid-v0 ------------------------------------------------------
def _console_text(result) -> str:
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    ev.print_summary(result, console)
    return console.export_text()


def test_nominal_only_target_humanoid_matches_manual_rollout(app, humanoid_run, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(humanoid_run), "--episodes", "3", "--seeds", "7",
                                 "--out", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for word in ("nominal", "success", "95% CI", "final dist. (m)", "dist. median"):
        assert word in result.stdout, result.stdout
    assert "most damaging" not in result.stdout
    for name in ("episodes.csv", "episodes.json", "summary.csv", "summary.json", "report.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    summary = json.loads((out / "summary.json").read_text())
    meta = summary["meta"]
    assert meta["mode"] == "nominal" and meta["cells_total"] == 1 and meta["episodes_run"] == 3
    assert meta["perturb_range"] is None and meta["points"] is None and meta["params"] == []
    assert "--perturb" not in meta["command"] and "--points" not in meta["command"]
    (cell,) = summary["cells"]
    assert cell["kind"] == "nominal" and cell["n"] == 3 and summary["most_damaging"] is None
    episodes = json.loads((out / "episodes.json").read_text())["episodes"]
    assert len(episodes) == 3 and all(isinstance(e["success"], bool) for e in episodes)

    # the same seeds by hand: reset seeds of the seeding scheme, deterministic actions
    # through the run's VecNormalize (the evaluate code's own loader)
    run = ev.load_run(humanoid_run, "best")
    assert run.vec_normalize is not None and run.vec_normalize.norm_obs
    env = run.make_env()
    try:
        for k, episode in enumerate(episodes):
            reset_seed = ev.episode_reset_seed(7, k)
            assert episode["reset_seed"] == reset_seed
            obs, info = env.reset(seed=reset_seed)
            total, length, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(run.predict(obs))
                total, length, done = total + float(reward), length + 1, terminated or truncated
            assert episode["success"] == bool(info["is_success"])
            assert episode["final_distance"] == float(info["distance"])
            assert (episode["return"], episode["length"]) == (total, length)
    finally:
        env.close()

    successes = sum(e["success"] for e in episodes)
    distances = [e["final_distance"] for e in episodes]
    assert cell["successes"] == successes and cell["success_rate"] == pytest.approx(successes / 3)
    assert [cell["success_ci_low"], cell["success_ci_high"]] == pytest.approx(rr.wilson_interval(successes, 3))
    assert cell["final_distance_mean"] == pytest.approx(np.mean(distances))
    assert cell["final_distance_std"] == pytest.approx(np.std(distances))
    assert cell["final_distance_median"] == pytest.approx(np.median(distances))

    rows = rr.read_csv(out / "episodes.csv")
    assert [float(r["final_distance"]) for r in rows] == distances
    assert [r["success"] == "True" for r in rows] == [e["success"] for e in episodes]
    (summary_row,) = rr.read_csv(out / "summary.csv")
    assert set(GOAL_SUMMARY_FIELDS) <= set(summary_row)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert "nominal env only" in text and "nominal success" in text and "Wilson" in text
        assert "final dist. (m)" in text and "95% CI" in text
        assert "Most damaging" not in text
    assert "| success | 95% CI | final dist. (m) | dist. std | dist. median |" in md
    assert "<th>success</th>" in html and " success " in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--perturb", "0.5-1.5"],
        ["--perturb", "0.5-1.5", "--grid", "torso.length,torso.mass"],
        ["--params", "torso.length"],
        ["--set", "torso.length=1.2"],
        ["--Ltorso", "1.2"],
    ],
)
def test_perturbation_of_target_humanoid_is_one_line_error(app, humanoid_run, tmp_path, args):
    before = sorted(p.relative_to(humanoid_run) for p in humanoid_run.rglob("*"))
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(humanoid_run), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "TargetHumanoid-v0" in lines[0], lines
    assert not out.exists() and sorted(p.relative_to(humanoid_run) for p in humanoid_run.rglob("*")) == before


# -- envs without is_success / distance ------------------------------------------------------
class PendulumRun:
    """A plain Gymnasium id (``Pendulum-v1``, 20-step episodes) with a PD policy."""

    env_id = "Pendulum-v1"
    algo = "pd"
    env_kwargs: dict = {}
    config: dict = {}

    def make_env(self, perturbation=None, backend=None, render_mode=None):
        if perturbation is not None or backend is not None:
            raise VisforeError(f"{self.env_id} is not a visfore env")
        return gym.make(self.env_id, max_episode_steps=20)

    def predict(self, obs):
        cos, sin, vel = obs
        return np.clip(np.array([-2.0 * np.arctan2(sin, cos) - 0.5 * vel]), -2.0, 2.0).astype(np.float32)


class ZeroHopperRun:
    """Zero actions on ``PerturbHopper-v0`` (a locomotion env), 20-step episodes."""

    env_id = "PerturbHopper-v0"
    algo = "zero"
    env_kwargs: dict = {}
    config: dict = {}

    def make_env(self, perturbation=None, backend=None, render_mode=None):
        import visfore_envs  # noqa: F401

        kwargs = {"perturbation": dict(perturbation)} if perturbation else {}
        return gym.make(self.env_id, max_episode_steps=20, **kwargs)

    def predict(self, obs):
        return np.zeros(3, dtype=np.float32)


def pendulum_loader(run_dir, checkpoint):
    return PendulumRun()


def zero_hopper_loader(run_dir, checkpoint):
    return ZeroHopperRun()


def _assert_no_goal_columns(result, out: Path) -> None:
    assert not any(set(rr.GOAL_EPISODE_FIELDS) & set(e) for e in result["episodes"])
    assert not set(rr.GOAL_EPISODE_FIELDS) & set(rr.read_csv(out / "episodes.csv")[0])
    for row in [*rr.read_csv(out / "summary.csv"), *json.loads((out / "summary.json").read_text())["cells"]]:
        assert not set(GOAL_SUMMARY_FIELDS) & set(row), row
    # (the word "success" alone is in the temporary paths of these tests)
    for text in ((out / "report.md").read_text(), (out / "report.html").read_text(), _console_text(result)):
        for word in GOAL_WORDS:
            assert word not in text, word


def test_plain_gymnasium_id_nominal_only_and_perturbation_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = ev.evaluate(run_dir, episodes=2, seeds="0,1", progress=False, loader=pendulum_loader,
                         out=tmp_path / "report")  # fmt: skip
    assert result["mode"] == "nominal" and [r["kind"] for r in result["summary"]] == ["nominal"]
    assert result["summary"][0]["n"] == 4 and result["most_damaging"] is None
    _assert_no_goal_columns(result, tmp_path / "report")
    for options in ({"perturb": "0.5-1.5"}, {"fixed": {"pole.length": 1.2}}):
        with pytest.raises(VisforeError, match="Pendulum-v1 cannot be perturbed") as exc:
            ev.evaluate(run_dir, episodes=1, seeds="0", progress=False, loader=pendulum_loader,
                        out=tmp_path / "bad", **options)  # fmt: skip
        assert "\n" not in str(exc.value)
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif("PerturbHopper-v0" not in gym.registry, reason="PerturbHopper-v0 not registered")
def test_locomotion_report_has_no_success_columns(tmp_path):
    import visfore_envs  # noqa: F401

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sweep = ev.evaluate(run_dir, perturb="0.8-1.2", points=2, params="thigh.length", episodes=1, seeds="0",
                        progress=False, loader=zero_hopper_loader, out=tmp_path / "sweep")  # fmt: skip
    assert sweep["mode"] == "sweep" and len(sweep["summary"]) == 3
    _assert_no_goal_columns(sweep, tmp_path / "sweep")
    assert list(rr.read_csv(tmp_path / "sweep" / "summary.csv")[0]) == list(rr.SUMMARY_FIELDS)
    nominal = ev.evaluate(run_dir, episodes=1, seeds="0", progress=False, loader=zero_hopper_loader,
                          out=tmp_path / "nominal")  # fmt: skip
    assert nominal["mode"] == "nominal" and len(nominal["summary"]) == 1
    assert nominal["episodes"][0]["return"] == sweep["episodes"][0]["return"]  # same seeding scheme
    _assert_no_goal_columns(nominal, tmp_path / "nominal")
