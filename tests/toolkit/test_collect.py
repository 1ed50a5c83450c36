"""``visfore collect``: layout, provenance, row alignment, determinism, resume, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from datetime import datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

from visfore.core.errors import VisforeError
from visfore.data.collect import (
    EpisodeRunner,
    collect,
    episode_seeds,
)
from visfore.data.dataset import CHECKSUMS_KEY, DATA_KEYS, open_dataset
from visfore.data.policies import RandomPolicy, SmoothPolicy, make_policy

runner = CliRunner()

#: Options of the conftest's ``small_reacher_dataset`` (kept in sync by a test below).
SMALL_REACHER = dict(env="reacher", episodes=12, steps=12, size=32, seed=0, policy="smooth", workers=1)


def test_small_reacher_options_match_conftest(small_reacher_options):
    assert small_reacher_options == SMALL_REACHER


@pytest.fixture(scope="module")
def app():
    from visfore.cli.app import app

    return app


def small_args(out: Path, **overrides) -> list[str]:
    """CLI arguments of the shared small dataset's options, with overrides."""
    opts = {**SMALL_REACHER, **overrides}
    args = ["collect", "--out", str(out), "--quiet"]
    for key in ("env", "episodes", "steps", "size", "seed", "policy", "workers"):
        args += [f"--{key}", str(opts[key])]
    return args


def assert_same_dataset(a: Path, b: Path) -> None:
    da, db = open_dataset(a), open_dataset(b)
    np.testing.assert_array_equal(da.episode_ends, db.episode_ends)
    for key in DATA_KEYS:
        x, y = da.read(key), db.read(key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), key
    # the per-episode checksums too (a resumed collection writes the same ones)
    np.testing.assert_array_equal(da.group[CHECKSUMS_KEY][:], db.group[CHECKSUMS_KEY][:])


def snapshot(path: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``path`` (or the file itself) -> (mtime_ns, sha256)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}


# -- layout and provenance -------------------------------------------------------------
def test_cli_collect_writes_layout_and_provenance(app, tmp_path):
    out = tmp_path / "sub" / "r.zarr"
    result = runner.invoke(app, small_args(out, episodes=3, steps=6))
    assert result.exit_code == 0, result.output
    assert "collected 3 episodes" in result.stdout and str(out) in result.stdout

    ds = open_dataset(out)
    assert ds.num_episodes == 3
    np.testing.assert_array_equal(ds.episode_ends, [7, 14, 21])
    assert ds.episode_ends.dtype == np.int64
    expected = {
        "pixels": ((21, 32, 32, 3), np.uint8),
        "state": ((21, ds.state_dim), np.float32),
        "action": ((21, 2), np.float32),
        "reward": ((21,), np.float32),
        "terminated": ((21,), np.bool_),
        "truncated": ((21,), np.bool_),
    }
    for key, (shape, dtype) in expected.items():
        array = ds.read(key)
        assert array.shape == shape and array.dtype == dtype, key
    # Compression: lossless zstd, one chunk = one whole episode of frames.
    pixels = ds.array("pixels")
    assert pixels.chunks == (7, 32, 32, 3)
    assert [type(c).__name__ for c in pixels.compressors] == ["ZstdCodec"]
    assert ds.size_on_disk() < ds.read("pixels").nbytes

    attrs = ds.attrs
    assert attrs["env_id"] == "ReacherPlane-v0"
    assert attrs["env_kwargs"] == {}
    assert attrs["obs_mode"] == "state+pixels"
    assert "reward_mode" in attrs
    assert attrs["frame_size"] == [32, 32]
    assert attrs["steps_per_episode"] == 6
    assert attrs["episodes_requested"] == 3
    assert attrs["policy"]["name"] == "smooth"
    assert {"theta", "sigma"} <= set(attrs["policy"])
    assert attrs["seed"] == 0 and "SeedSequence" in attrs["seeding"]
    assert {"visfore", "visfore-envs", "gymnasium", "mujoco", "numpy", "zarr"} <= set(attrs["versions"])
    assert datetime.fromisoformat(attrs["created"]).utcoffset().total_seconds() == 0
    assert attrs["command"].startswith("visfore collect --out ") and "--env reacher --episodes 3" in attrs["command"]
    assert "row_convention" in attrs


