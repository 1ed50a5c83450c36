"""``visfore evaluate``: grids, seeding, statistics, report files, runner, CLI.

Most tests use a fake policy run over gymnasium's ``Pendulum-v1`` (perturbation keys
``gravity``, ``pole.length``, ``pole.mass`` mapped onto the pendulum's ``g``, ``l`` and
``m``), so they run without trained policies. Tests of the real ``PerturbHopper-v0`` and
of the end-to-end CLI (``visfore train-policy`` then ``visfore evaluate``) skip with a
reason until those pieces are importable.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

from visfore.core.errors import VisforeError
from visfore.reports import robustness_report as rr
from visfore.rl import config as rl_config
from visfore.rl import evaluate as ev

os.environ.setdefault("MUJOCO_GL", "egl")
runner = CliRunner()

FAKE_ENV_ID = "FakePendulum-v0"
FAKE_KEYS = ("pole.length", "pole.width", "pole.mass", "gravity")
FAKE_ALIASES = {"Lpole": "pole.length", "Wpole": "pole.width", "Mpole": "pole.mass"}


# -- fakes -------------------------------------------------------------------------------
class _PerturbInfo(gym.Wrapper):
    """Adds ``info["perturbation"]`` and ``info["body_mass"]`` like the Perturb envs."""

    def __init__(self, env: gym.Env, perturbation: dict[str, float]) -> None:
        super().__init__(env)
        self.perturbation = {k: float(perturbation.get(k, 1.0)) for k in FAKE_KEYS}

    def _info(self, info: dict) -> dict:
        return {**info, "perturbation": dict(self.perturbation),
                "body_mass": {"pole": float(self.env.unwrapped.m)}}  # fmt: skip

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._info(info)


class FakePendulumRun:
    """Stands in for :class:`visfore.rl.policy_run.PolicyRun`: a deterministic PD policy on
    Pendulum-v1 with 25-step episodes."""

    env_id = FAKE_ENV_ID
    algo = "fake"
    env_kwargs: dict = {}
    config = {"timesteps": 0}
    max_steps = 25

    def __init__(self, run_dir=None) -> None:
        self.run_dir = run_dir
        self.made = 0

    def make_env(self, perturbation=None, backend=None, render_mode=None):
        self.made += 1
        p = dict(perturbation or {})
        env = gym.make("Pendulum-v1", g=10.0 * p.get("gravity", 1.0), max_episode_steps=self.max_steps)
        env.unwrapped.l = 1.0 * p.get("pole.length", 1.0)
        env.unwrapped.m = 1.0 * p.get("pole.mass", 1.0)
        return _PerturbInfo(env, p)

    def predict(self, obs):
        cos, sin, vel = obs
        return np.clip(np.array([-2.0 * np.arctan2(sin, cos) - 0.5 * vel]), -2.0, 2.0).astype(np.float32)


class InterruptingRun(FakePendulumRun):
    """Ctrl-C arrives while the env of task number ``after`` is being made (the first env
    is the nominal one :func:`visfore.rl.evaluate.check_env` makes)."""

    after = 5

    def make_env(self, perturbation=None, backend=None, render_mode=None):
        if self.made >= self.after:
            raise KeyboardInterrupt
        return super().make_env(perturbation, backend, render_mode)


def fake_loader(run_dir, checkpoint):
    """Picklable loader of :class:`FakePendulumRun` (spawn workers import this module)."""
    if not Path(run_dir).is_dir():
        raise VisforeError(f"{run_dir} is not a policy run")
    return FakePendulumRun(run_dir)


def interrupting_loader(run_dir, checkpoint):
    return InterruptingRun(run_dir)


class ZeroHopperRun:
    """Zero actions on ``PerturbHopper-v0`` with 30-step episodes."""

    env_id = "PerturbHopper-v0"
    algo = "zero"
    env_kwargs: dict = {}
    config: dict = {}

    def make_env(self, perturbation=None, backend=None, render_mode=None):
        import visfore_envs  # noqa: F401

        kwargs = {"perturbation": dict(perturbation)} if perturbation else {}
        if backend:
            kwargs["backend"] = backend
        return gym.make(self.env_id, max_episode_steps=30, **kwargs)

    def predict(self, obs):
        return np.zeros(3, dtype=np.float32)


def zero_hopper_loader(run_dir, checkpoint):
    return ZeroHopperRun()


def _fake_resolve(env_id, key):
    if key in FAKE_KEYS:
        return key
    if key in FAKE_ALIASES:
        return FAKE_ALIASES[key]
    raise ValueError(f"unknown perturbation key {key!r}")


@pytest.fixture
def fake_keys(monkeypatch):
    """Perturbation keys of the fake env instead of visfore_envs'."""
    monkeypatch.setattr(ev, "_perturbation_keys", lambda env_id: FAKE_KEYS)
    monkeypatch.setattr(ev, "_resolve_key", _fake_resolve)


