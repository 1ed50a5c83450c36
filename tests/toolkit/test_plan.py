"""``visfore plan``: the CEM optimiser (visfore.planning.cem), goal-reaching episodes
(visfore.planning.goal_reaching), the costs (visfore.planning.costs), the controllers
(visfore.planning.controllers) and the command (visfore.planning.plan).

One tiny ConvLSTM is trained for one epoch on the shared 32x32 reacher dataset by the real
``visfore train-model`` CLI (once per module); the oracle test is a real physics check on
ReacherPlane-v0. Budgets are tiny so the whole file stays well under a minute.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageSequence
from visfore_cli_testutils import invoke as _cli
from visfore_cli_testutils import one_error_line as _one_error_line

from visfore.core.errors import VisforeError
from visfore.planning.cem import CEMConfig, cem, expand_blocks, shift_mean
from visfore.planning.config import resolve_blocks
from visfore.planning.controllers import LearnedCEMController, OracleCEMController, RandomController
from visfore.planning.costs import gaussian_blur, load_goal_image, pixel_cost
from visfore.planning.goal_reaching import (
    GoalEpisode,
    episode_reset_seed,
    evaluation_env_kwargs,
    gif_scale,
    goal_panel,
    make_goal_env,
    run_goal_episodes,
    summarize_goal_episodes,
)
from visfore.reports.panels import CAPTION_BG, CAPTION_HEIGHT, panel_columns
from visfore.worldmodels.model_run import load_model_run

SIZE = 32
SMALL_CEM = ["--iterations", "2", "--samples", "8", "--elites", "2", "--blocks", "2", "--repeat", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- CEM ---------------------------------------------------------------------------------
def _quadratic(target: torch.Tensor):
    def cost(actions: torch.Tensor) -> torch.Tensor:  # (N, T, A) -> (N,)
        return (actions - target).square().sum(dim=(1, 2))

    return cost


def test_cem_finds_the_minimum_of_a_quadratic():
    cfg = CEMConfig(iterations=12, samples=300, elites=20, blocks=3, repeat=2, init_std=1.0, min_std=0.0)
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    blocks = torch.tensor([[0.5, -0.3], [-0.7, 0.2], [0.1, 0.9]])
    target = expand_blocks(blocks, 2)  # (6, 2): reachable by block actions
    result = cem(_quadratic(target), low, high, cfg, torch.Generator().manual_seed(0))
    assert result.actions.shape == (6, 2)
    assert result.mean.shape == (3, 2) and result.std.shape == (3, 2)
    assert torch.allclose(result.actions, target, atol=0.05)
    assert torch.allclose(result.mean, blocks, atol=0.05)
    assert result.cost < 0.01 and result.evaluations == 12 * 300
    best = [h["best"] for h in result.history]
    assert best[-1] < best[0]
    # actions always inside the bounds, even for a target outside them
    far = cem(_quadratic(torch.full((6, 2), 3.0)), low, high, cfg, torch.Generator().manual_seed(0))
    assert torch.all(far.actions <= 1.0) and torch.allclose(far.actions, torch.ones(6, 2), atol=1e-3)


def test_cem_is_seeded_and_deterministic():
    cfg = CEMConfig(iterations=2, samples=20, elites=4, blocks=2, repeat=3)
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    cost = _quadratic(torch.full((6, 2), 0.3))
    a = cem(cost, low, high, cfg, torch.Generator().manual_seed(7))
    b = cem(cost, low, high, cfg, torch.Generator().manual_seed(7))
    c = cem(cost, low, high, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a.actions, b.actions) and torch.equal(a.mean, b.mean)
    assert not torch.equal(a.actions, c.actions)
    # held blocks: each block's action repeated `repeat` steps
    assert torch.equal(a.actions[0], a.actions[2]) and torch.equal(a.actions[3], a.actions[5])


def test_cem_include_mean_keeps_a_warm_start():
    cfg = CEMConfig(iterations=1, samples=4, elites=2, blocks=2, repeat=1, init_std=1.0)
    low, high = torch.full((1,), -1.0), torch.full((1,), 1.0)
    target = torch.tensor([[0.25], [-0.5]])
    result = cem(_quadratic(target), low, high, cfg, torch.Generator().manual_seed(0), init_mean=target)
    assert result.cost == 0.0 and torch.equal(result.actions, target)


def test_cem_mean_actions_and_execute_mean():
    """``mean_actions`` is the final block mean, clipped and expanded to steps; a controller
    with ``execute="mean"`` executes it rather than the best sample."""
    cfg = CEMConfig(iterations=2, samples=40, elites=5, blocks=2, repeat=3, init_std=1.0)
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    result = cem(_quadratic(torch.full((6, 2), 0.4)), low, high, cfg, torch.Generator().manual_seed(0))
    assert result.mean_actions.shape == (6, 2)
    assert torch.equal(result.mean_actions, expand_blocks(result.mean.clamp(-1.0, 1.0), 3))
    assert not torch.equal(result.mean_actions, result.actions)
    far = cem(_quadratic(torch.full((6, 2), 3.0)), low, high, cfg, torch.Generator().manual_seed(0))
    assert torch.all(far.mean_actions <= 1.0)

    make = lambda: make_goal_env("reacher", {}, SIZE)  # noqa: E731
    executed = {}
    for execute in ("best", "mean"):
        oracle = OracleCEMController(dataclasses.replace(cfg, execute=execute), replan_every=3, cost="keypoints")
        env = make()
        try:
            obs, info = env.reset(seed=5)
            oracle.reset(env, obs, env.unwrapped.render_goal(), np.random.default_rng(0))
            executed[execute] = oracle.act(obs, info)
            plan = oracle.last_result.actions if execute == "best" else oracle.last_result.mean_actions
            np.testing.assert_array_equal(executed[execute], plan[0].numpy())
        finally:
            env.close()
    assert not np.array_equal(executed["best"], executed["mean"])


def test_cem_rejects_bad_input():
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    cost = _quadratic(torch.zeros(15, 2))
    with pytest.raises(VisforeError, match="--elites 20 must be <= --samples 10"):
        cem(cost, low, high, CEMConfig(samples=10, elites=20), torch.Generator())
    with pytest.raises(VisforeError, match="init_mean has shape"):
        cem(cost, low, high, CEMConfig(), torch.Generator(), init_mean=torch.zeros(4, 2))
    with pytest.raises(VisforeError, match="cost returned shape"):
        cem(lambda a: torch.zeros(3), low, high, CEMConfig(), torch.Generator())
    with pytest.raises(VisforeError, match="low < high"):
        cem(cost, high, low, CEMConfig(), torch.Generator())


def test_shift_mean():
    mean = torch.tensor([[1.0], [2.0], [3.0]])  # 3 blocks x repeat 2 -> steps 1 1 2 2 3 3
    fill = torch.tensor([0.0])
    assert torch.equal(shift_mean(mean, 0, 2, fill), mean)
    assert torch.equal(shift_mean(mean, 2, 2, fill), torch.tensor([[2.0], [3.0], [0.0]]))
    assert torch.equal(shift_mean(mean, 1, 2, fill), torch.tensor([[1.5], [2.5], [1.5]]))


def test_resolve_blocks():
    assert resolve_blocks(None, 3, None) == 5
    assert resolve_blocks(4, 3, None) == 4
    assert resolve_blocks(None, 3, 15) == 5
    assert resolve_blocks(5, 3, 15) == 5
    with pytest.raises(VisforeError, match="--horizon 16 is not divisible by --repeat 3"):
        resolve_blocks(None, 3, 16)
    with pytest.raises(VisforeError, match="contradicts --horizon 12"):
        resolve_blocks(5, 3, 12)


def test_pixel_cost_and_blur():
    goal = torch.zeros(3, 8, 8)
    frames = torch.zeros(2, 3, 3, 8, 8)
    frames[1, -1] = 1.0  # last frame all white
    assert torch.equal(pixel_cost(frames, goal, "final"), torch.tensor([0.0, 1.0]))
    assert torch.allclose(pixel_cost(frames, goal, "all"), torch.tensor([0.0, 1.0 / 3]))
    img = torch.zeros(3, 9, 9)
    img[:, 4, 4] = 1.0
    blurred = gaussian_blur(img, 1.0)
    assert torch.isclose(blurred.sum(), torch.tensor(3.0), atol=1e-5)  # mass kept (away from edges)
    assert blurred[0, 4, 4] < 1.0 and blurred[0, 4, 5] > 0
    assert torch.equal(gaussian_blur(img, 0.0), img)


# -- goal-reaching episodes --------------------------------------------------------------
class _Zero:
    name = "zero"
    imagined = None

    def reset(self, env, obs, goal_frame, rng):
        self.shape = env.action_space.shape

    def act(self, obs, info):
        return np.zeros(self.shape, np.float32)


def test_run_goal_episodes_common_random_numbers_and_gifs(tmp_path):
    make = lambda: make_goal_env("reacher", {}, SIZE)  # noqa: E731
    rand = run_goal_episodes(make, RandomController(), episodes=2, seed=3, steps=5, gif_dir=tmp_path)
    again = run_goal_episodes(make, RandomController(), episodes=2, seed=3, steps=5)
    zero = run_goal_episodes(make, _Zero(), episodes=2, seed=3, steps=5)
    assert [e.reset_seed for e in rand] == [episode_reset_seed(3, k) for k in range(2)]
    assert [e.initial_distance for e in rand] == [e.initial_distance for e in zero]  # same starts
    assert [e.distances for e in rand] == [e.distances for e in again]  # seeded controller
    assert rand[0].distances != zero[0].distances
    assert all(e.steps == 5 and len(e.distances) == 5 for e in rand)
    assert all(e.success_threshold == 0.02 and e.final_distance == e.distances[-1] for e in rand)
    with Image.open(tmp_path / "random-ep000.gif") as im:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    assert len(frames) == 6  # reset + 5 steps
    # [observation | goal], labelled, each 32 px frame upscaled 4x to 128 px
    assert frames[0].shape == (CAPTION_HEIGHT + 4 * SIZE, 2 * 4 * SIZE + 1, 3)
    (o0, o1), (g0, g1) = panel_columns([SIZE, SIZE], 4)
    # the caption band holds text: its pixels are not all the background, and the
    # observation's caption (with a step counter) differs from frame to frame
    band = frames[0][:CAPTION_HEIGHT]
    assert np.any(band[:, o0:o1] != CAPTION_BG) and np.any(band[:, g0:g1] != CAPTION_BG)
    assert not np.array_equal(frames[1][:CAPTION_HEIGHT, o0:o1], band[:, o0:o1])
    s = summarize_goal_episodes(rand + zero, thresholds=[0.5])
    assert list(s) == ["random", "zero"] and s["random"]["n"] == 2
    assert s["zero"]["final_distance"]["mean"] == pytest.approx(np.mean([e.final_distance for e in zero]))
    assert 0.0 <= s["random"]["success_rate@0.5"] <= 1.0


def test_goal_panel_labels_and_upscales_every_panel():
    rng = np.random.default_rng(0)
    real, imagined, goal = (rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3))
    assert [gif_scale(s, s) for s in (32, 64, 128)] == [4, 3, 3]  # >= 128 px, >= 3x
    frame = goal_panel(real, goal, imagined, step=7)
    assert frame.shape == (CAPTION_HEIGHT + 4 * SIZE, 3 * 4 * SIZE + 2, 3)
    columns = panel_columns([SIZE] * 3, 4)
    for (x0, x1), image in zip(columns, (real, imagined, goal)):
        np.testing.assert_array_equal(frame[CAPTION_HEIGHT:, x0:x1][::4, ::4], image)
    captions = [frame[:CAPTION_HEIGHT, x0:x1] for x0, x1 in columns]
    assert all(np.any(c != CAPTION_BG) for c in captions)
    # the same panels with another step: only the observation's caption changes
    other = goal_panel(real, goal, imagined, step=8)
    x0, x1 = columns[0]
    assert not np.array_equal(other[:CAPTION_HEIGHT, x0:x1], captions[0])
    np.testing.assert_array_equal(other[:, x1:], frame[:, x1:])
    # a goal image of another size is resized to the frame's; no imagined panel
    two = goal_panel(real, np.zeros((50, 70, 3), np.uint8), scale=2)
    assert two.shape == (CAPTION_HEIGHT + 2 * SIZE, 2 * 2 * SIZE + 1, 3)


def test_evaluation_env_drops_collection_only_kwargs(model_run_dir):
    """A model trained on a dataset collected with init_pose="random" is still evaluated
    from the env's home pose; its other env kwargs are kept."""
    from types import SimpleNamespace

    from visfore.planning.plan import PlanConfig, _resolve_env

    assert evaluation_env_kwargs({"init_pose": "random", "ctrl_cost_weight": 0.5}) == {"ctrl_cost_weight": 0.5}
    assert evaluation_env_kwargs(None) == {}
    real = load_model_run(model_run_dir)
    attrs = {"env_id": "ReacherPlane-v0", "env_kwargs": {"init_pose": "random", "show_target": True}}
    fake = SimpleNamespace(config={"dataset": {"attrs": attrs}}, run_dir=model_run_dir, image_size=real.image_size)
    env_id, kwargs, size = _resolve_env(PlanConfig(model=str(model_run_dir)), fake)
    assert (env_id, kwargs, size) == ("ReacherPlane-v0", {"show_target": True}, real.image_size)
    home = make_goal_env(env_id, kwargs, size)
    try:
        home.reset(seed=3)
        u = home.unwrapped
        assert u.init_pose == "home"
        assert np.all(np.abs(u.data.qpos[:2] - u.init_qpos[:2]) <= u.init_qpos_noise + 1e-12)
    finally:
        home.close()