def test_row_alignment_and_padding(small_reacher_dataset):
    """Row t+1 is the frame after applying the stored action t to the env at row t."""
    from visfore.data.envs import make_env

    ds = open_dataset(small_reacher_dataset)
    attrs = ds.attrs
    steps = attrs["steps_per_episode"]
    env = make_env(
        attrs["env_id"],
        size=attrs["frame_size"][0],
        max_episode_steps=steps,
        env_kwargs=attrs["env_kwargs"],
    )
    try:
        moved = 0
        for index in (0, 5, ds.num_episodes - 1):
            ep = ds.episode(index)
            reset_seed, _ = episode_seeds(attrs["seed"], index)
            obs, _ = env.reset(seed=reset_seed)
            np.testing.assert_array_equal(obs["pixels"], ep.pixels[0])
            np.testing.assert_array_equal(obs["state"].astype(np.float32), ep.state[0])
            for t, action in enumerate(ep.action):
                obs, reward, terminated, truncated, _ = env.step(action)
                np.testing.assert_array_equal(obs["pixels"], ep.pixels[t + 1])
                np.testing.assert_array_equal(obs["state"].astype(np.float32), ep.state[t + 1])
                assert np.float32(reward) == ep.reward[t]
                assert (terminated, truncated) == (ep.terminated[t], ep.truncated[t])
                moved += not np.array_equal(ep.pixels[t], ep.pixels[t + 1])
            # Exactly `steps` actions unless the env terminated early.
            assert len(ep.action) == steps or ep.terminated[-1]
    finally:
        env.close()
    # The frames really change from step to step, so the comparison above means something.
    assert moved >= 0.8 * 3 * steps

    # Padding: the last row of every episode has NaN action and reward, no other row does.
    action, reward = ds.read("action"), ds.read("reward")
    last = ds.episode_ends - 1
    assert np.isnan(action[last]).all() and np.isnan(reward[last]).all()
    mask = np.ones(ds.num_rows, dtype=bool)
    mask[last] = False
    assert not np.isnan(action[mask]).any() and not np.isnan(reward[mask]).any()
    assert not ds.read("terminated")[last].any() and not ds.read("truncated")[last].any()
    assert np.abs(action[mask]).max() <= 1.0


# -- determinism -----------------------------------------------------------------------
def test_workers_two_equals_workers_one(small_reacher_dataset, tmp_path):
    out = tmp_path / "w2.zarr"
    summary = collect(out=out, progress=False, **{**SMALL_REACHER, "workers": 2})
    assert summary["episodes"] == SMALL_REACHER["episodes"]
    assert_same_dataset(out, small_reacher_dataset)


def test_interrupted_then_resumed_equals_straight_run(app, small_reacher_dataset, tmp_path, monkeypatch):
    out = tmp_path / "resumed.zarr"
    run = EpisodeRunner.run

    def interrupt_at_5(self, index):
        if index == 5:
            raise KeyboardInterrupt
        return run(self, index)

    monkeypatch.setattr(EpisodeRunner, "run", interrupt_at_5)
    result = runner.invoke(app, small_args(out))
    assert result.exit_code == 130
    # One line says it all: what was kept and how to continue.
    assert [line for line in result.stderr.splitlines() if line.startswith("interrupted")] == [result.stderr.strip()]
    assert f"interrupted; kept 5 of 12 episodes in {out}; run the same command again" in result.stderr
    assert open_dataset(out).num_episodes == 5  # finished episodes were kept
    monkeypatch.undo()

    # A shorter run first, then the full count: still the same data.
    assert collect(out=out, progress=False, **{**SMALL_REACHER, "episodes": 8})["episodes"] == 8
    result = runner.invoke(app, small_args(out))
    assert result.exit_code == 0, result.output
    assert "resumed after 8" in result.stdout
    assert_same_dataset(out, small_reacher_dataset)
    attrs = open_dataset(out).attrs
    assert attrs["episodes_requested"] == SMALL_REACHER["episodes"]
    assert [r["episodes_before"] for r in attrs["collect_runs"]] == [0, 5, 8]

    # Complete: a rerun says so and changes nothing.
    before = snapshot(out)
    result = runner.invoke(app, small_args(out))
    assert result.exit_code == 0 and "already holds 12 episodes" in result.stdout
    assert snapshot(out) == before