@pytest.fixture
def fake_cli(monkeypatch, fake_keys):
    """The CLI loads :class:`FakePendulumRun` for any existing directory."""
    monkeypatch.setattr(ev, "load_run", fake_loader)


@pytest.fixture(scope="module")
def app():
    from visfore.cli.app import app

    return app


def _have_perturb_envs() -> bool:
    try:
        import visfore_envs
    except ImportError:
        return False
    return "PerturbHopper-v0" in gym.registry and hasattr(visfore_envs, "perturbation_keys")


# -- grids ---------------------------------------------------------------------------------
def test_parse_range():
    assert ev.parse_range("0.5-1.5") == (0.5, 1.5)
    assert ev.parse_range(" .8 - 1.25 ") == (0.8, 1.25)
    for bad in ("1.5-0.5", "0-1", "1-1", "0.5", "a-b", "0.5-1.5-2", "-0.5-1", ""):
        with pytest.raises(VisforeError, match="LO-HI"):
            ev.parse_range(bad)


def test_grid_scales_even_spacing_and_nominal():
    scales = ev.grid_scales(0.5, 1.5, 11)
    assert len(scales) == 11 and scales[0] == 0.5 and scales[-1] == 1.5
    assert 1.0 in scales and scales[1] == 0.6 and scales[2] == 0.7  # rounded, exact labels
    np.testing.assert_allclose(np.diff(scales), 0.1)
    assert ev.grid_scales(0.5, 1.5, 2) == (0.5, 1.5)
    with pytest.raises(VisforeError, match="--points"):
        ev.grid_scales(0.5, 1.5, 1)


def test_sweep_grid_has_nominal_cell_even_off_grid():
    scales = ev.grid_scales(0.5, 1.5, 4)  # 0.5, 0.833, 1.167, 1.5: 1.0 not on the grid
    assert 1.0 not in scales
    grid = ev.sweep_grid(("thigh.length", "torso.mass"), scales)
    assert len(grid.cells) == 1 + 2 * 4
    assert grid.cells[0].kind == "nominal" and grid.cells[0].perturbation == {}
    assert [c.index for c in grid.cells] == list(range(9))
    assert grid.cells[1].perturbation == {"thigh.length": 0.5}
    assert grid.cells[5].perturbation == {"torso.mass": 0.5}
    row = grid.cells[5].row()
    assert (row["param"], row["scale"], row["param2"], row["scale2"]) == ("torso.mass", 0.5, None, None)
    assert grid.cells[0].row()["param"] == "nominal" and grid.cells[0].row()["scale"] == 1.0


def test_grid_2d_cells():
    scales = ev.grid_scales(0.5, 1.5, 3)
    grid = ev.grid_2d("thigh.length", "torso.mass", scales)
    assert grid.mode == "grid" and len(grid.cells) == 1 + 9
    pairs = [c.scales for c in grid.cells[1:]]
    assert pairs == [(a, b) for a in scales for b in scales]
    row = grid.cells[2].row()
    assert row["param"] == "thigh.length" and row["param2"] == "torso.mass"
    assert (row["scale"], row["scale2"]) == (0.5, 1.0)
    # (1.0, 1.0) is the nominal model
    assert [c.index for c in grid.cells if c.is_nominal_model] == [0, 5]