def test_make_goal_env_errors():
    with pytest.raises(VisforeError, match="unknown env"):
        make_goal_env("nope", {}, SIZE)
    with pytest.raises(VisforeError, match="not a goal-reaching env"):
        make_goal_env("hopper", {}, SIZE)
    with pytest.raises(VisforeError, match="sets obs_mode"):
        make_goal_env("reacher", {}, SIZE, obs_mode="pixels")
    env = make_goal_env("reacher", {"ctrl_cost_weight": 0.5}, (24, 40), success_threshold=0.05)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (24, 40, 3) and env.unwrapped.success_threshold == 0.05
    env.close()


def test_oracle_cem_reduces_the_distance():
    """A real physics check: CEM on the true simulator brings the key points much closer
    to the target than random actions, on the same episodes."""
    make = lambda: make_goal_env("reacher", {}, SIZE)  # noqa: E731
    cfg = CEMConfig(iterations=2, samples=60, elites=6, blocks=4, repeat=2)
    oracle = OracleCEMController(cfg, replan_every=2, cost="keypoints", cost_frames="all")
    planned = run_goal_episodes(make, oracle, episodes=2, seed=0, steps=25)
    rand = run_goal_episodes(make, RandomController(), episodes=2, seed=0, steps=25)
    for p, r in zip(planned, rand):
        assert p.initial_distance == r.initial_distance
        assert p.final_distance < 0.5 * p.initial_distance
        assert p.final_distance < 0.5 * r.final_distance
    assert oracle.imagined is not None and oracle.imagined.shape == (8, SIZE, SIZE, 3)