def test_interrupt_with_workers_keeps_finished_episodes(small_reacher_dataset, tmp_path, monkeypatch):
    """Ctrl-C in the main process of a worker pool: pool stopped, finished episodes kept."""
    from visfore.data.dataset import DatasetWriter

    out = tmp_path / "pool.zarr"
    append = DatasetWriter.append_episode
    calls = []

    def interrupt_after_4(self, **episode):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return append(self, **episode)

    monkeypatch.setattr(DatasetWriter, "append_episode", interrupt_after_4)
    with pytest.raises(KeyboardInterrupt):
        collect(out=out, progress=False, **{**SMALL_REACHER, "workers": 2})
    assert open_dataset(out).num_episodes == 4
    monkeypatch.undo()
    collect(out=out, progress=False, **{**SMALL_REACHER, "workers": 2})
    assert_same_dataset(out, small_reacher_dataset)


@pytest.fixture
def python_sigint_handler():
    """SIGINT raises KeyboardInterrupt in this test (xdist workers may ignore it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_write_never_corrupts_the_dataset(
    small_reacher_dataset, tmp_path, monkeypatch, python_sigint_handler
):
    """Ctrl-C right after a write's commit record lands after the write, not inside it."""
    import visfore.data.collect as collect_module
    from visfore.data.dataset import DatasetWriter

    monkeypatch.setattr(collect_module, "FLUSH_BYTES", 1)  # write after every episode
    flush = DatasetWriter.flush
    commits = []

    def flush_with_ctrl_c(self):
        ends = self._ends

        class Ends:
            """The real episode_ends array; Ctrl-C arrives right after the 3rd commit."""

            shape = property(lambda _: ends.shape)

            def resize(_, shape):
                ends.resize(shape)

            def __setitem__(_, rows, values):
                ends[rows] = values
                commits.append(1)
                if len(commits) == 3:
                    os.kill(os.getpid(), signal.SIGINT)

        self._ends = Ends()
        try:
            flush(self)
        finally:
            self._ends = ends

    monkeypatch.setattr(DatasetWriter, "flush", flush_with_ctrl_c)
    out = tmp_path / "ctrl-c.zarr"
    with pytest.raises(KeyboardInterrupt):
        collect(out=out, progress=False, **SMALL_REACHER)
    monkeypatch.undo()
    ds = open_dataset(out)
    assert ds.num_episodes == 3
    np.testing.assert_array_equal(ds.episode_ends, [13, 26, 39])
    collect(out=out, progress=False, **SMALL_REACHER)
    assert_same_dataset(out, small_reacher_dataset)


