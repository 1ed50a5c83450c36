"""``--ray`` (visfore.core.ray_backend) on a real local Ray instance: ``collect``, ``evaluate`` and
``train-eval-all`` give the same results as local runs with the same seed, a worker that dies
is replaced and its episode re-run, and without Ray ``--ray`` is one line and exit 2.

One Ray (2 CPUs, ~100 MB object store) is started for the module; the commands find it
initialised and reuse it (as in a notebook). Its workers get this directory on PYTHONPATH
(test-module functions are sent by reference) and the crash hook's marker file
(``VISFORE_RAY_TEST_CRASH``) in their environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from visfore.cli.ray import RayCommand, RayOption
from visfore.core import ray_backend as rb
from visfore.core.errors import VisforeError
from visfore.reports import comparison_report as cr
from visfore.rl import evaluate as ev

pytestmark = pytest.mark.xdist_group("ray")
ray = pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent
runner = CliRunner()
#: The tiny collection: 4 episodes of 5 actions at 16x16 (4 x 6 rows).
COLLECT = ["--env", "reacher", "--episodes", "4", "--steps", "5", "--size", "16", "--seed", "3", "-q"]


def _app():
    from visfore.cli.app import app

    return app


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray with 2 CPUs and no GPU for the module; yields the crash hook's marker file."""
    if ray.is_initialized():
        ray.shutdown()
    marker = tmp_path_factory.mktemp("ray") / "crash-marker"
    with pytest.MonkeyPatch.context() as mp:  # inherited by Ray's processes at start
        mp.setenv(rb.TEST_CRASH_ENV, str(marker))
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=100 << 20,
                 log_to_driver=False, logging_level="error")  # fmt: skip
    yield marker
    ray.shutdown()