def test_oracle_rollout_matches_env_step():
    env = make_goal_env("reacher", {}, SIZE)
    obs, info = env.reset(seed=5)
    oracle = OracleCEMController(CEMConfig(iterations=1, samples=4, elites=2, blocks=2, repeat=2))
    oracle.reset(env, obs, env.unwrapped.render_goal(), np.random.default_rng(0))
    actions = np.random.default_rng(1).uniform(-1, 1, (1, 4, 2)).astype(np.float32)
    qpos = oracle.rollout_qpos(actions)[0]
    frames = oracle.render(qpos)
    for t in range(4):
        obs, *_ = env.step(actions[0, t].astype(np.float32))
        np.testing.assert_allclose(env.unwrapped.data.qpos, qpos[t], rtol=0, atol=1e-12)
        assert np.array_equal(frames[t], obs["pixels"])
    env.close()


def test_shrink_horizon_scores_the_episode_end():
    """With ``shrink_horizon`` the plans in the last T - 1 steps score only the steps left
    (their cost is taken at the episode's last step); without it every plan scores T."""
    cfg = CEMConfig(iterations=1, samples=4, elites=2, blocks=3, repeat=2)  # T = 6
    scored = {}
    for shrink in (False, True):
        oracle = OracleCEMController(cfg, replan_every=1, cost="keypoints", shrink_horizon=shrink)
        lengths = []
        cost = oracle._cost
        oracle._cost = lambda actions, lengths=lengths, cost=cost: (lengths.append(actions.shape[1]), cost(actions))[1]
        episodes = run_goal_episodes(
            lambda: make_goal_env("reacher", {}, SIZE, max_episode_steps=8), oracle, episodes=1, seed=0
        )
        assert episodes[0].steps == 8
        scored[shrink] = lengths
    assert scored[False] == [6] * 8
    assert scored[True] == [6, 6, 6, 5, 4, 3, 2, 1]
    assert oracle.imagined.shape == (1, SIZE, SIZE, 3)  # the last plan scored one step