def test_build_grid_params_defaults_aliases_and_errors(fake_keys):
    g = ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, None, None, None)
    assert g.params == ("pole.length", "pole.width")  # default: lengths and widths
    assert ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, "all", None, None).params == FAKE_KEYS
    g = ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, "Mpole, gravity,pole.mass", None, None)
    assert g.params == ("pole.mass", "gravity")
    g = ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, None, "gravity,Lpole", None)
    assert g.mode == "grid" and g.params == ("gravity", "pole.length")
    g = ev.build_grid(FAKE_ENV_ID, None, 11, None, None, {"Lpole": 1.2, "gravity": 0.9})
    assert g.mode == "fixed" and g.fixed == {"pole.length": 1.2, "gravity": 0.9}
    assert len(g.cells) == 2 and g.cells[0].kind == "nominal"

    with pytest.raises(VisforeError) as exc:
        ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, "pole.length,wings.length", None, None)
    msg = str(exc.value)
    assert "wings.length" in msg and "valid: " + ", ".join(FAKE_KEYS) in msg and "\n" not in msg
    for grid in ("gravity", "gravity,pole.mass,pole.length", "gravity,gravity"):
        with pytest.raises(VisforeError, match="--grid"):
            ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, None, grid, None)
    with pytest.raises(VisforeError, match="not both"):
        ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, "gravity", "gravity,pole.mass", None)
    # no perturbation option: the nominal cell only (it used to be refused)
    g = ev.build_grid(FAKE_ENV_ID, None, 3, None, None, None)
    assert g.mode == "nominal" and [c.kind for c in g.cells] == ["nominal"] and g.params == ()
    # --params / --grid without --perturb: still refused
    for params, grid in (("gravity", None), (None, "gravity,pole.mass")):
        with pytest.raises(VisforeError, match="--perturb"):
            ev.build_grid(FAKE_ENV_ID, None, 3, params, grid, None)
    with pytest.raises(VisforeError, match="fixed"):
        ev.build_grid(FAKE_ENV_ID, "0.5-1.5", 3, None, None, {"gravity": 1.1})


def test_parse_options():
    assert ev.parse_seeds("0, 1,2") == (0, 1, 2)
    for bad in ("", "a", "-1", "1,1"):
        with pytest.raises(VisforeError, match="--seeds"):
            ev.parse_seeds(bad)
    assert rl_config.parse_set_values(["a.length=1.2,b.mass=0.5", "friction=2"]) == {
        "a.length": 1.2, "b.mass": 0.5, "friction": 2.0,
    }  # fmt: skip
    for bad in (["a.length"], ["a.length=0"], ["a.length=x"], ["a=1", "a=2"]):
        with pytest.raises(VisforeError, match="--set"):
            rl_config.parse_set_values(bad)
    assert rl_config.BODY_PART_SHORTCUTS["Ltorso"] == "torso.length"
    assert rl_config.BODY_PART_SHORTCUTS["Wfoot"] == "foot.width"


# -- seeding -----------------------------------------------------------------------------------
def test_episode_reset_seed_is_derived_from_seed_and_episode():
    expected = int(np.random.SeedSequence([3, 7]).generate_state(1, np.uint32)[0])
    assert ev.episode_reset_seed(3, 7) == expected
    assert ev.episode_reset_seed(3, 7) == ev.episode_reset_seed(3, 7)
    seeds = {ev.episode_reset_seed(s, k) for s in range(5) for k in range(20)}
    assert len(seeds) == 100 and all(0 <= x < 2**32 for x in seeds)


# -- statistics ----------------------------------------------------------------------------------
def test_cell_statistics_against_numpy():
    returns = [10.0, 20.0, 30.0, 40.0, 100.0, -5.0]
    seeds = [0, 0, 0, 1, 1, 1]
    lengths = [5, 6, 7, 8, 9, 10]
    stats = rr.cell_statistics(returns, lengths, seeds, [True, False, False, True, True, False])
    r = np.array(returns)
    assert stats["n"] == 6
    assert stats["mean"] == pytest.approx(np.mean(r)) == pytest.approx(32.5)
    assert stats["median"] == pytest.approx(np.median(r)) == pytest.approx(25.0)
    assert stats["std"] == pytest.approx(np.std(r))  # population std
    assert (stats["min"], stats["max"]) == (-5.0, 100.0)
    assert stats["mean_length"] == pytest.approx(7.5)
    assert stats["terminated_fraction"] == pytest.approx(0.5)
    assert stats["seed_means"] == {0: pytest.approx(20.0), 1: pytest.approx(45.0)}
    assert (stats["seed_mean_min"], stats["seed_mean_max"]) == (pytest.approx(20.0), pytest.approx(45.0))
    empty = rr.cell_statistics([], [], [])
    assert empty["n"] == 0 and np.isnan(empty["mean"])