def test_defer_sigint_delivers_after_the_block(python_sigint_handler):
    from visfore.data.collect import _defer_sigint

    done = []
    with pytest.raises(KeyboardInterrupt):
        with _defer_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("block finished")
    assert done == ["block finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_write_error_is_raised_and_earlier_episodes_kept(tmp_path, monkeypatch):
    from visfore.data.dataset import DatasetWriter

    append = DatasetWriter.append_episode
    calls = []

    def fail_third(self, **episode):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return append(self, **episode)

    monkeypatch.setattr(DatasetWriter, "append_episode", fail_third)
    out = tmp_path / "err.zarr"
    with pytest.raises(OSError, match="disk full"):
        collect(out=out, progress=False, **{**SMALL_REACHER, "episodes": 6, "steps": 3})
    assert open_dataset(out).num_episodes == 2


def test_resume_cuts_uncommitted_rows(small_reacher_dataset, tmp_path):
    """Rows written past episode_ends by a killed run are dropped on resume."""
    import zarr

    out = tmp_path / "killed.zarr"
    collect(out=out, progress=False, **{**SMALL_REACHER, "episodes": 4})
    group = zarr.open_group(str(out), mode="r+")
    for key in DATA_KEYS:  # half an episode of garbage, never committed
        array = group[f"data/{key}"]
        rows = array.shape[0]
        array.resize((rows + 6, *array.shape[1:]))
        array[rows:] = np.ones((6, *array.shape[1:]), dtype=array.dtype)
    sums = group[CHECKSUMS_KEY]  # and its checksums, written just before the commit
    sums.resize((5, *sums.shape[1:]))
    sums[4] = np.ones(sums.shape[1:], np.uint8)
    collect(out=out, progress=False, **SMALL_REACHER)
    assert_same_dataset(out, small_reacher_dataset)


# -- refusing to touch data ------------------------------------------------------------
@pytest.mark.parametrize(
    "override, option",
    [
        ({"policy": "random"}, "--policy"),
        ({"seed": 1}, "--seed"),
        ({"size": 64}, "--size"),
        ({"steps": 10}, "--steps"),
        ({"env": "reacher3d"}, "--env"),
    ],
)
def test_mismatched_resume_is_refused_untouched(app, small_reacher_dataset, tmp_path, override, option):
    out = tmp_path / "copy.zarr"
    shutil.copytree(small_reacher_dataset, out)
    before = snapshot(out)
    result = runner.invoke(app, small_args(out, episodes=20, **override))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "different" in lines[0]
    assert snapshot(out) == before


def test_mismatched_env_kwargs_is_refused(app, small_reacher_dataset, tmp_path):
    out = tmp_path / "copy.zarr"
    shutil.copytree(small_reacher_dataset, out)
    before = snapshot(out)
    kwargs = json.dumps({"reward_mode": "pixels"})
    result = runner.invoke(app, small_args(out, episodes=20) + ["--env-kwargs", kwargs])
    assert result.exit_code == 2, result.output
    assert "--env-kwargs" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "override, named",
    [
        ({"episodes": 0}, "--episodes"),
        ({"steps": -3}, "-3"),
        ({"size": 30}, "30"),
        ({"size": 2048}, "2048"),
        ({"workers": 0}, "--workers"),
        ({"seed": -1}, "-1"),
        ({"policy": "wander"}, "wander"),
        ({"env": "nosuchenv"}, "nosuchenv"),
    ],
)
def test_bad_input_exits_2_with_one_line(app, tmp_path, override, named):
    out = tmp_path / "bad.zarr"
    result = runner.invoke(app, small_args(out, **override))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], lines
    assert not out.exists()


def test_unknown_env_lists_valid_names(app, tmp_path):
    result = runner.invoke(app, small_args(tmp_path / "x.zarr", env="nosuchenv"))
    assert result.exit_code == 2
    for name in ("reacher", "reacher3d", "ReacherPlane-v0", "Reacher3D-v0"):
        assert name in result.stderr


@pytest.mark.parametrize("value", ["notapair", '{"broken json', "obs_mode=pixels", "no_such_kwarg=1"])
def test_bad_env_kwargs_exit_2(app, tmp_path, value):
    out = tmp_path / "bad.zarr"
    result = runner.invoke(app, small_args(out) + ["--env-kwargs", value])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("kind", ["dir", "file", "zarr"])
def test_out_that_is_not_a_visfore_dataset_is_untouched(app, tmp_path, kind):
    out = tmp_path / "other"
    if kind == "file":
        out.write_text("hello")
    elif kind == "dir":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        import zarr

        zarr.open_group(str(out), mode="w").attrs["hello"] = 1
    before = snapshot(out)
    result = runner.invoke(app, small_args(out))
    assert result.exit_code == 2, result.output
    assert str(out) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before


