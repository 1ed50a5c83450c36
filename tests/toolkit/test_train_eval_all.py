"""``visfore train-eval-all`` (visfore.worldmodels.train_eval_all + visfore.reports.comparison_report): a tiny
3-model x 2-seed sweep end to end, failures, --continue, --dry-run, W&B (a fake module),
Ctrl-C and bad input. 32x32 reacher frames, tiny models, one epoch of a few clips."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from visfore.cli.app import app
from visfore.core.errors import VisforeError
from visfore.reports import comparison_report as cr
from visfore.worldmodels import train_eval_all as tea

#: Tiny model kwargs (32x32 frames): each run takes about a second on one CPU thread.
TINY_KWARGS = {
    "convlstm": {"encoder_channels": [4, 8], "lstm_channels": [8], "decoder_channels": [8, 4], "num_kernels": 1},
    "rnn_deconv": {"channels": [4, 4, 4], "bottleneck_channels": 2, "latent_dim": 16, "hidden_size": 16},
    "svg_lp": {"channels": [8, 8, 8], "bottleneck_channels": 4, "g_dim": 16, "z_dim": 4, "rnn_size": 16},
}
SHARED = dict(
    context=2,
    horizon=3,
    epochs=1,
    batch_size=8,
    clips_per_epoch=16,
    max_val_clips=12,
    epoch_val_clips=4,
    eval_batch_size=16,
    image_clips=1,
    eval_samples=2,
    val_fraction=0.25,
    lr="1e-3",
    device="cpu",
    num_threads=1,
)
REPORT_FILES = (
    "comparison.csv", "comparison.json", "comparison.md", "comparison.html", "psnr_per_step.png",
    "ssim_per_step.png", "action_sensitivity.png", "params_vs_psnr.png", "sweep.yaml",
)  # fmt: skip


def write_sweep(path: Path, data: Path, models=("convlstm", "rnn_deconv", "svg_lp"), seeds=(0, 1), **extra) -> Path:
    spec = {
        "name": "tiny",
        "data": str(data),
        **SHARED,
        "models": [{m: TINY_KWARGS[m]} for m in models],
        "seeds": list(seeds),
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["train-eval-all", *args])


@pytest.fixture(scope="module")
def sweep(small_reacher_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sweep")
    config = write_sweep(root / "tiny.yaml", small_reacher_dataset)
    result = invoke("--config", str(config), "--out-dir", str(root / "runs"), "--quiet")
    return root, config, root / "runs" / "train-eval-all-tiny", result


# -- a full sweep ----------------------------------------------------------------------------
def test_sweep_writes_runs_and_report(sweep):
    root, _, sweep_dir, result = sweep
    assert result.exit_code == 0, result.output
    run_dirs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert run_dirs == [
        "convlstm-seed0",
        "convlstm-seed1",
        "rnn_deconv-seed0",
        "rnn_deconv-seed1",
        "svg_lp-seed0",
        "svg_lp-seed1",
    ]
    for name in run_dirs:
        run = sweep_dir / name
        assert (run / "metrics.json").is_file() and (run / "config.yaml").is_file()
        assert (run / "checkpoints" / "last.pt").is_file()
        assert list((run / "logs").glob("events.out.tfevents.*"))  # TensorBoard, by the trainer
    for name in REPORT_FILES:
        assert (sweep_dir / name).is_file() and (sweep_dir / name).stat().st_size > 0, name
    for png in sweep_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(sweep_dir.rglob(".*.tmp-*"))
    # the rich table on stdout, aggregated over seeds
    for model in ("convlstm", "rnn_deconv", "svg_lp"):
        assert model in result.output
    assert "mean ± std" in result.output and "6/6 configurations finished" in result.output


def test_comparison_csv_and_json(sweep):
    _, _, sweep_dir, _ = sweep
    rows = cr.read_csv(sweep_dir / "comparison.csv")
    assert len(rows) == 6
    assert list(rows[0]) == list(cr.ROW_FIELDS)
    assert {r["status"] for r in rows} == {"ok"}
    assert sorted((r["model"], r["seed"]) for r in rows) == sorted(
        (m, s) for m in ("convlstm", "rnn_deconv", "svg_lp") for s in ("0", "1")
    )
    for r in rows:
        for key in (
            "parameters",
            "train_seconds",
            "samples_per_second",
            "inference_frames_per_second",
            "psnr",
            "ssim",
            "mse",
            "psnr_step1",
            "psnr_last",
            "copy_last_psnr",
            "mean_frame_psnr",
        ):
            assert r[key] != "" and float(r[key]) == float(r[key]), (r["run"], key)
        assert r["best_of_n_psnr"] != "" if r["model"] == "svg_lp" else r["best_of_n_psnr"] == ""
    data = json.loads((sweep_dir / "comparison.json").read_text())
    assert len(data["runs"]) == 6 and len(data["aggregate"]) == 3
    conv = next(g for g in data["aggregate"] if g["group"] == "convlstm")
    assert conv["ok"] == 2 and conv["seeds"] == [0, 1] and conv["psnr_std"] is not None
    assert len(conv["per_step"]["model_psnr"]["mean"]) == 3
    assert data["runs"][0]["per_step"]["copy_last_psnr"] is not None


def test_html_is_self_contained(sweep):
    _, _, sweep_dir, _ = sweep
    html = (sweep_dir / "comparison.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count('src="data:image/png;base64,') == 4
    assert "http://" not in html and "https://" not in html and "<link" not in html and "<script" not in html
    md = (sweep_dir / "comparison.md").read_text()
    assert "| convlstm | 2/2 |" in md and "![psnr_per_step](psnr_per_step.png)" in md


def test_run_dirs_are_train_model_runs(sweep):
    from visfore.worldmodels.model_run import load_model_run

    _, _, sweep_dir, _ = sweep
    run = load_model_run(sweep_dir / "svg_lp-seed1")
    assert run.model_name == "svg_lp" and run.context == 2 and run.horizon == 3
    config = yaml.safe_load((sweep_dir / "svg_lp-seed1" / "config.yaml").read_text())
    assert config["options"]["seed"] == 1 and config["options"]["lr"] == 1e-3
    assert config["options"]["model_kwargs"] == TINY_KWARGS["svg_lp"]


def test_continue_skips_finished_runs(sweep, monkeypatch):
    _, config, sweep_dir, _ = sweep
    import visfore.worldmodels.training

    def never(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(visfore.worldmodels.training, "train_model", never)
    before = (sweep_dir / "convlstm-seed0" / "metrics.json").read_bytes()
    first = json.loads((sweep_dir / "comparison.json").read_text())["meta"]
    assert first["seconds"] > 0 and first["sessions"] == 1  # 6 tiny runs: about 1 s, less on a fast machine
    result = invoke("--config", str(config), "--out-dir", str(sweep_dir.parent), "--continue", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier, skipped") == 6
    assert (sweep_dir / "convlstm-seed0" / "metrics.json").read_bytes() == before
    # issue 19.6: the report keeps the total time of both sessions (it said 'time: 0 s')
    meta = json.loads((sweep_dir / "comparison.json").read_text())["meta"]
    assert meta["sessions"] == 2 and meta["created"] == first["created"]
    assert meta["seconds"] == pytest.approx(first["seconds"] + meta["session_seconds"])
    assert meta["session_seconds"] < first["seconds"]
    assert f"**time:** {meta['seconds']:.0f} s" in (sweep_dir / "comparison.md").read_text()
    rows = cr.read_csv(sweep_dir / "comparison.csv")
    assert len(rows) == 6 and {r["reused"] for r in rows} == {"True"} and {r["status"] for r in rows} == {"ok"}


# -- failures, --continue, Ctrl-C -----------------------------------------------------------
def test_failing_configuration_is_recorded_and_continue_retries_it(small_reacher_dataset, tmp_path, monkeypatch):
    import visfore.worldmodels.training

    real = visfore.worldmodels.training.train_model
    calls: list[str] = []

    def flaky(options):
        calls.append(Path(options["out"]).name)
        if options["model"] == "rnn_deconv" and options["seed"] == 0:
            raise RuntimeError("CUDA out of memory\nsecond line")
        return real(options)

    monkeypatch.setattr(visfore.worldmodels.training, "train_model", flaky)
    config = write_sweep(tmp_path / "s.yaml", small_reacher_dataset, models=("convlstm", "rnn_deconv"), seeds=(0,))
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"), "--quiet")
    assert result.exit_code == 1, result.output
    sweep_dir = tmp_path / "runs" / "train-eval-all-tiny"
    rows = {r["run"]: r for r in cr.read_csv(sweep_dir / "comparison.csv")}
    assert rows["rnn_deconv-seed0"]["status"] == "failed"
    assert rows["rnn_deconv-seed0"]["error"] == "RuntimeError: CUDA out of memory"
    assert rows["convlstm-seed0"]["status"] == "ok" and (sweep_dir / "convlstm-seed0" / "metrics.json").is_file()
    assert "rnn_deconv-seed0: RuntimeError: CUDA out of memory" in (sweep_dir / "comparison.md").read_text()
    assert (sweep_dir / "comparison.html").is_file()

    calls.clear()
    monkeypatch.setattr(
        visfore.worldmodels.training,
        "train_model",
        lambda options: (calls.append(Path(options["out"]).name), real(options))[1],
    )
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"), "--continue", "--quiet")
    assert result.exit_code == 0, result.output
    assert calls == ["rnn_deconv-seed0"]
    assert {r["status"] for r in cr.read_csv(sweep_dir / "comparison.csv")} == {"ok"}


def test_continue_resumes_an_interrupted_run(small_reacher_dataset, tmp_path, monkeypatch):
    """Ctrl-C: the report of the finished runs is written, exit 130; --continue resumes the
    interrupted run from its checkpoint and trains the rest."""
    import visfore.worldmodels.training

    real = visfore.worldmodels.training.train_model

    def interrupt_second(options):
        if options["model"] == "rnn_deconv":
            raise KeyboardInterrupt
        return real(options)

    monkeypatch.setattr(visfore.worldmodels.training, "train_model", interrupt_second)
    config = write_sweep(
        tmp_path / "s.yaml", small_reacher_dataset, models=("convlstm", "rnn_deconv", "svg_lp"), seeds=(0,)
    )
    out = tmp_path / "runs"
    result = invoke("--config", str(config), "--out-dir", str(out), "--quiet")
    assert result.exit_code == 130, result.output
    sweep_dir = out / "train-eval-all-tiny"
    rows = cr.read_csv(sweep_dir / "comparison.csv")
    assert [(r["run"], r["status"]) for r in rows] == [("convlstm-seed0", "ok"), ("rnn_deconv-seed0", "interrupted")]
    assert "interrupted" in (sweep_dir / "comparison.md").read_text()
    assert (sweep_dir / "psnr_per_step.png").is_file() and not (sweep_dir / "svg_lp-seed0").exists()

    # a run stopped after its checkpoint (as train_model leaves it on Ctrl-C) is resumed
    seen: list[tuple[str, bool]] = []

    def record(options):
        seen.append((Path(options["out"]).name, options["resume"]))
        return real(options)

    (sweep_dir / "rnn_deconv-seed0").mkdir()  # a run that failed before its first checkpoint
    monkeypatch.setattr(visfore.worldmodels.training, "train_model", record)
    result = invoke("--config", str(config), "--out-dir", str(out), "--continue", "--quiet")
    assert result.exit_code == 0, result.output
    assert seen == [("rnn_deconv-seed0", False), ("svg_lp-seed0", False)]
    assert tea.run_state(sweep_dir / "svg_lp-seed0") == "done"
    (sweep_dir / "svg_lp-seed0" / "metrics.json").unlink()
    assert tea.run_state(sweep_dir / "svg_lp-seed0") == "resume"
    seen.clear()
    result = invoke("--config", str(config), "--out-dir", str(out), "--continue", "--quiet")
    assert result.exit_code == 0, result.output
    assert seen == [("svg_lp-seed0", True)]


# -- --dry-run, W&B ---------------------------------------------------------------------------
def test_dry_run_writes_nothing(small_reacher_dataset, tmp_path):
    config = write_sweep(
        tmp_path / "s.yaml", small_reacher_dataset, hyperparameters={"lr": ["1e-3", 3e-4], "batch_size": [4]}
    )
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "12 configurations" in result.output
    assert (
        "convlstm-lr0.001-batch_size4-seed0" in result.output and "svg_lp-lr0.0003-batch_size4-seed1" in result.output
    )
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


class FakeRun:
    def __init__(self, calls: list, kwargs: dict) -> None:
        self.calls, self.kwargs, self.summary, self.logged, self.finished = calls, kwargs, {}, [], False

    def log(self, values, step=None):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


def test_wandb_logs_each_run(small_reacher_dataset, tmp_path, monkeypatch):
    runs: list[FakeRun] = []
    fake = types.ModuleType("wandb")

    def init(**kwargs):
        run = FakeRun(runs, kwargs)
        runs.append(run)
        return run

    fake.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = write_sweep(
        tmp_path / "s.yaml",
        small_reacher_dataset,
        models=("convlstm",),
        seeds=(0, 1),
        wandb={"project": "test-project", "tags": ["ci"]},
    )
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"), "--wandb", "--quiet")
    assert result.exit_code == 0, result.output
    assert [r.kwargs["name"] for r in runs] == ["convlstm-seed0", "convlstm-seed1"]
    first = runs[0]
    assert first.kwargs["project"] == "test-project" and first.kwargs["group"] == "train-eval-all-tiny"
    assert first.kwargs["config"]["model"] == "convlstm" and first.kwargs["config"]["seed"] == 0
    assert first.kwargs["dir"].endswith("convlstm-seed0") and "ci" in first.kwargs["tags"]
    assert first.finished and first.logged and "epoch/val_psnr" in first.logged[0][1]
    assert isinstance(first.summary["final/model/psnr"], float)
    assert "final/copy_last_frame/psnr_step_01" in first.summary
    assert "final/action_sensitivity/psnr_drop_db" in first.summary


# -- bad input ----------------------------------------------------------------------------------
BAD_CASES = {
    "bad-yaml": ("models: [convlstm\nseeds: [0]\n", "not valid YAML"),
    "not-a-mapping": ("- convlstm\n", "must be a YAML mapping"),
    "unknown-model": ("data: DATA\nmodels: [convlstm, nosuchmodel]\n", "unknown model 'nosuchmodel'"),
    "unknown-option": ("data: DATA\nmodels: [convlstm]\nlearning_rate: 0.1\n", "unknown option 'learning_rate'"),
    "unknown-hyperparameter": ("data: DATA\nmodels: [convlstm]\nhyperparameters: {bogus: [1, 2]}\n", "unknown option 'bogus'"),
    "reserved-hyperparameter": ("data: DATA\nmodels: [convlstm]\nhyperparameters: {seed: [1, 2]}\n", "use seeds:"),
    "bad-value": ("data: DATA\nmodels: [convlstm]\nhorizon: 0\n", "--horizon must be >= 1"),
    "bad-seeds": ("data: DATA\nmodels: [convlstm]\nseeds: [0, -1]\n", "seeds:"),
    "no-models": ("data: DATA\nmodels: []\n", "models:"),
    "missing-data": ("data: DATA-missing.zarr\nmodels: [convlstm]\n", "does not exist"),
    "no-data": ("models: [convlstm]\n", "no data:"),
    "too-long-clips": ("data: DATA\nmodels: [convlstm]\ncontext: 2\nhorizon: 30\n", "longest episode"),
    "bad-model-kwargs": ("data: DATA\nmodels: [{convlstm: {no_such_kwarg: 1}}]\n", "cannot build model 'convlstm'"),
    "duplicate-model": ("data: DATA\nmodels: [convlstm, convlstm]\n", "appears twice"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(case, small_reacher_dataset, tmp_path):
    text, message = BAD_CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text.replace("DATA", str(small_reacher_dataset)))
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_missing_config_and_existing_sweep_dir(small_reacher_dataset, tmp_path):
    result = invoke("--config", str(tmp_path / "nope.yaml"), "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "not found" in result.stderr
    config = write_sweep(tmp_path / "s.yaml", small_reacher_dataset)
    (tmp_path / "runs" / "train-eval-all-tiny").mkdir(parents=True)
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "pass --resume" in result.stderr
    assert list((tmp_path / "runs" / "train-eval-all-tiny").iterdir()) == []
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"), "--name", "a/b")
    assert result.exit_code == 2 and "run name" in result.stderr


def test_wandb_without_the_package(small_reacher_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    config = write_sweep(tmp_path / "s.yaml", small_reacher_dataset)
    result = invoke("--config", str(config), "--out-dir", str(tmp_path / "runs"), "--wandb")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --wandb needs the wandb package (pip install wandb)"
    assert not (tmp_path / "runs").exists()


# -- expansion -----------------------------------------------------------------------------------
def test_expansion_precedence_and_names(small_reacher_dataset, tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(small_reacher_dataset),
                "epochs": 3,
                "lr": "1e-3",
                "model_kwargs": {"num_kernels": 1},
                "models": [
                    "convlstm",
                    {
                        "model": "convlstm",
                        "label": "convlstm-big",
                        "kwargs": {"num_kernels": 4},
                        "options": {"epochs": 5, "batch-size": 4},
                    },
                ],
                "hyperparameters": {"lr": [0.01, "3e-4"], "clip_stride": 2},
                "seeds": [3],
            },
            sort_keys=False,
        )
    )
    sweep = tea.load_sweep(config)
    assert [s.name for s in sweep.runs] == [
        "convlstm-lr0.01-clip_stride2-seed3",
        "convlstm-lr0.0003-clip_stride2-seed3",
        "convlstm-big-lr0.01-clip_stride2-seed3",
        "convlstm-big-lr0.0003-clip_stride2-seed3",
    ]
    first, big = sweep.runs[0], sweep.runs[3]
    assert (
        first.options["epochs"] == 3
        and first.options["lr"] == 0.01
        and first.options["model_kwargs"] == {"num_kernels": 1}
    )
    assert big.options["epochs"] == 5 and big.options["batch_size"] == 4 and big.options["lr"] == 3e-4
    assert big.options["model_kwargs"] == {"num_kernels": 4} and big.options["seed"] == 3
    assert big.options["clip_stride"] == 2 and big.label == "convlstm-big"
    assert sweep.shared["lr"] == 1e-3 and isinstance(sweep.shared["lr"], float)


def test_run_row_is_defensive():
    row = cr.run_row({"model": {"psnr": [20.0, 18.0], "mean": {"psnr": 19.0}}}, run="x", model="convlstm", seed=0)
    assert row["psnr"] == 19.0 and row["psnr_step1"] == 20.0 and row["psnr_last"] == 18.0
    assert row["ssim"] is None and row["foreground_psnr"] is None and row["action_sensitivity_db"] is None
    empty = cr.run_row(None, run="y", model="dna", status="failed", error="boom")
    assert empty["status"] == "failed" and empty["psnr"] is None
    groups = cr.aggregate([row, empty])
    assert [g["group"] for g in groups] == ["convlstm", "dna"]
    assert groups[0]["psnr_mean"] == 19.0 and groups[0]["psnr_std"] is None and groups[1]["ok"] == 0
    assert cr.pm(groups[1], "psnr") == "-"
    with pytest.raises(VisforeError):
        tea.load_sweep("/nonexistent/sweep.yaml")