def _synthetic(mode: str = "sweep"):
    """Cells and episodes with known returns: nominal 100 +- 10, cells below it."""
    if mode == "grid":
        grid = ev.grid_2d("pole.length", "gravity", (0.5, 1.0, 1.5))
    elif mode == "fixed":
        grid = ev.fixed_grid({"pole.length": 1.3, "gravity": 0.8})
    else:
        grid = ev.sweep_grid(("pole.length", "gravity"), (0.5, 1.0, 1.5))
    rng = np.random.default_rng(0)
    results = {}
    for cell in grid.cells:
        base = 100.0 * np.prod([1.0 - 0.5 * abs(s - 1.0) for s in cell.scales])
        for seed in (0, 1):
            results[(cell.index, seed)] = [
                {"seed": seed, "episode": k, "reset_seed": ev.episode_reset_seed(seed, k),
                 "return": float(base + rng.normal(0, 10)), "length": 20 + k,
                 "terminated": bool(k % 2), "truncated": not bool(k % 2),
                 "applied_perturbation": dict(cell.perturbation),
                 "body_mass": {"pole": 1.0 * cell.perturbation.get("pole.mass", 1.0), "cart": 2.0}}
                for k in range(3)
            ]  # fmt: skip
    episodes, finished = ev.cell_episodes(grid.cells, (0, 1), results)
    meta = {
        "run_dir": "runs/train-policy-x", "run_name": "train-policy-x", "env_id": FAKE_ENV_ID,
        "algo": "ppo", "checkpoint": "best", "backend": "mujoco", "mode": grid.mode,
        "params": list(grid.params), "perturb_range": [0.5, 1.5], "points": 3,
        "fixed": grid.fixed, "seeds": [0, 1], "episodes": 3, "cells_total": len(grid.cells),
        "cells_finished": len(finished), "episodes_run": len(episodes), "steps_run": 100,
        "workers": 1, "seconds": 1.5, "interrupted": False, "created": "now",
        "command": "visfore evaluate runs/train-policy-x --perturb 0.5-1.5",
    }  # fmt: skip
    return grid, episodes, meta


def test_summarize_normalises_to_nominal_and_reuses_nominal_episodes():
    grid, episodes, _ = _synthetic()
    summary = rr.summarize([c.row() for c in grid.cells], episodes)
    assert len(summary) == len(grid.cells)
    nominal = summary[0]
    assert nominal["kind"] == "nominal" and nominal["normalized_mean"] == pytest.approx(1.0)
    nominal_returns = np.array([e["return"] for e in episodes if e["cell"] == 0])
    for row in summary:
        r = np.array([e["return"] for e in episodes if e["cell"] == row["cell"]])
        assert row["n"] == 6
        assert row["mean"] == pytest.approx(r.mean()) and row["median"] == pytest.approx(np.median(r))
        assert row["std"] == pytest.approx(r.std())
        assert row["normalized_mean"] == pytest.approx(r.mean() / nominal_returns.mean())
        assert row["normalized_min"] == pytest.approx(r.min() / nominal_returns.mean())
    # the scale-1.0 cells repeat the nominal cell's episodes
    ones = [row for row in summary if row["scale"] == 1.0 and row["kind"] == "sweep"]
    assert len(ones) == 2 and all(row["mean"] == nominal["mean"] for row in ones)
    worst = rr.most_damaging(summary)
    assert worst["kind"] == "sweep" and worst["scale"] in (0.5, 1.5)
    assert worst["mean"] == min(row["mean"] for row in summary)
    # a nominal mean <= 0 cannot normalise
    neg = [{**e, "return": -abs(e["return"])} for e in episodes]
    assert all(row["normalized_mean"] is None for row in rr.summarize([c.row() for c in grid.cells], neg))