# -- episodes that end early, non-visfore envs -----------------------------------------
class _TerminatingEnv(gym.Env):
    """Tiny pixel env with a Box state that terminates after ``terminate_at`` steps."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None, width=8, height=8, terminate_at=3):
        self.render_mode = render_mode
        self.width, self.height, self.terminate_at = width, height, terminate_at
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def _obs(self):
        return np.array([self.x, self.t], dtype=np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, float(self.np_random.uniform(-1, 1))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.x += float(action[0])
        return self._obs(), self.x, self.t >= self.terminate_at, False, {}

    def render(self):
        value = int(np.clip(128 + 40 * self.x, 0, 255))
        return np.full((self.height, self.width, 3), value, dtype=np.uint8)


gym.register("VisforeTestTerminating-v0", entry_point=_TerminatingEnv)


def test_early_termination_is_recorded_truthfully(tmp_path):
    out = tmp_path / "term.zarr"
    summary = collect(
        env="VisforeTestTerminating-v0", episodes=3, steps=6, size=8, out=out, seed=3,
        policy="random", progress=False,
    )  # fmt: skip
    assert summary["frames"] == 3 * 4
    ds = open_dataset(out)
    assert ds.attrs["obs_mode"] == "state+render"
    np.testing.assert_array_equal(ds.episode_lengths, [4, 4, 4])
    for index in range(3):
        ep = ds.episode(index)
        assert ep.action.shape == (3, 1)
        np.testing.assert_array_equal(ep.terminated, [False, False, True])
        assert not ep.truncated.any()
        np.testing.assert_allclose(ep.state[1:, 0], ep.state[0, 0] + np.cumsum(ep.action[:, 0]), rtol=1e-5)


def test_collect_from_python_reports_summary(tmp_path):
    summary = collect(
        env="VisforeTestTerminating-v0", episodes=2, steps=2, size=8, out=tmp_path / "s.zarr",
        progress=False,
    )  # fmt: skip
    assert summary["episodes"] == 2 and summary["new_episodes"] == 2
    assert summary["frames"] == 6 and summary["frames_per_s"] > 0
    assert summary["already_complete"] is False and summary["resumed_from"] == 0
    again = collect(
        env="VisforeTestTerminating-v0", episodes=2, steps=2, size=8, out=tmp_path / "s.zarr",
        progress=False,
    )  # fmt: skip
    assert again["already_complete"] is True and again["new_episodes"] == 0


def test_python_api_raises_visfore_error(tmp_path):
    with pytest.raises(VisforeError, match="--size"):
        collect(env="reacher", episodes=1, steps=1, size=33, out=tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()


def test_policies_stay_in_bounds_and_smooth_is_correlated():
    space = gym.spaces.Box(np.array([-1.0, -2.0], np.float32), np.array([1.0, 0.5], np.float32), dtype=np.float32)
    lags = {}
    half_range = (space.high - space.low) / 2
    centre = (space.high + space.low) / 2
    for name, params in (("random", {}), ("smooth", {"scale": 1.0}), ("smooth-default", {})):
        policy = make_policy(name.split("-")[0], space, **params)
        policy.reset(np.random.default_rng(0))
        actions = np.stack([policy.act() for _ in range(4000)])
        assert actions.dtype == np.float32
        assert (actions >= space.low).all() and (actions <= space.high).all()
        centred = (actions - actions.mean(0)) / actions.std(0)
        lags[name] = float((centred[1:] * centred[:-1]).mean())
        if name == "smooth-default":
            # Default amplitude: within scale (0.3) of the half-range around the centre.
            assert (np.abs(actions - centre) <= 0.3 * half_range + 1e-6).all()
        else:
            # Full amplitude covers much of the box.
            assert (actions.std(0) > 0.35 * half_range).all()
    # OU lag-1 autocorrelation is 1 - theta (0.7 with the default theta 0.3).
    assert abs(lags["random"]) < 0.1
    assert lags["smooth"] > 0.6 and lags["smooth-default"] > 0.6
    assert isinstance(make_policy("random", space), RandomPolicy)
    assert isinstance(make_policy("smooth", space, theta=0.5), SmoothPolicy)


def test_policy_is_reproducible_from_its_rng():
    space = gym.spaces.Box(-1, 1, (3,), dtype=np.float32)
    runs = []
    for _ in range(2):
        policy = make_policy("smooth", space)
        policy.reset(np.random.default_rng(42))
        runs.append(np.stack([policy.act() for _ in range(20)]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_make_policy_rejects_bad_input():
    space = gym.spaces.Box(-1, 1, (2,), dtype=np.float32)
    with pytest.raises(VisforeError, match="wander"):
        make_policy("wander", space)
    with pytest.raises(VisforeError, match="theta"):
        make_policy("smooth", space, theta=0.0)
    with pytest.raises(VisforeError, match="scale=1.5"):
        make_policy("smooth", space, scale=1.5)
    with pytest.raises(VisforeError):
        make_policy("random", gym.spaces.Discrete(3))
    with pytest.raises(VisforeError, match="bounded"):
        make_policy("random", gym.spaces.Box(-np.inf, np.inf, (2,)))


def test_smooth_min_scale_draws_each_episodes_amplitude_log_uniformly():
    """With min_scale, every episode keeps one amplitude from [min_scale, scale], drawn
    from the episode's rng after u_0: the first action is u_0 at that amplitude, and a
    policy without min_scale is unchanged (same u_0, amplitude scale)."""
    space = gym.spaces.Box(-1, 1, (2,), dtype=np.float32)
    plain = make_policy("smooth", space)
    ranged = make_policy("smooth", space, min_scale=0.01)
    assert "min_scale" not in plain.describe() and ranged.describe()["min_scale"] == 0.01
    amplitudes = []
    for seed in range(400):
        plain.reset(np.random.default_rng(seed))
        ranged.reset(np.random.default_rng(seed))
        a, b = plain.act(), ranged.act()
        amplitudes.append(ranged.episode_scale)
        np.testing.assert_allclose(b, a / 0.3 * ranged.episode_scale, rtol=1e-5, atol=1e-7)
        steps = np.stack([ranged.act() for _ in range(30)])
        assert (np.abs(steps) <= ranged.episode_scale + 1e-6).all()
    logs = np.log(amplitudes)
    assert min(amplitudes) >= 0.01 and max(amplitudes) <= 0.3
    # log-uniform: the log amplitudes are uniform on [log 0.01, log 0.3] (mean at the middle)
    assert abs(logs.mean() - np.log(np.sqrt(0.01 * 0.3))) < 0.15
    assert np.mean(np.array(amplitudes) < np.sqrt(0.01 * 0.3)) == pytest.approx(0.5, abs=0.08)
    with pytest.raises(VisforeError, match=r"min_scale=0.5 must be in \(0, scale=0.3\]"):
        make_policy("smooth", space, min_scale=0.5)
    with pytest.raises(VisforeError, match="min_scale=0"):
        make_policy("smooth", space, min_scale=0)


def test_cli_policy_kwargs_reach_the_policy_and_the_provenance(app, tmp_path):
    out = tmp_path / "slow.zarr"
    result = runner.invoke(app, small_args(out) + ["--policy-kwargs", "min_scale=0.02,theta=0.5"])
    assert result.exit_code == 0, result.output
    attrs = open_dataset(out).attrs
    assert attrs["policy"] == {
        "name": "smooth",
        "theta": 0.5,
        "sigma": 0.3,
        "scale": 0.3,
        "min_scale": 0.02,
        "process": "ornstein-uhlenbeck",
    }
    assert "--policy-kwargs" in attrs["collect_runs"][-1]["command"]
    for value, message in (
        ("wobble=1", "bad parameters for policy 'smooth'"),
        ("min_scale=2", "min_scale=2"),
        ("notapair", "--policy-kwargs 'notapair' is not key=value"),
    ):
        bad = tmp_path / "bad.zarr"
        result = runner.invoke(app, small_args(bad) + ["--policy-kwargs", value])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert not bad.exists()


def test_multi_view_frames_are_collected_side_by_side(tmp_path):
    """``--env-kwargs views=default+side`` stores (size, 2 x size) frames equal to the env's
    two views, and the dataset's frame_size says so."""
    import gymnasium as gym

    import visfore_envs  # noqa: F401

    out = tmp_path / "mv.zarr"
    kwargs = {"views": "default+side", "init_pose": "random", "show_target": False}
    collect(env="TargetHumanoid-v0", episodes=2, steps=2, size=16, out=out, env_kwargs=kwargs, progress=False)
    ds = open_dataset(out)
    assert ds.attrs["frame_size"] == [16, 32]
    pixels = ds.read("pixels")
    assert pixels.shape == (6, 16, 32, 3)
    state = ds.read("state")
    env = gym.make("TargetHumanoid-v0", width=16, height=16, render_mode="rgb_array", **kwargs)
    env.reset(seed=0)
    nq = 14
    base = env.unwrapped
    base.set_state(state[0, :nq].astype(np.float64), state[0, nq : 2 * nq].astype(np.float64))
    frame = base.render()
    np.testing.assert_array_equal(frame, pixels[0])  # the env's two views, left to right
    assert not np.array_equal(frame[:, :16], frame[:, 16:])  # two different cameras
    env.close()