# -- learned CEM -------------------------------------------------------------------------
def _learned_actions(run_dir: Path, seed: int) -> list[np.ndarray]:
    mr = load_model_run(run_dir)
    cfg = CEMConfig(iterations=2, samples=6, elites=2, blocks=2, repeat=2)
    ctrl = LearnedCEMController(mr, cfg, replan_every=2, cost_frames="all")
    env = make_goal_env("reacher", {}, SIZE)
    obs, info = env.reset(seed=0)
    ctrl.reset(env, obs, env.unwrapped.render_goal(), np.random.default_rng(seed))
    actions = []
    for _ in range(3):
        a = ctrl.act(obs, info)
        assert a.shape == (2,) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
        actions.append(a)
        obs, _, _, _, info = env.step(a)
    assert ctrl.plans == 2 and ctrl.imagined.shape == (4, SIZE, SIZE, 3)
    env.close()
    return actions


def test_learned_cem_same_seed_same_actions(model_run_dir):
    a = _learned_actions(model_run_dir, 11)
    b = _learned_actions(model_run_dir, 11)
    c = _learned_actions(model_run_dir, 12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_filter_frames_with_a_pixel_model_is_refused(model_run_dir):
    with pytest.raises(VisforeError, match="--filter-frames 5 needs a latent model; convlstm is a pixel model"):
        LearnedCEMController(
            load_model_run(model_run_dir), CEMConfig(iterations=1, samples=4, elites=2), filter_frames=5
        )


def test_learned_cem_batch_chunk_gives_the_same_costs(model_run_dir):
    mr = load_model_run(model_run_dir)
    cfg = CEMConfig(iterations=1, samples=6, elites=2, blocks=2, repeat=2)
    env = make_goal_env("reacher", {}, SIZE)
    obs, _ = env.reset(seed=0)
    goal = env.unwrapped.render_goal()
    actions = torch.rand(6, 4, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    costs = []
    for chunk in (0, 4):
        ctrl = LearnedCEMController(mr, cfg, batch_chunk=chunk)
        ctrl.reset(env, obs, goal, np.random.default_rng(0))
        costs.append(ctrl._cost(actions))
    assert costs[0].shape == (6,)
    torch.testing.assert_close(costs[0], costs[1])
    amp = LearnedCEMController(mr, cfg, amp=True)  # bfloat16 autocast on CPU
    amp.reset(env, obs, goal, np.random.default_rng(0))
    amp_costs = amp._cost(actions)
    assert amp_costs.dtype == torch.float32
    torch.testing.assert_close(amp_costs, costs[0], rtol=0.05, atol=1e-3)
    env.close()


def test_plan_cli_end_to_end(model_run_dir, tmp_path):
    out = tmp_path / "plan"
    result = _cli("plan", "--model", model_run_dir, "--env", "reacher", "--episodes", 2, "--steps", 4,
                  *SMALL_CEM, "--replan-every", 2, "--cost-frames", "all", "--device", "cpu",
                  "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("config.yaml", "episodes.csv", "episodes.json", "summary.json", "report.md",
                 "report.html", "distance.png"):  # fmt: skip
        assert (out / name).is_file(), name
    labels = ["learned-cem", "oracle-cem", "random"]
    gifs = sorted(p.name for p in (out / "gifs").iterdir())
    assert gifs == sorted(f"{c}-ep{k:03d}.gif" for c in labels for k in range(2))
    with Image.open(out / "gifs" / "learned-cem-ep000.gif") as im:  # observation | imagined | goal
        assert im.size == (3 * 4 * SIZE + 2, CAPTION_HEIGHT + 4 * SIZE) and im.n_frames == 5
    episodes = json.loads((out / "episodes.json").read_text())
    assert len(episodes) == 6 and {e["controller"] for e in episodes} == set(labels)
    # every controller saw the same initial states
    for k in range(2):
        starts = {e["initial_distance"] for e in episodes if e["episode"] == k}
        assert len(starts) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["controllers"]) == labels
    assert summary["controllers"]["random"]["n"] == 2
    assert summary["meta"]["budget"]["horizon"] == 4
    assert summary["meta"]["budget"]["shrink_horizon"] is True  # the default
    assert "--shrink-horizon" in summary["meta"]["command"]
    assert summary["meta"]["success_threshold"] == 0.02
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["command"] == "plan" and config["options"]["samples"] == 8
    report = (out / "report.md").read_text()
    assert "learned-cem" in report
    # the fixture's model: one epoch, no --time-budget
    assert "convlstm, context 2, trained 1 epoch (no time budget, device cpu) on " in report
    assert "2 of 2 per controller, 4 steps, seed 0" in report
    assert "learned-cem" in result.output  # the rich table
    rows = (out / "episodes.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("controller,episode,reset_seed")


def test_plan_with_a_goal_image(tmp_path):
    goal = tmp_path / "goal.png"
    Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(goal)
    assert load_goal_image(goal, (SIZE, SIZE)).shape == (SIZE, SIZE, 3)
    out = tmp_path / "plan"
    result = _cli("plan", "--env", "reacher", "--size", SIZE, "--controllers", "oracle,random",
                  "--goal", goal, "--episodes", 1, "--steps", 2, *SMALL_CEM, "--no-gifs",
                  "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["goal"] == str(goal) and not (out / "gifs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--goal", "missing.png"], "--goal missing.png does not exist"),
        (["--elites", "20", "--samples", "10"], "--elites 20 must be <= --samples 10"),
        (["--horizon", "16"], "--horizon 16 is not divisible by --repeat 3"),
        (["--replan-every", "20"], "--replan-every 20 must be <= the horizon"),
        (["--controllers", "learned,magic"], "unknown controller 'magic'"),
        (["--controllers", "learned"], "needs --model RUN"),
        (["--cost", "keypoints", "--translator", "missing-run"], "translator run missing-run is not a directory"),
        (["--action-scale", "0"], "--action-scale must be in (0, 1]"),
        (["--cost-frames", "some"], "--cost-frames must be one of final, all, got 'some'"),
        (["--execute", "median"], "--execute must be one of best, mean, got 'median'"),
        (["--episodes", "0"], "--episodes must be an integer"),
        (["--env", "hopper"], "not a goal-reaching env"),
    ],
)
def test_plan_bad_input(tmp_path, args, message):
    base = ["plan", "--env", "reacher", "--size", SIZE, "--controllers", "random", "--episodes", 1,
            "--steps", 1, "--out", tmp_path / "out", "--quiet"]  # fmt: skip
    if "--controllers" in args:
        i = base.index("--controllers")
        del base[i : i + 2]
    line = _one_error_line(_cli(*base, *args))
    assert message in line
    assert not (tmp_path / "out").exists()


def test_plan_bad_goal_file_and_model(tmp_path, model_run_dir):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    line = _one_error_line(_cli("plan", "--env", "reacher", "--controllers", "random", "--goal", bad,
                                "--out", tmp_path / "o", "--quiet"))  # fmt: skip
    assert "is not a readable image" in line
    line = _one_error_line(_cli("plan", "--model", tmp_path, "--out", tmp_path / "o2", "--quiet"))
    assert "not a train-model run directory" in line
    line = _one_error_line(_cli("plan", "--model", model_run_dir, "--size", 48, "--out", tmp_path / "o3", "--quiet"))
    assert "--size 48 differs from the model's frame size 32x32" in line
    line = _one_error_line(
        _cli("plan", "--model", model_run_dir, "--cost", "keypoints", "--out", tmp_path / "o4", "--quiet")
    )
    assert "--cost keypoints needs --translator RUN" in line


def test_goal_episode_row_has_no_distances():
    e = GoalEpisode("x", 0, 1, 2, 0.1, 0.05, False, -1.0, 0.01, distances=[0.2, 0.1])
    assert "distances" not in e.row() and e.to_dict()["distances"] == [0.2, 0.1]


def test_ctrl_c_keeps_finished_episodes(tmp_path, monkeypatch):
    from visfore.planning import plan as plan_mod

    calls = {"n": 0}
    original = RandomController.act

    def act(self, obs, info):
        calls["n"] += 1
        if calls["n"] > 3:  # episode 0 (3 steps) finishes, episode 1 is interrupted
            raise KeyboardInterrupt
        return original(self, obs, info)

    monkeypatch.setattr(RandomController, "act", act)
    out = tmp_path / "plan"
    config = plan_mod.PlanConfig(env="reacher", size=SIZE, controllers=("random",), episodes=3,
                                 steps=3, gifs=False, out=str(out), progress=False)  # fmt: skip
    with pytest.raises(KeyboardInterrupt) as excinfo:
        plan_mod.plan(config)
    assert str(excinfo.value) == f"wrote the report of 1 finished episodes to {out}"  # the CLI's one line
    episodes = json.loads((out / "episodes.json").read_text())
    assert [e["episode"] for e in episodes] == [0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["interrupted"] is True and summary["controllers"]["random"]["n"] == 1
    assert "(interrupted)" in (out / "report.md").read_text()


def test_plan_with_a_translator_keypoint_cost(model_run_dir, small_reacher_dataset, tmp_path):
    """--cost pixels+keypoints through a (tiny, one-epoch) visfore train-translator run."""
    from visfore.planning.costs import load_translator

    tr_dir = tmp_path / "translator"
    result = _cli("train-translator", "--data", small_reacher_dataset, "--out", tr_dir, "--epochs", 1,
                  "--channels", "8,16,16", "--hidden", "32", "--num-threads", 1, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    translator = load_translator(tr_dir, "cpu", "ReacherPlane-v0")
    kp = translator(torch.rand(3, 3, 48, 48))  # resized to the translator's 32x32
    assert kp.shape == (3, 4) and kp.dtype == torch.float32
    with pytest.raises(VisforeError, match="trained on ReacherPlane-v0 frames, not Reacher3D-v0"):
        load_translator(tr_dir, "cpu", "Reacher3D-v0")
    out = tmp_path / "plan"
    result = _cli("plan", "--model", model_run_dir, "--translator", tr_dir, "--cost", "pixels+keypoints",
                  "--controllers", "learned,oracle", "--episodes", 1, "--steps", 2, *SMALL_CEM,
                  "--no-gifs", "--device", "cpu", "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["translator"] == str(tr_dir)
    assert summary["meta"]["oracle_cost_resolved"] == "pixels+keypoints on final frame(s)"
    # a translator is trained on the dataset's states: the learned label says so
    assert set(summary["controllers"]) == {"learned-pixels+keypoints-cem-state-supervised", "oracle-cem"}
    assert summary["meta"]["state_supervised"] is True and summary["meta"]["keypoint_source"] == "translator"
    assert "(state-supervised)" in (out / "report.md").read_text()


# -- progress and report text --------------------------------------------------------------
class _RecordingProgress:
    """A progress bar that records what the pipeline tells it (rich's interface)."""

    def __init__(self):
        self.total = None
        self.advanced = 0
        self.descriptions = []  # (description, steps advanced when it was set)
        self.completed = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def add_task(self, description, total=None, **fields):
        self.total = total
        self.descriptions.append((description, self.advanced))
        return 0

    def update(self, task, *, description=None, completed=None, advance=None, **fields):
        if description is not None:
            self.descriptions.append((description, self.advanced))
        if completed is not None:
            self.completed.append(completed)
        self.advanced += advance or 0

    def advance(self, task, advance=1):
        self.advanced += advance


def test_plan_progress_counts_control_steps(tmp_path, monkeypatch):
    """One bar over every control step of every episode (episodes x controllers x
    steps), advanced after each env step, its description naming the episode."""
    from visfore.planning import plan as plan_mod

    bars = []
    monkeypatch.setattr(plan_mod, "step_progress", lambda enabled: bars.append(_RecordingProgress()) or bars[-1])
    config = plan_mod.PlanConfig(env="reacher", size=SIZE, controllers=("random",), episodes=2, steps=3,
                                 gifs=False, out=str(tmp_path / "plan"), progress=True)  # fmt: skip
    plan_mod.plan(config)
    (bar,) = bars
    assert bar.total == 2 * 3 and bar.advanced == 6
    assert bar.descriptions == [
        ("plan ReacherPlane-v0", 0),
        ("plan random episode 1/2", 0),
        ("plan random episode 2/2", 3),  # episode 1 advanced the bar once per step
    ]
    assert bar.completed == [3, 6]


def test_step_progress_is_a_rich_bar_or_nothing():
    from rich.progress import Progress

    from visfore.core.progress import NoProgress, step_progress

    assert isinstance(step_progress(False), NoProgress)
    bar = step_progress(True)
    assert isinstance(bar, Progress)
    task = bar.add_task("plan random episode 1/2", total=6)
    bar.advance(task)
    assert bar.tasks[0].completed == 1 and bar.tasks[0].total == 6


def test_model_budget_text_plural_and_no_time_budget():
    from types import SimpleNamespace

    from visfore.planning.plan import _model_budget

    def run(epoch, budget):
        dataset = {"num_episodes": 1, "num_rows": 13, "attrs": {"steps_per_episode": 12, "policy": "smooth"}}
        config = {"options": {"time_budget": budget, "device": "cpu"}, "dataset": dataset}
        return SimpleNamespace(model_name="cdna", context=2, epoch=epoch, config=config)

    assert _model_budget(run(1, None)) == (
        "cdna, context 2, trained 1 epoch (no time budget, device cpu) on 1 episode x 12 steps "
        '(13 frames, policy "smooth")'
    )
    assert "trained 40 epochs (time budget 55 min, device cpu)" in _model_budget(run(40, 55.0))
    assert "time budget 2.5 min" in _model_budget(run(2, 2.5))
    assert _model_budget(None) is None


def test_summary_rows_omit_the_std_of_one_episode():
    from visfore.planning.plan_report import _summary_rows

    def episode(k, d):
        return GoalEpisode("random", k, k, 3, d, d, False, -1.0, 0.01, initial_distance=0.2, success_threshold=0.02)

    one = summarize_goal_episodes([episode(0, 0.1234)])
    _, rows = _summary_rows(one, ())
    assert rows[0][1] == "1" and rows[0][3] == "0.123"  # no "± 0.000"
    two = summarize_goal_episodes([episode(0, 0.1), episode(1, 0.3)])
    _, rows = _summary_rows(two, ())
    assert rows[0][3] == "0.200 ± 0.141"  # sample std (ddof 1)