def _arrays(path: Path) -> dict[str, tuple]:
    """Every array of a Zarr group: name -> (values, dtype, chunks)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {name: (np.asarray(a[...]), a.dtype, a.chunks)
            for name, a in group.members(max_depth=None) if isinstance(a, zarr.Array)}  # fmt: skip


def _attrs(path: Path) -> dict:
    import zarr

    return dict(zarr.open_group(str(path), mode="r").attrs)


#: attrs that record when and how a run was made, not what it holds.
RUN_TIME_ATTRS = ("created", "command", "collect_runs")


def assert_same_dataset(a: Path, b: Path) -> None:
    arrays_a, arrays_b = _arrays(a), _arrays(b)
    assert sorted(arrays_a) == sorted(arrays_b)
    assert {"data/pixels", "data/state", "data/action", "data/reward", "meta/episode_ends"} <= set(arrays_a)
    for name, (values, dtype, chunks) in arrays_a.items():
        other, other_dtype, other_chunks = arrays_b[name]
        assert dtype == other_dtype and chunks == other_chunks and values.shape == other.shape, name
        # bit for bit (NaN padding rows included)
        assert values.tobytes() == other.tobytes(), name
    attrs_a, attrs_b = _attrs(a), _attrs(b)
    assert {k: v for k, v in attrs_a.items() if k not in RUN_TIME_ATTRS} == {
        k: v for k, v in attrs_b.items() if k not in RUN_TIME_ATTRS
    }


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    result = runner.invoke(_app(), ["collect", *COLLECT, "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


# -- collect -----------------------------------------------------------------------------------
def test_collect_on_ray_equals_local(ray_cluster, local_dataset, tmp_path):
    out = tmp_path / "ray.zarr"
    result = runner.invoke(_app(), ["collect", *COLLECT, "--out", str(out), "--ray", "local", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "collected 4 episodes, 24 frames" in result.stdout
    assert_same_dataset(local_dataset, out)
    assert np.array_equal(_arrays(out)["meta/episode_ends"][0], [6, 12, 18, 24])
    (record,) = _attrs(out)["collect_runs"]
    assert record["workers"] == 2
    assert record["ray"] == {"address": "local", "nodes": 1, "cpus": 2, "gpus": 0}
    assert record["command"].endswith("--workers 2 --ray local")
    assert ray.is_initialized()  # an instance found running is left running

    # rerunning continues (here: nothing to do), as locally
    result = runner.invoke(_app(), ["collect", *COLLECT, "--out", str(out), "--ray", "local"])
    assert result.exit_code == 0 and "already holds 4 episodes" in result.stdout


def test_lost_worker_is_replaced_and_its_episode_rerun(ray_cluster, local_dataset, tmp_path):
    """The actor that gets episode 2 kills its own process (os._exit) on the first try;
    Ray restarts it and re-runs the episode: exactly 4 episodes, equal to the local run."""
    ray_cluster.write_text("crash 2\n")
    out = tmp_path / "crash.zarr"
    result = runner.invoke(_app(), ["collect", *COLLECT, "--out", str(out), "--ray", "local", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert ray_cluster.read_text().strip() == "crashed 2"  # the worker did die
    assert_same_dataset(local_dataset, out)


def test_ctrl_c_on_ray_keeps_finished_episodes_and_frees_the_workers(ray_cluster, local_dataset, tmp_path, monkeypatch):
    from visfore.data.collect import collect
    from visfore.data.dataset import DatasetWriter, open_dataset

    append = DatasetWriter.append_episode
    calls: list[int] = []

    def interrupt_after_2(self, **episode):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return append(self, **episode)

    monkeypatch.setattr(DatasetWriter, "append_episode", interrupt_after_2)
    out = tmp_path / "ctrl-c.zarr"
    options = dict(env="reacher", episodes=4, steps=5, size=16, seed=3, progress=False)
    with pytest.raises(KeyboardInterrupt):
        collect(out=out, ray="local", workers=2, **options)
    monkeypatch.undo()
    assert open_dataset(out).num_episodes == 2
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # the actors are killed: their CPUs come back
    assert ray.available_resources().get("CPU", 0) == 2
    # continued locally: the same dataset as an uninterrupted local run
    summary = collect(out=out, workers=1, **options)
    assert summary["resumed_from"] == 2 and summary["new_episodes"] == 2
    assert_same_dataset(local_dataset, out)
    runs = _attrs(out)["collect_runs"]
    assert runs[0]["ray"]["cpus"] == 2 and runs[0]["workers"] == 2 and "ray" not in runs[1]


# -- evaluate ----------------------------------------------------------------------------------
@pytest.fixture
def fake_policy_run(monkeypatch, tmp_path):
    """The fake Pendulum policy run of test_evaluate.py behind ``visfore evaluate RUN``."""
    import test_evaluate as te

    monkeypatch.setattr(ev, "_perturbation_keys", lambda env_id: te.FAKE_KEYS)
    monkeypatch.setattr(ev, "_resolve_key", te._fake_resolve)
    monkeypatch.setattr(ev, "load_run", te.fake_loader)  # module-level: Ray workers import it
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return run_dir


def test_evaluate_on_ray_equals_local(ray_cluster, fake_policy_run, tmp_path):
    args = ["evaluate", str(fake_policy_run), "--perturb", "0.5-1.5", "--points", "3",
            "--params", "gravity,pole.mass", "--episodes", "2", "--seeds", "0,1", "-q"]  # fmt: skip
    local = runner.invoke(_app(), [*args, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    on_ray = runner.invoke(_app(), [*args, "--out", str(tmp_path / "ray"), "--ray", "local"])
    assert on_ray.exit_code == 0, on_ray.output
    a = json.loads((tmp_path / "local" / "summary.json").read_text())
    b = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert a["cells"] == b["cells"] and len(a["cells"]) == 7
    ep_a = (tmp_path / "local" / "episodes.csv").read_text()
    ep_b = (tmp_path / "ray" / "episodes.csv").read_text()
    assert ep_a == ep_b and len(ep_a.splitlines()) == 1 + 7 * 2 * 2
    assert b["meta"]["ray"] == {"address": "local", "nodes": 1, "cpus": 2, "gpus": 0}
    assert b["meta"]["workers"] == 2 and a["meta"]["ray"] is None
    assert b["meta"]["episodes_run"] == a["meta"]["episodes_run"] == 5 * 2 * 2  # 1.0 cells reuse nominal


# -- train-eval-all ----------------------------------------------------------------------------
def test_train_eval_all_on_ray_matches_local(ray_cluster, small_reacher_dataset, tmp_path):
    from test_train_eval_all import write_sweep

    config = write_sweep(tmp_path / "tiny.yaml", small_reacher_dataset, models=("convlstm",), seeds=(0, 1))
    args = ["train-eval-all", "--config", str(config), "--quiet"]
    local = runner.invoke(_app(), [*args, "--out-dir", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    on_ray = runner.invoke(_app(), [*args, "--out-dir", str(tmp_path / "ray"), "--ray", "local"])
    assert on_ray.exit_code == 0, on_ray.output
    assert "2/2 configurations finished" in on_ray.output
    rows_a = cr.read_csv(tmp_path / "local" / "train-eval-all-tiny" / "comparison.csv")
    rows_b = cr.read_csv(tmp_path / "ray" / "train-eval-all-tiny" / "comparison.csv")
    assert [r["run"] for r in rows_b] == [r["run"] for r in rows_a] == ["convlstm-seed0", "convlstm-seed1"]
    assert list(rows_b[0]) == list(rows_a[0]) == list(cr.ROW_FIELDS)
    for a, b in zip(rows_a, rows_b):  # same seed, one CPU thread: the same training
        assert b["status"] == "ok"
        for key in ("parameters", "epochs_completed", "global_step", "psnr", "ssim", "mse", "copy_last_psnr"):
            assert a[key] == b[key] != "", key
    sweep_dir = tmp_path / "ray" / "train-eval-all-tiny"
    for name in ("convlstm-seed0", "convlstm-seed1"):
        assert (sweep_dir / name / "metrics.json").is_file()
    meta = json.loads((sweep_dir / "comparison.json").read_text())["meta"]
    assert meta["ray"]["cpus"] == 2


def test_train_eval_all_gpu_config_on_a_cpu_cluster_writes_nothing(ray_cluster, small_reacher_dataset, tmp_path):
    from test_train_eval_all import write_sweep

    config = write_sweep(tmp_path / "gpu.yaml", small_reacher_dataset, models=("convlstm",), seeds=(0,))
    spec = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**spec, "device": "cuda"}))
    result = runner.invoke(_app(), ["train-eval-all", "--config", str(config), "--out-dir", str(tmp_path / "o"),
                                    "--ray", "local"])  # fmt: skip
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert (
        line
        == "error: device cuda asks for a GPU but the Ray cluster (local) has none; use device: cpu or a cluster with GPUs"
    )
    assert not (tmp_path / "o").exists()


# -- the backend -------------------------------------------------------------------------------
def _setup_token(offset: int) -> dict:
    return {"offset": offset, "token": os.urandom(8).hex(), "pid": os.getpid()}


def _slow_square(state: dict, item: int) -> tuple:
    if item == 99:
        raise VisforeError("item 99 is bad")
    time.sleep(0.05 * ((7 - item) % 4))  # later items often finish first
    return item * item + state["offset"], state["token"]


def test_worker_pool_orders_results_and_sets_up_once_per_worker(ray_cluster):
    with rb.WorkerPool(_setup_token, _slow_square, 2, (1,)) as pool:
        out = list(pool.imap(range(10)))
        assert [item for item, _ in out] == list(range(10))
        assert [value for _, (value, _) in out] == [i * i + 1 for i in range(10)]
        assert len({token for _, (_, token) in out}) == 2  # one setup per actor, not per task

        seen = []
        with pytest.raises(VisforeError, match="^item 99 is bad$"):  # the task's own error
            for item, _ in pool.imap([1, 2, 99, 3]):
                seen.append(item)
        assert seen == [1, 2]


def test_ordered_results_bounds_work_in_flight(ray_cluster):
    submitted: list[int] = []
    fetched: list[int] = []
    consumed: list[int] = []

    def submit(x):
        submitted.append(x)
        assert len(submitted) - len(fetched) <= 3  # never more than 3 without a result
        return ray.put(x * x)

    results = rb.ordered_results(submit, iter(range(8)), max_in_flight=3, on_result=lambda: fetched.append(1))
    for x, y in results:
        assert y == x * x
        assert len(submitted) == min(8, len(consumed) + 4)  # the next one is already out
        consumed.append(x)
    assert consumed == list(range(8))

    # stopping early cancels what is still out
    cancelled: list = []
    results = rb.ordered_results(lambda x: ray.put(x), range(100), max_in_flight=5, cancel=cancelled.append)
    assert next(results) == (0, 0)
    results.close()
    assert len(cancelled) == 5  # items 1..5


def test_bad_or_unreachable_address_is_one_line(monkeypatch, tmp_path):
    for value in ("nowhere", "host:99999", "http://x:1", ""):
        with pytest.raises(VisforeError, match="must be local, auto, HOST:PORT or ray://HOST:PORT"):
            rb.parse_address(value)
    assert rb.parse_address(" AUTO ") == "auto" and rb.parse_address("ray://10.0.0.5:10001") == "ray://10.0.0.5:10001"
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    t0 = time.monotonic()
    with pytest.raises(VisforeError, match=r"^--ray 127\.0\.0\.1:1: no Ray cluster reachable there"):
        rb.connect("127.0.0.1:1")  # nothing listens on port 1: refused at once
    assert time.monotonic() - t0 < rb.CONNECT_TIMEOUT_S + 1
    result = runner.invoke(_app(), ["collect", *COLLECT, "--out", str(tmp_path / "x.zarr"), "--ray", "a b"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --ray 'a b' must be")
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize("command", ["collect", "evaluate", "train-eval-all"])
def test_without_ray_the_option_is_one_line_and_writes_nothing(command, monkeypatch, tmp_path, fake_policy_run):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    config = tmp_path / "s.yaml"
    config.write_text("data: missing.zarr\nmodels: [convlstm]\n")
    args = {
        "collect": ["collect", *COLLECT, "--out", str(out / "d.zarr"), "--ray", "local"],
        "evaluate": ["evaluate", str(fake_policy_run), "--perturb", "0.5-1.5", "--out", str(out), "--ray", "auto"],
        "train-eval-all": ["train-eval-all", "--config", str(config), "--out-dir", str(out), "--ray", "local"],
    }[command]
    result = runner.invoke(_app(), args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == ["error: --ray needs Ray: pip install 'visfore[ray]'"]
    assert not out.exists() and list(fake_policy_run.iterdir()) == []


def test_bare_ray_flag_with_ray_command():
    """RayCommand lets ``--ray`` stand alone (= local), before another option or at the end."""
    app = typer.Typer()

    @app.command(cls=RayCommand)
    def main(ray: RayOption = None, n: int = 1) -> None:
        print(f"{ray!r} {n}")

    @app.command()
    def other() -> None:  # a second command, so the app keeps its command names
        pass

    for args, want in ((["main"], "None 1"), (["main", "--ray"], "'local' 1"), (["main", "--ray", "auto"], "'auto' 1"),
                       (["main", "--ray", "--n", "3"], "'local' 3"), (["main", "--n", "2", "--ray"], "'local' 2"),
                       (["main", "--ray", "10.0.0.5:6379"], "'10.0.0.5:6379' 1")):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.stdout.strip() == want, (args, result.output)
    plain = typer.Typer()
    plain.command()(main)
    plain.command()(other)
    assert runner.invoke(plain, ["main", "--ray"]).exit_code == 2  # Typer alone needs the value