# -- report files --------------------------------------------------------------------------------------
def _assert_self_contained_html(path: Path, n_png: int) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text.lower() and "<script" not in text.lower()
    assert text.count('src="data:image/png;base64,') == n_png


@pytest.mark.parametrize("mode", ["sweep", "grid", "fixed"])
def test_write_report_files(tmp_path, mode):
    grid, episodes, meta = _synthetic(mode)
    out = tmp_path / "report"
    report = rr.write_report(out, meta, [c.row() for c in grid.cells], episodes)
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    expected_plots = {
        "sweep": ["heatmap.png", "return_vs_scale_gravity.png", "return_vs_scale_pole.length.png"],
        "grid": ["heatmap.png", "return_vs_scale_gravity.png", "return_vs_scale_pole.length.png"],
        "fixed": ["return_by_cell.png"],
    }[mode]
    assert pngs == expected_plots
    for name in ("episodes.csv", "episodes.json", "summary.csv", "summary.json", "report.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert name in report["files"]
    for png in pngs:
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _assert_self_contained_html(out / "report.html", len(pngs))

    rows = rr.read_csv(out / "episodes.csv")
    assert len(rows) == len(episodes) == len(grid.cells) * 2 * 3
    assert list(rows[0])[: len(rr.EPISODE_FIELDS)] == list(rr.EPISODE_FIELDS)
    assert "body_mass.pole" in rows[0] and "body_mass.cart" in rows[0]
    assert [float(r["return"]) for r in rows] == [e["return"] for e in episodes]
    assert [int(r["seed"]) for r in rows[:6]] == [0, 0, 0, 1, 1, 1]
    summary_rows = rr.read_csv(out / "summary.csv")
    assert len(summary_rows) == len(grid.cells)
    assert [float(r["mean"]) for r in summary_rows] == pytest.approx([r["mean"] for r in report["summary"]])
    assert float(summary_rows[0]["normalized_mean"]) == pytest.approx(1.0)

    data = json.loads((out / "summary.json").read_text())
    assert data["nominal"]["kind"] == "nominal" and len(data["cells"]) == len(grid.cells)
    assert data["most_damaging"]["cell"] == report["most_damaging"]["cell"]
    raw = json.loads((out / "episodes.json").read_text())
    assert len(raw["episodes"]) == len(episodes) and raw["meta"]["mode"] == mode

    md = (out / "report.md").read_text()
    assert "# Robustness report: train-policy-x" in md and "## Most damaging perturbation" in md
    assert "FakePendulum-v0" in md and "budget" in md
    for png in pngs:
        assert f"(plots/{png})" in md
    if mode == "sweep":
        assert "## pole.length" in md and "## gravity" in md and "| nominal (1) |" in md


# -- runner --------------------------------------------------------------------------------------------
def test_run_cells_workers_give_identical_results(tmp_path):
    grid = ev.sweep_grid(("gravity", "pole.mass"), (0.5, 1.0, 1.5))
    run = FakePendulumRun(tmp_path)
    one: dict = {}
    ev.run_cells(run, grid.cells, (0, 3), 2, one, workers=1)
    # scale-1.0 cells are not run again: 1 nominal + 2 params x 2 scales, x 2 seeds
    assert sorted(one) == sorted((c, s) for c in (0, 1, 3, 4, 6) for s in (0, 3))
    assert run.made == 10
    two: dict = {}
    ev.run_cells(None, grid.cells, (0, 3), 2, two, workers=2, loader=fake_loader,
                 run_dir=tmp_path)  # fmt: skip
    assert one == two  # same numbers, bit for bit
    episodes, finished = ev.cell_episodes(grid.cells, (0, 3), one)
    assert finished == list(range(len(grid.cells))) and len(episodes) == 7 * 2 * 2
    # common random numbers: the same reset seed for episode k of seed s in every cell
    by_cell = {}
    for e in episodes:
        by_cell.setdefault(e["cell"], []).append((e["seed"], e["episode"], e["reset_seed"]))
    assert len({tuple(v) for v in by_cell.values()}) == 1
    returns = {e["cell"]: e["return"] for e in episodes if (e["seed"], e["episode"]) == (0, 0)}
    assert returns[1] != returns[0] != returns[3]  # gravity changes the dynamics
    assert returns[2] == returns[0] and returns[5] == returns[0]  # scale 1 = nominal
    masses = {e["cell"]: e["body_mass"]["pole"] for e in episodes}
    assert masses[4] == 0.5 and masses[6] == 1.5 and masses[0] == 1.0
    assert all(e["length"] == FakePendulumRun.max_steps and e["truncated"] for e in episodes)


def test_evaluate_pipeline_fake_run(tmp_path, fake_keys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = ev.evaluate(run_dir, perturb="0.5-1.5", points=3, params="gravity,Mpole",
                         episodes=2, seeds="0,1", progress=False, loader=fake_loader)  # fmt: skip
    out = result["report_dir"]
    assert out.parent == run_dir and out.name.startswith("eval-")
    assert result["meta"]["episodes_run"] == 5 * 2 * 2 and result["meta"]["cells_total"] == 7
    assert [r["param"] for r in result["summary"]] == ["nominal"] + ["gravity"] * 3 + ["pole.mass"] * 3
    assert {p.name for p in (out / "plots").iterdir()} == {
        "heatmap.png",
        "return_vs_scale_gravity.png",
        "return_vs_scale_pole.mass.png",
    }
    # a rerun gives the same numbers
    again = ev.evaluate(run_dir, perturb="0.5-1.5", points=3, params="gravity,Mpole",
                        episodes=2, seeds="0,1", progress=False, loader=fake_loader,
                        out=tmp_path / "again")  # fmt: skip
    assert [e["return"] for e in again["episodes"]] == [e["return"] for e in result["episodes"]]
    with pytest.raises(VisforeError, match="not empty"):
        ev.evaluate(run_dir, perturb="0.5-1.5", points=3, episodes=1, seeds="0",
                    progress=False, loader=fake_loader, out=tmp_path / "again")  # fmt: skip


def test_print_summary_std_of_one_episode_is_na(tmp_path, fake_keys):
    """A cell of one episode has no std (it is undefined for one sample): the table says
    n/a, not 0.0; with two episodes it is a number."""
    import io

    from rich.console import Console

    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def std_column(episodes: int) -> list[str]:
        result = ev.evaluate(run_dir, perturb="0.5-1.5", points=2, params="gravity", episodes=episodes,
                             seeds="0", progress=False, loader=fake_loader, out=tmp_path / f"n{episodes}")  # fmt: skip
        console = Console(record=True, width=150, file=io.StringIO())
        ev.print_summary(result, console)
        # report.md's table and its nominal line say the same as the terminal
        report = (tmp_path / f"n{episodes}" / "report.md").read_text()
        assert ("std n/a" in report) == (episodes == 1), report
        table = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| scale")]
        assert table and all(("| n/a |" in line) == (episodes == 1) for line in table), table
        lines = console.export_text().splitlines()
        header = next(i for i, line in enumerate(lines) if "median" in line)
        col = [c.strip() for c in lines[header].split("┃")].index("std")
        return [line.split("│")[col].strip() for line in lines[header + 2 :] if line.startswith("│")]

    assert std_column(1) == ["n/a"] * 3
    stds = std_column(2)
    assert len(stds) == 3 and all(re.fullmatch(r"\d+\.\d", s) for s in stds) and stds != ["0.0"] * 3, stds


def test_interrupt_writes_report_of_finished_cells(tmp_path, fake_keys, capsys, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = tmp_path / "report"
    with pytest.raises(KeyboardInterrupt) as excinfo:
        ev.evaluate(run_dir, perturb="0.5-1.5", points=3, params="gravity", episodes=1,
                    seeds="0,1", out=out, loader=interrupting_loader)  # fmt: skip
    # tasks: (0,0) (0,1) (1,0) (1,1) finished, Ctrl-C in (3,0): cells 0, 1 and 2 (= nominal)
    # The note rides on the exception (the CLI prints it on its one "interrupted" line), not in a log line.
    assert str(excinfo.value) == f"wrote the report of the 3 finished of 4 cells to {out}"
    assert "interrupted" not in capsys.readouterr().err + caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == [0, 1, 2]
    assert summary["meta"]["interrupted"] is True
    assert "interrupted" in (out / "report.md").read_text()
    assert len(rr.read_csv(out / "episodes.csv")) == 3 * 2


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_fake_run_sweep_and_fixed(app, tmp_path, fake_cli):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["evaluate", str(run_dir), "--perturb", "0.5-1.5", "--points", "3",
                                 "--params", "gravity", "--episodes", "1", "--seeds", "0",
                                 "--out", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for word in ("param", "scale", "mean", "median", "std", "min", "max", "normalised", "gravity"):
        assert word in result.stdout
    assert "report:" in result.stdout and "report.html" in result.stdout
    assert (out / "report.html").is_file() and (out / "plots" / "heatmap.png").is_file()

    out = tmp_path / "fixed"
    result = runner.invoke(app, ["evaluate", str(run_dir), "--set", "gravity=1.3,Lpole=0.7",
                                 "--episodes", "1", "--seeds", "0,1", "--out", str(out), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["mode"] == "fixed"
    assert summary["cells"][1]["perturbation"] == {"gravity": 1.3, "pole.length": 0.7}
    assert (out / "plots" / "return_by_cell.png").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--perturb", "1.5-0.5"], "--perturb"),
        (["--perturb", "0-1"], "--perturb"),
        (["--perturb", "0.5to1.5"], "--perturb"),
        (["--perturb", "0.5-1.5", "--points", "1"], "--points"),
        (["--perturb", "0.5-1.5", "--params", "wing.length"], "valid: pole.length, pole.width"),
        (["--perturb", "0.5-1.5", "--grid", "gravity"], "--grid"),
        (["--perturb", "0.5-1.5", "--grid", "gravity,pole.mass,pole.length"], "--grid"),
        (["--perturb", "0.5-1.5", "--episodes", "0"], "--episodes"),
        (["--perturb", "0.5-1.5", "--seeds", "x"], "--seeds"),
        (["--perturb", "0.5-1.5", "--backend", "ode"], "--backend"),
        (["--perturb", "0.5-1.5", "--Ltorso", "1.2"], "fixed"),
        (["--set", "gravity=-1"], "--set"),
        (["--Ltorso", "1.2"], "valid: pole.length"),
        (["--params", "gravity"], "--perturb"),
    ],
)
def test_cli_bad_input_one_line_exit_2_nothing_written(app, tmp_path, fake_cli, args, needle):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(run_dir), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not out.exists() and list(run_dir.iterdir()) == []


def test_cli_non_run_dir(app, tmp_path):
    not_run = tmp_path / "not-a-run"
    not_run.mkdir()
    (not_run / "notes.txt").write_text("hello")
    for path in (not_run, tmp_path / "missing"):
        result = runner.invoke(app, ["evaluate", str(path), "--perturb", "0.5-1.5", "--points", "3"])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
    assert sorted(p.name for p in not_run.iterdir()) == ["notes.txt"]


# -- the real envs and policies ---------------------------------------------------------------------
@pytest.mark.skipif(
    not _have_perturb_envs(), reason="PerturbHopper-v0 / visfore_envs.perturbation_keys not available yet"
)
def test_perturb_hopper_workers_identical_and_masses(tmp_path):
    keys = ev._perturbation_keys("PerturbHopper-v0")
    assert ev.default_params(keys) == tuple(k for k in keys if k.endswith((".length", ".width")))
    assert ev.resolve_keys("PerturbHopper-v0", ["Ltorso", "Wthigh", "Mfoot"], "--params") == (
        "torso.length",
        "thigh.width",
        "foot.mass",
    )
    with pytest.raises(VisforeError, match="valid: torso.length"):
        ev.resolve_keys("PerturbHopper-v0", ["wing.length"], "--params")
    grid = ev.sweep_grid(("thigh.length", "torso.mass"), (0.5, 1.5))
    one: dict = {}
    ev.run_cells(ZeroHopperRun(), grid.cells, (0,), 2, one, workers=1)
    two: dict = {}
    ev.run_cells(None, grid.cells, (0,), 2, two, workers=2, loader=zero_hopper_loader, run_dir=tmp_path)
    assert one == two
    episodes, _ = ev.cell_episodes(grid.cells, (0,), one)
    mass = {e["cell"]: e["body_mass"] for e in episodes}
    assert mass[3]["torso"] == pytest.approx(0.5 * mass[0]["torso"])
    assert mass[4]["torso"] == pytest.approx(1.5 * mass[0]["torso"])
    assert mass[2]["thigh"] > mass[0]["thigh"]  # a longer thigh is heavier
    applied = {e["cell"]: e["applied_perturbation"] for e in episodes}
    assert applied[1]["thigh.length"] == 0.5


def _train_policy_available() -> str | None:
    """None when the end-to-end test can run, else the reason to skip."""
    try:
        import visfore.rl.policy_run  # noqa: F401
        import visfore.rl.train_policy  # noqa: F401
    except ImportError as exc:
        return f"visfore.rl.train_policy / visfore.rl.policy_run not importable yet ({exc})"
    if not _have_perturb_envs():
        return "PerturbHopper-v0 not registered yet"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_train_policy_available() is not None, reason=str(_train_policy_available()))
def test_cli_end_to_end_train_policy_then_evaluate(app, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train-policy", "--env", "PerturbHopper-v0", "--algo", "ppo",
                                 "--timesteps", "256", "--seed", "0", "--name", "tiny",
                                 "--hp", "n_steps=64", "--hp", "batch_size=32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "train-policy-tiny"
    assert run_dir.is_dir()
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(run_dir), "--perturb", "0.5-1.5", "--points", "3",
                                 "--params", "thigh.length,torso.mass", "--episodes", "1",
                                 "--seeds", "0", "--out", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "thigh.length" in result.stdout and "normalised" in result.stdout
    pngs = ["heatmap.png", "return_vs_scale_thigh.length.png", "return_vs_scale_torso.mass.png"]
    for name in ("episodes.csv", "episodes.json", "summary.csv", "summary.json", "report.md",
                 "report.html", *(f"plots/{p}" for p in pngs)):  # fmt: skip
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    _assert_self_contained_html(out / "report.html", len(pngs))

    # The same MuJoCo-trained run on the PyBullet backend: the env serves the v5 layout.
    cross = tmp_path / "report-pybullet"
    result = runner.invoke(app, ["evaluate", str(run_dir), "--backend", "pybullet", "--Lthigh", "1.2",
                                 "--episodes", "1", "--seeds", "0", "--out", str(cross), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((cross / "summary.json").read_text())
    assert summary["meta"]["backend"] == "pybullet"
    assert [c["perturbation"].get("thigh.length", 1.0) for c in summary["cells"]] == [1.0, 1.2]
    rows = rr.read_csv(out / "episodes.csv")
    assert len(rows) == 1 + 2 * 3  # nominal + 2 params x 3 scales, 1 seed x 1 episode
    assert {"body_mass.torso", "body_mass.thigh"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["env_id"] == "PerturbHopper-v0" and len(summary["cells"]) == 7
    md = (out / "report.md").read_text()
    assert "## thigh.length" in md and "## torso.mass" in md and "Most damaging" in md


def test_check_env_rejects_policy_of_another_observation_shape(tmp_path, fake_keys):
    from types import SimpleNamespace

    run = FakePendulumRun(tmp_path)
    ev.check_env(run, None)  # no model: nothing to compare
    run.model = SimpleNamespace(observation_space=gym.spaces.Box(-1, 1, (3,)), action_space=gym.spaces.Box(-1, 1, (1,)))
    ev.check_env(run, None)
    run.model.observation_space = gym.spaces.Box(-1, 1, (11,))
    with pytest.raises(VisforeError, match=r"observations of shape \(3,\) but the policy was trained on \(11,\)"):
        ev.check_env(run, "pybullet")
