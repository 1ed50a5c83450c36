"""``visfore train-eval-all``: train and evaluate every configuration of a sweep, then compare.

A sweep is a YAML file::

    name: reacher                    # optional; default sweep name (else the file's stem)
    data: data/demo-reacher.zarr     # dataset (relative paths: from the working directory)
    # options shared by every run: any `visfore train-model` option (TrainConfig field,
    # underscores or dashes) except data, model, seed, out, name, resume and progress
    context: 2
    horizon: 10
    epochs: 12
    time_budget: 2.5                 # minutes of training per run
    models:                          # the grid: models ...
      - convlstm                     #   a registry name
      - cdna: {num_kernels: 10}      #   a name with its model kwargs
      - model: svg_lp                #   the long form: kwargs, per-model options, a label
        label: svg_lp-small          #   (labels must be unique; default: the model name)
        kwargs: {g_dim: 64}
        options: {lr: 0.0005}
    hyperparameters:                 # ... x every combination (product) of these ...
      lr: [0.001, 0.0003]
      model_kwargs.hidden_size: [64] #   a single model kwarg
    seeds: [0, 1]                    # ... x seeds
    wandb: {project: visfore}        # optional W&B settings for --wandb (project, entity,
                                     # group, tags, job_type)

Precedence for each run: ``TrainConfig`` defaults < shared options < the model's
``options`` < its hyperparameter combination < its seed; ``model_kwargs`` merge the same way.

Every configuration (model x hyperparameter combination x seed) is trained and evaluated
sequentially through :func:`visfore.worldmodels.training.train_model`, each in its own train-model
run directory ``OUT_DIR/train-eval-all-NAME/<label>[-<hp>]-seed<S>/`` (readable by
``visfore predict``). With ``--ray ADDRESS`` every configuration is a Ray task instead
(:mod:`visfore.core.ray_backend`; one CPU, ``num_threads`` CPUs, or one GPU for a ``cuda``
device, see :func:`ray_resources`), run in parallel as the cluster's resources allow;
results are recorded in configuration order, so the report has the same shape, and a
task whose worker died is retried from the run's last checkpoint. A configuration that
fails is recorded with its one-line error and the sweep goes on. ``comparison.csv`` / ``.json`` are rewritten after every run; at the end
(also after Ctrl-C, with the runs finished so far) the full comparison report is written
(:mod:`visfore.reports.comparison_report`) and an aggregated table printed.

``--continue`` reuses the sweep directory: a configuration whose run has ``metrics.json``
is skipped (its metrics go into the report), one with ``checkpoints/last.pt`` is resumed
(``train-model --resume``), and one that failed before its first checkpoint is deleted
and started again. The report's time (``meta.seconds`` of ``comparison.json``) is the
total over every session (``sessions`` counts them, ``session_seconds`` is the last one's;
``created`` stays the first session's), not only the last one's.

Bad input (invalid YAML, an unknown model or option, a bad value, a missing dataset, a
context + horizon longer than its episodes, an existing sweep directory without
``--continue``) is one ``error:`` line, exit 2, before anything is written. Exit codes
after a sweep: 0 all finished, 1 some configuration failed, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import re
import shlex
import shutil
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml
from rich.console import Console
from rich.markup import escape

from visfore.core import ray_backend, runs
from visfore.core.errors import VisforeError
from visfore.data import storage
from visfore.data.dataset import open_dataset
from visfore.reports import comparison_report as cr
from visfore.worldmodels import training
from visfore.worldmodels.config import TrainConfig, validate_config
from visfore_models import MODELS, build_model

log = logging.getLogger(__name__)

COMMAND = "train-eval-all"
SWEEP_FILE = "sweep.yaml"
#: train-model options a sweep sets itself (or that make no sense per run).
RESERVED_OPTIONS = ("data", "model", "seed", "out", "name", "resume", "progress")
#: Top-level sweep keys that are not train-model options.
SWEEP_KEYS = ("name", "description", "data", "models", "hyperparameters", "seeds", "wandb")
MODEL_ENTRY_KEYS = ("model", "label", "kwargs", "model_kwargs", "options")
WANDB_KEYS = ("project", "entity", "group", "tags", "job_type", "notes")
WANDB_MISSING = "--wandb needs the wandb package (pip install wandb)"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------------------
# the sweep specification
# ---------------------------------------------------------------------------------------
@dataclass
class ModelEntry:
    """One entry of ``models:``."""

    model: str
    label: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSpec:
    """One configuration of the sweep: a train-model run."""

    index: int
    name: str
    model: str
    label: str
    seed: int
    hyperparameters: dict[str, Any]
    options: dict[str, Any]  # every TrainConfig field given (without out/progress/resume)

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return dict(self.options.get("model_kwargs") or {})


@dataclass
class Sweep:
    """A parsed, validated sweep file."""

    path: Path
    name: Optional[str]
    description: Optional[str]
    data: str
    shared: dict[str, Any]
    models: list[ModelEntry]
    hyperparameters: dict[str, list[Any]]
    seeds: list[int]
    wandb: dict[str, Any]
    runs: list[RunSpec]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def _train_fields() -> dict[str, Any]:
    """TrainConfig field name -> its type (``Optional[X]`` unwrapped to ``X``), from the
    config's resolved annotations (:meth:`~visfore.core.config.ConfigBase.field_types`)."""
    out: dict[str, Any] = {}
    for name, tp in TrainConfig.field_types().items():
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        out[name] = args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp
    return out


def _norm_key(key: Any) -> str:
    return str(key).strip().replace("-", "_")


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string: numbers given as text become numbers for
    numeric options (fields typed ``float`` or ``int``, also inside ``Optional``), and an
    int becomes a float for a ``float`` field; anything else is left as it is."""
    if not isinstance(value, str):
        if isinstance(value, int) and not isinstance(value, bool) and tp is float:
            return float(value)
        return value
    text = value.strip()
    if tp is float:
        try:
            return float(text)
        except ValueError:
            return value
    if tp is int and re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return value


def _option_error(where: str, key: str, valid: list[str]) -> VisforeError:
    return VisforeError(f"unknown option {key!r} in {where}; valid: {', '.join(valid)}")


def _options(mapping: Any, where: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Validate a mapping of train-model options (names checked, numbers coerced)."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise VisforeError(f"{where} must be a mapping of train-model options")
    valid = sorted(k for k in fields if k not in RESERVED_OPTIONS)
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        k = _norm_key(key)
        if k in RESERVED_OPTIONS:
            hint = {"seed": "use seeds:", "model": "use models:", "data": "use data:"}.get(k, "the sweep sets it")
            raise VisforeError(f"option {k!r} cannot be set in {where} ({hint})")
        if k not in fields:
            raise _option_error(where, k, valid)
        if k == "model_kwargs" and value is not None and not isinstance(value, dict):
            raise VisforeError(f"model_kwargs in {where} must be a mapping")
        out[k] = _coerce(k, value, fields[k]) if k != "model_kwargs" else dict(value or {})
    return out


def _model_entries(value: Any, fields: dict[str, Any]) -> list[ModelEntry]:
    valid = ", ".join(sorted(MODELS))
    if not isinstance(value, list) or not value:
        raise VisforeError(f"models: must be a non-empty list of model names (valid: {valid})")
    entries: list[ModelEntry] = []
    for item in value:
        if isinstance(item, str):
            entry = ModelEntry(model=item, label=item)
        elif isinstance(item, dict) and "model" in item:
            unknown = sorted(set(map(str, item)) - set(MODEL_ENTRY_KEYS))
            if unknown:
                raise VisforeError(
                    f"unknown key(s) {', '.join(unknown)} in the models: entry of {item['model']!r}; "
                    f"valid: {', '.join(MODEL_ENTRY_KEYS)}"
                )
            kwargs = item.get("kwargs", item.get("model_kwargs")) or {}
            if not isinstance(kwargs, dict):
                raise VisforeError(f"kwargs of model {item['model']!r} must be a mapping")
            options = _options(item.get("options"), f"the options of model {item['model']!r}", fields)
            kwargs = {**options.pop("model_kwargs", {}), **kwargs}
            entry = ModelEntry(
                model=str(item["model"]),
                label=str(item.get("label") or item["model"]),
                kwargs=dict(kwargs),
                options=options,
            )
        elif isinstance(item, dict) and len(item) == 1:
            ((name, kwargs),) = item.items()
            if kwargs is not None and not isinstance(kwargs, dict):
                raise VisforeError(f"the kwargs of model {name!r} must be a mapping, got {kwargs!r}")
            entry = ModelEntry(model=str(name), label=str(name), kwargs=dict(kwargs or {}))
        else:
            raise VisforeError(
                f"bad models: entry {item!r}; give a model name, {{name: {{kwargs}}}} or "
                "{model: name, label: ..., kwargs: {...}, options: {...}}"
            )
        if entry.model not in MODELS:
            raise VisforeError(f"unknown model {entry.model!r}; valid: {valid}")
        if not _SAFE.sub("", entry.label) or _SAFE.search(entry.label):
            raise VisforeError(f"model label {entry.label!r} must be letters, digits, '.', '_' or '-'")
        if any(e.label == entry.label for e in entries):
            raise VisforeError(f"model {entry.label!r} appears twice in models:; give each entry a distinct label:")
        entries.append(entry)
    return entries


def _hyperparameters(value: Any, fields: dict[str, Any]) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise VisforeError("hyperparameters: must be a mapping of option -> list of values")
    valid = sorted(k for k in fields if k not in RESERVED_OPTIONS) + ["model_kwargs.<name>"]
    out: dict[str, list[Any]] = {}
    for key, values in value.items():
        k = _norm_key(key)
        if k.startswith("model_kwargs."):
            if not k[len("model_kwargs.") :]:
                raise VisforeError(f"hyperparameter {key!r} names no model kwarg")
            ann = None
        elif k in RESERVED_OPTIONS:
            raise VisforeError(f"option {k!r} cannot be a hyperparameter" + (" (use seeds:)" if k == "seed" else ""))
        elif k not in fields:
            raise _option_error("hyperparameters:", k, valid)
        else:
            ann = fields[k]
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise VisforeError(f"hyperparameter {k!r} has no value")
        if k == "model_kwargs" and not all(isinstance(v, dict) for v in values):
            raise VisforeError("hyperparameter 'model_kwargs' values must be mappings")
        out[k] = [_coerce(k, v, ann) for v in values]
    return out


def _seeds(value: Any) -> list[int]:
    if value is None:
        return [0]
    values = value if isinstance(value, list) else [value]
    seeds = []
    for v in values:
        v = _coerce("seed", v, int)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise VisforeError(f"seeds: must be a list of integers >= 0, got {value!r}")
        seeds.append(v)
    if not seeds or len(set(seeds)) != len(seeds):
        raise VisforeError(f"seeds: must be a non-empty list of distinct integers, got {value!r}")
    return seeds


def _slug(value: Any) -> str:
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    else:
        text = str(value)
    return _SAFE.sub("_", text).strip("_") or "x"


def run_name(label: str, hp: Mapping[str, Any], seed: int) -> str:
    """``<label>[-<key><value>...]-seed<S>``, e.g. ``cdna-lr0.001-seed0`` (unsafe
    characters become ``_``; ``model_kwargs.`` prefixes are dropped)."""
    parts = [label]
    for key, value in hp.items():
        short = key[len("model_kwargs.") :] if key.startswith("model_kwargs.") else key
        parts.append(f"{_SAFE.sub('_', short)}{_slug(value)}")
    parts.append(f"seed{seed}")
    return "-".join(parts)


def expand(
    shared: Mapping[str, Any],
    models: list[ModelEntry],
    hyperparameters: Mapping[str, list[Any]],
    seeds: list[int],
    data: str,
) -> list[RunSpec]:
    """Every configuration, model-major, then hyperparameter combinations, then seeds."""
    keys = list(hyperparameters)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(hyperparameters[k] for k in keys))]
    specs: list[RunSpec] = []
    for entry in models:
        for hp in combos:
            for seed in seeds:
                options = {k: v for k, v in shared.items() if k != "model_kwargs"}
                options.update({k: v for k, v in entry.options.items() if k != "model_kwargs"})
                kwargs = {**dict(shared.get("model_kwargs") or {}), **entry.kwargs}
                for key, value in hp.items():
                    if key == "model_kwargs":
                        kwargs.update(value)
                    elif key.startswith("model_kwargs."):
                        kwargs[key[len("model_kwargs.") :]] = value
                    else:
                        options[key] = value
                options.update(data=data, model=entry.model, seed=seed, model_kwargs=kwargs)
                specs.append(
                    RunSpec(
                        index=len(specs),
                        name=run_name(entry.label, hp, seed),
                        model=entry.model,
                        label=entry.label,
                        seed=seed,
                        hyperparameters=dict(hp),
                        options=options,
                    )
                )
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise VisforeError(f"two configurations share the run name {dupes[0]!r}; use distinct values or labels")
    return specs


def load_sweep(path: str | Path, *, data: str | Path | None = None) -> Sweep:
    """Read and validate a sweep file (no dataset access; see :func:`check_sweep`).

    Args:
        path: the YAML file.
        data: overrides its ``data:``.

    Raises:
        VisforeError: unreadable or invalid YAML, unknown keys, options or models, bad
            values (checked with :func:`visfore.worldmodels.config.validate_config`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VisforeError(f"sweep file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VisforeError(f"cannot read sweep file {path}: {exc}".splitlines()[0]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise VisforeError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise VisforeError(f"{path} must be a YAML mapping with data:, models: and seeds:")
    fields = _train_fields()
    raw = {_norm_key(k) if _norm_key(k) in fields or _norm_key(k) in SWEEP_KEYS else str(k): v for k, v in raw.items()}
    shared_raw = {k: v for k, v in raw.items() if k not in SWEEP_KEYS}
    shared = _options(shared_raw, f"{path}", fields)
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise VisforeError(f"name: in {path} must be a string")
    data_value = str(data) if data is not None else raw.get("data")
    if data_value is None or not str(data_value).strip():
        raise VisforeError(f"{path} has no data: (the dataset of `visfore collect`), and no --data was given")
    models = _model_entries(raw.get("models"), fields)
    hyperparameters = _hyperparameters(raw.get("hyperparameters"), fields)
    seeds = _seeds(raw.get("seeds"))
    wandb = raw.get("wandb") or {}
    if not isinstance(wandb, dict):
        raise VisforeError("wandb: must be a mapping (project, entity, group, tags, job_type, notes)")
    unknown = sorted(set(map(str, wandb)) - set(WANDB_KEYS))
    if unknown:
        raise VisforeError(f"unknown key(s) {', '.join(unknown)} in wandb:; valid: {', '.join(WANDB_KEYS)}")
    specs = expand(shared, models, hyperparameters, seeds, str(data_value))
    for spec in specs:
        _validate_spec(spec)
    return Sweep(
        path=path,
        name=name,
        description=raw.get("description"),
        data=str(data_value),
        shared=shared,
        models=models,
        hyperparameters=hyperparameters,
        seeds=seeds,
        wandb=dict(wandb),
        runs=specs,
        raw=raw,
    )


def _validate_spec(spec: RunSpec) -> None:
    try:
        config = TrainConfig.from_dict(spec.options)
        validate_config(config)
    except VisforeError as exc:
        raise VisforeError(f"configuration {spec.name}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise VisforeError(f"configuration {spec.name}: bad option value ({exc})".splitlines()[0]) from None


def check_sweep(sweep: Sweep) -> None:
    """Check what needs the dataset: it opens, its episodes are long enough for
    ``context + horizon``, and every model builds with its kwargs at its frame size.

    Raises:
        VisforeError: naming the dataset or the configuration.
    """
    if not storage.exists(sweep.data):
        raise VisforeError(
            f"dataset {storage.display_name(sweep.data)} does not exist (create it with `visfore collect`)"
        )
    ds = open_dataset(sweep.data)
    if ds.num_episodes == 0:
        raise VisforeError(f"{sweep.data} has no complete episode")
    longest = int(ds.episode_lengths.max())
    H, W, _ = ds.frame_shape
    built: set[str] = set()
    for spec in sweep.runs:
        context = int(spec.options.get("context", 2))
        horizon = int(spec.options.get("horizon", 10))
        if context + horizon > longest:
            raise VisforeError(
                f"configuration {spec.name}: context {context} + horizon {horizon} = {context + horizon} frames, "
                f"but the longest episode of {sweep.data} has {longest}"
            )
        key = json.dumps([spec.model, spec.model_kwargs], sort_keys=True, default=str)
        if key in built:
            continue
        try:
            build_model(spec.model, action_dim=ds.action_dim, image_size=(H, W), **spec.model_kwargs)
        except (TypeError, ValueError) as exc:
            raise VisforeError(
                f"configuration {spec.name}: cannot build model {spec.model!r}: {exc}".splitlines()[0]
            ) from None
        built.add(key)


# ---------------------------------------------------------------------------------------
# W&B
# ---------------------------------------------------------------------------------------
def import_wandb() -> Any:
    """The ``wandb`` module, or a :class:`VisforeError` saying how to install it."""
    try:
        import wandb  # noqa: F401  (lazy: an optional extra)
    except ImportError:
        raise VisforeError(WANDB_MISSING) from None
    return sys.modules["wandb"]


def _flat_scalars(prefix: str, data: Any, out: dict[str, Any]) -> None:
    if isinstance(data, Mapping):
        for k, v in data.items():
            _flat_scalars(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(data, bool):
        out[prefix] = data
    elif isinstance(data, (int, float)) and math.isfinite(float(data)):
        out[prefix] = data


def log_to_wandb(
    wandb: Any, sweep_name: str, spec: RunSpec, metrics: Mapping[str, Any], run_dir: Path, settings: Mapping[str, Any]
) -> None:
    """One W&B run per configuration: its config, its per-epoch history, the per-step
    open-loop metrics and the final summary. ``WANDB_MODE=offline`` (read by wandb itself)
    keeps everything local, under the run directory."""
    config = {
        "sweep": sweep_name,
        "run": spec.name,
        "label": spec.label,
        **spec.options,
        "hyperparameters": spec.hyperparameters,
    }
    run = wandb.init(
        project=settings.get("project") or "visfore",
        entity=settings.get("entity"),
        group=settings.get("group") or f"{COMMAND}-{sweep_name}",
        job_type=settings.get("job_type") or COMMAND,
        tags=list(settings.get("tags") or []) + [spec.model],
        notes=settings.get("notes"),
        name=spec.name,
        config=config,
        dir=str(run_dir),
    )
    try:
        for record in metrics.get("history") or []:
            values: dict[str, Any] = {}
            _flat_scalars("epoch", {k: v for k, v in record.items() if k != "global_step"}, values)
            run.log(values, step=int(record.get("global_step", 0)))
        summary: dict[str, Any] = {}
        for part in ("model", "copy_last_frame", "mean_frame", "shuffled_actions", "best_of_n"):
            part_data = metrics.get(part)
            if not isinstance(part_data, Mapping):
                continue
            _flat_scalars(f"final/{part}", part_data.get("mean"), summary)
            for key in ("psnr", "ssim"):
                for k, v in enumerate(part_data.get(key) or [], start=1):
                    if isinstance(v, (int, float)):
                        summary[f"final/{part}/{key}_step_{k:02d}"] = v
        for key in ("action_sensitivity", "beats_copy_last_frame"):
            _flat_scalars(f"final/{key}", metrics.get(key), summary)
        for key in (
            "num_parameters",
            "train_seconds",
            "samples_per_second",
            "inference_frames_per_second",
            "epochs_completed",
            "global_step",
            "eval_seconds",
        ):
            _flat_scalars(key, metrics.get(key), summary)
        run.summary.update(summary)
    finally:
        run.finish()


# ---------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, VisforeError) else text or type(exc).__name__


def _read_metrics(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _seconds(value: Any) -> float:
    """A recorded duration in seconds, or 0.0 when it is missing or not a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def previous_meta(sweep_dir: Path) -> dict[str, Any]:
    """The ``meta`` of the sweep's ``comparison.json`` written by an earlier session
    (``{}`` when there is none or it cannot be read)."""
    path = sweep_dir / "comparison.json"
    try:
        meta = json.loads(path.read_text()).get("meta")
    except (OSError, ValueError, AttributeError):
        return {}
    return dict(meta) if isinstance(meta, dict) else {}


def run_state(run_dir: Path) -> str:
    """``new`` (no directory), ``done`` (metrics.json), ``resume`` (a checkpoint to continue)
    or ``restart`` (a run that failed before its first checkpoint)."""
    if not run_dir.exists():
        return "new"
    if (run_dir / runs.METRICS_NAME).is_file() and _read_metrics(run_dir / runs.METRICS_NAME) is not None:
        return "done"
    if runs.last_checkpoint_path(run_dir).is_file() and (run_dir / runs.CONFIG_NAME).is_file():
        return "resume"
    return "restart"


def _print_plan(sweep: Sweep, sweep_dir: Path, console: Any) -> None:
    """The expanded configurations, one line each (``--dry-run``)."""
    console.print(f"{len(sweep.runs)} configurations of {sweep.path} -> {sweep_dir}", soft_wrap=True)
    shared = ", ".join(f"{k}={v}" for k, v in sweep.shared.items()) or "(train-model defaults)"
    console.print(escape(f"data: {sweep.data}; shared options: {shared}"), soft_wrap=True)
    width = max(len(s.name) for s in sweep.runs)
    for spec in sweep.runs:
        parts = [
            f"{spec.index + 1:>3}. {spec.name:<{width}}",
            f"[{run_state(sweep_dir / spec.name)}]",
            f"model={spec.model}",
            f"seed={spec.seed}",
        ]
        parts += [f"{k}={v}" for k, v in spec.hyperparameters.items()]
        own = {
            k: v
            for k, v in spec.options.items()
            if k not in ("data", "model", "seed", "model_kwargs")
            and sweep.shared.get(k, object()) != v
            and k not in spec.hyperparameters
        }
        parts += [f"{k}={v}" for k, v in own.items()]
        if spec.model_kwargs:
            parts.append("model_kwargs=" + json.dumps(spec.model_kwargs, sort_keys=True))
        console.print(escape("  ".join(parts)), soft_wrap=True)


def _sweep_record(sweep: Sweep, sweep_dir: Path, name: str) -> dict[str, Any]:
    return {
        "command": COMMAND,
        "name": name,
        "config": str(sweep.path.resolve()),
        "data": storage.resolve(sweep.data),
        "description": sweep.description,
        "shared": sweep.shared,
        "models": [dataclasses.asdict(m) for m in sweep.models],
        "hyperparameters": sweep.hyperparameters,
        "seeds": sweep.seeds,
        "runs": [
            {
                "name": s.name,
                "model": s.model,
                "label": s.label,
                "seed": s.seed,
                "hyperparameters": s.hyperparameters,
                "options": s.options,
            }
            for s in sweep.runs
        ],
        "sweep_dir": str(sweep_dir.resolve()),
    }


def train_eval_all(
    config: str | Path,
    *,
    out_dir: str | Path = runs.DEFAULT_RUNS_ROOT,
    name: str | None = None,
    data: str | Path | None = None,
    wandb: bool = False,
    dry_run: bool = False,
    resume: bool = False,
    progress: bool = True,
    console: Any = None,
    command: str | None = None,
    train_fn: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ray: str | None = None,
) -> dict[str, Any]:
    """Run a sweep and write its comparison report.

    Args:
        config: the sweep YAML file.
        out_dir: parent of the sweep directory ``train-eval-all-NAME``.
        name: sweep name (default: the file's ``name:``, else its stem).
        data: overrides the file's ``data:``.
        wandb: log every run to W&B (needs the ``wandb`` package).
        dry_run: print the configurations and return; nothing is written.
        resume: ``--continue`` (see the module docstring).
        progress: training progress bars and tables of each run.
        console: a rich console (default: a new one).
        command: the command line, recorded in the report.
        train_fn: the trainer (default :func:`visfore.worldmodels.training.train_model`; for tests;
            with ``ray`` a module-level, picklable function).
        ray: run the configurations as Ray tasks (:mod:`visfore.core.ray_backend`): ``local``,
            ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; see :func:`ray_resources` for
            what each one reserves. The dataset and ``out_dir`` must be reachable from
            every Ray node (a shared filesystem or object storage).

    Returns:
        ``sweep_dir``, ``specs``, ``rows`` (:func:`visfore.reports.comparison_report.run_row`),
        ``groups``, ``files``, ``interrupted``, ``failed`` (count), ``dry_run``.

    Raises:
        VisforeError: bad input, before anything is written (also ``ray`` without Ray
            installed, a bad address, no cluster there, or a ``cuda`` configuration on a
            cluster without GPUs).
    """
    if ray is not None:
        ray_backend.require_ray()  # one line, exit 2, before anything is read or written
        ray = ray_backend.parse_address(ray)

    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:  # log files: no wrapping at 80 columns
            console = Console(highlight=False, width=max(console.width, 140))
    sweep = load_sweep(config, data=data)
    sweep_name = name or sweep.name or _SAFE.sub("_", Path(config).stem)
    sweep_dir = runs.resolve_run_dir(COMMAND, name=sweep_name, root=out_dir)
    wandb_module = import_wandb() if wandb else None
    check_sweep(sweep)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise VisforeError(f"{sweep_dir} exists and is not a directory")
    if sweep_dir.exists() and not resume and not dry_run:
        raise VisforeError(
            f"sweep directory {sweep_dir} already exists; pass --resume to continue it, or choose another --name"
        )
    if dry_run:
        _print_plan(sweep, sweep_dir, console)
        return {
            "sweep_dir": sweep_dir,
            "specs": sweep.runs,
            "rows": [],
            "groups": [],
            "files": {},
            "interrupted": False,
            "failed": 0,
            "dry_run": True,
        }

    if train_fn is None:
        train_fn = training.train_model  # looked up at call time (tests patch it)

    ray_session = None
    if ray is not None:
        ray_session = ray_backend.connect(ray)
        try:
            for spec in sweep.runs:
                ray_resources(spec.options, ray_session)  # a GPU the cluster lacks: fail now
        except BaseException:
            ray_session.close()
            raise
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = _sweep_record(sweep, sweep_dir, sweep_name)
    runs.atomic_write_text(
        sweep_dir / SWEEP_FILE, yaml.safe_dump(json.loads(json.dumps(record, default=str)), sort_keys=False, width=100)
    )
    previous = previous_meta(sweep_dir) if resume else {}
    earlier_seconds = _seconds(previous.get("seconds"))
    meta: dict[str, Any] = {
        "name": sweep_name,
        "config": str(sweep.path),
        "data": sweep.data,
        "shared": sweep.shared,
        "configurations": len(sweep.runs),
        "created": str(previous.get("created") or runs.utc_timestamp()),
        "command": command or f"visfore {COMMAND} --config {shlex.quote(str(config))}",
        "interrupted": False,
        "seconds": earlier_seconds,
        "session_seconds": 0.0,
        "sessions": (int(previous.get("sessions") or 1) if previous else 0) + 1,
    }
    if previous:
        meta["resumed"] = runs.utc_timestamp()
    if ray_session is not None:
        meta["ray"] = ray_session.record()
    rec = _SweepRecorder(sweep, sweep_dir, sweep_name, meta, console, progress, wandb_module, earlier_seconds)
    interrupted = False
    try:
        if ray_session is not None:
            interrupted = _run_on_ray(ray_session, sweep.runs, rec.begin, rec.finish, rec.rows, train_fn, console)
        else:
            interrupted = _run_locally(sweep.runs, rec, train_fn, console)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if ray_session is not None:
            ray_session.close()  # stops a Ray started for this command
    return rec.report(interrupted)


class _SweepRecorder:
    """The rows of a sweep: which configurations to run (:meth:`begin`), their outcomes
    (:meth:`finish`, ``comparison.csv`` rewritten after each) and the final report."""

    def __init__(
        self,
        sweep: Sweep,
        sweep_dir: Path,
        sweep_name: str,
        meta: dict[str, Any],
        console: Any,
        progress: bool,
        wandb_module: Any,
        earlier_seconds: float = 0.0,
    ) -> None:
        self.sweep, self.sweep_dir, self.sweep_name, self.meta = sweep, sweep_dir, sweep_name, meta
        #: Seconds of the earlier sessions of a sweep continued with --resume.
        self.earlier_seconds = earlier_seconds
        self.console, self.progress, self.wandb_module = console, progress, wandb_module
        self.rows: list[dict[str, Any]] = []
        self.order = {spec.name: spec.index for spec in sweep.runs}
        self.n = len(sweep.runs)
        self.t0 = time.monotonic()

    def write_rows(self) -> None:
        self.rows.sort(key=lambda r: self.order.get(r["run"], self.n))  # spec order, also on Ray
        self._update_time()
        cr.write_rows(self.sweep_dir, self.meta, self.rows)

    def _update_time(self) -> None:
        """``meta["seconds"]``: this session's time plus the earlier sessions'."""
        self.meta["session_seconds"] = time.monotonic() - self.t0
        self.meta["seconds"] = self.earlier_seconds + self.meta["session_seconds"]

    def begin(self, spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The row fields of ``spec`` and its train-model options (None: finished earlier)."""
        run_dir = self.sweep_dir / spec.name
        state = run_state(run_dir)
        common: dict[str, Any] = {
            "run": spec.name,
            "model": spec.model,
            "label": spec.label,
            "hyperparameters": spec.hyperparameters,
            "seed": spec.seed,
            "run_dir": run_dir,
        }
        if state == "done":
            log.info("[%d/%d] %s: finished earlier, skipped", spec.index + 1, self.n, spec.name)
            self.rows.append(cr.run_row(_read_metrics(run_dir / runs.METRICS_NAME), reused=True, **common))
            return common, None
        if state == "restart":
            shutil.rmtree(run_dir)
        return common, dict(spec.options, out=str(run_dir), progress=self.progress, resume=state == "resume")

    def finish(self, spec: RunSpec, common: dict[str, Any], outcome: Any, seconds: float) -> None:
        """Record a finished configuration: ``outcome`` its metrics or its exception."""
        if isinstance(outcome, BaseException):
            message = _one_line(outcome)
            log.error("%s failed: %s", spec.name, message)
            self.rows.append(cr.run_row(None, status="failed", error=message, **common))
        else:
            row = cr.run_row(outcome, **common)
            self.rows.append(row)
            self.console.print(
                f"{spec.name}: PSNR {cr.fmt(row['psnr'], 2)} dB (copy-last-frame "
                f"{cr.fmt(row['copy_last_psnr'], 2)}), SSIM {cr.fmt(row['ssim'], 4)} in "
                f"{seconds:.0f} s"
            )
            if self.wandb_module is not None:
                try:
                    log_to_wandb(
                        self.wandb_module, self.sweep_name, spec, outcome, self.sweep_dir / spec.name, self.sweep.wandb
                    )
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - logging must not end the sweep
                    log.warning("W&B logging of %s failed: %s", spec.name, _one_line(exc))
        self.write_rows()

    def interrupted_run(self, common: dict[str, Any]) -> None:
        self.rows.append(cr.run_row(None, status="interrupted", error="interrupted (Ctrl-C)", **common))

    def report(self, interrupted: bool) -> dict[str, Any]:
        """Write the comparison (CSV, JSON, Markdown, HTML, plots), print its table."""
        rows, n, sweep_dir, console = self.rows, self.n, self.sweep_dir, self.console
        rows.sort(key=lambda r: self.order.get(r["run"], n))
        self._update_time()
        self.meta["interrupted"] = interrupted
        report = cr.write_comparison(sweep_dir, self.meta, rows)
        failed = sum(1 for r in rows if r["status"] == "failed")
        if any(g["ok"] for g in report["groups"]):
            cr.print_comparison(
                report["groups"], console, title=f"{COMMAND} {self.sweep_name}: aggregated over seeds (mean ± std)"
            )
        done = sum(1 for r in rows if r["status"] == "ok")
        console.print(
            f"{done}/{n} configurations finished"
            + (f", {failed} failed" if failed else "")
            + ("; interrupted" if interrupted else "")
            + f"; report: {sweep_dir / 'comparison.html'}"
        )
        return {
            "sweep_dir": sweep_dir,
            "specs": self.sweep.runs,
            "rows": rows,
            "groups": report["groups"],
            "files": report["files"],
            "interrupted": interrupted,
            "failed": failed,
            "dry_run": False,
        }


def _run_locally(specs: list[RunSpec], rec: _SweepRecorder, train_fn: Callable, console: Any) -> bool:
    """Train the configurations one after the other in this process; True when interrupted."""
    for spec in specs:
        common, options = rec.begin(spec)
        if options is None:
            continue
        verb = "resuming" if options["resume"] else "training"
        console.rule(f"[{spec.index + 1}/{rec.n}] {verb} {spec.name}")
        t_run = time.monotonic()
        try:
            metrics = train_fn(options)
        except KeyboardInterrupt:
            rec.interrupted_run(common)
            return True
        except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
            rec.finish(spec, common, exc, time.monotonic() - t_run)
        else:
            rec.finish(spec, common, metrics, time.monotonic() - t_run)
    return False


# ---------------------------------------------------------------------------------------
# Ray
# ---------------------------------------------------------------------------------------
def ray_resources(options: Mapping[str, Any], session: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """The train-model options and the Ray resources of one configuration run as a Ray task.

    A ``cuda``/``cuda:N`` device reserves one GPU and one CPU and trains on ``cuda`` (Ray
    shows a task only its own GPU, as ``cuda:0``); any other device (``cpu``, ``auto``,
    which finds no GPU in a task that reserved none) reserves ``num_threads`` CPUs
    (default 1, at most the cluster's) and trains with that many torch threads. Paths
    become absolute (Ray workers do not share the driver's working directory); per-run
    progress bars are off (a worker's output goes to Ray's log files).

    Returns:
        (options, {"num_cpus": ..., "num_gpus": ...}).

    Raises:
        VisforeError: a ``cuda`` configuration on a cluster without GPUs.
    """
    options = dict(options, progress=False)
    if options.get("out") is not None:
        options["out"] = str(Path(options["out"]).resolve())
    if options.get("data"):
        options["data"] = storage.resolve(options["data"])
    device = str(options.get("device") or "auto")
    if device.startswith("cuda"):
        if session.gpus < 1:
            raise VisforeError(
                f"device {device} asks for a GPU but the Ray cluster ({session.address}) has none; "
                "use device: cpu or a cluster with GPUs"
            )
        options["device"] = "cuda"
        return options, {"num_cpus": 1, "num_gpus": 1}
    threads = max(1, min(int(options.get("num_threads") or 1), max(1, session.cpus)))
    options["num_threads"] = threads
    return options, {"num_cpus": threads, "num_gpus": 0}


def _ray_train(train_fn: Callable[[Mapping[str, Any]], Mapping[str, Any]], options: Mapping[str, Any]) -> Any:
    """One configuration on a Ray worker. Its run directory's state is read again, so a
    retry after a lost worker resumes from the last checkpoint (or starts over, or
    returns the metrics of a run that finished just before its worker was lost)."""
    run_dir = Path(options["out"])
    state = run_state(run_dir)
    if state == "done":
        return _read_metrics(run_dir / runs.METRICS_NAME)
    if state == "restart":
        shutil.rmtree(run_dir)
    return train_fn(dict(options, resume=state == "resume"))


def _run_on_ray(
    session: Any,
    specs: list[RunSpec],
    begin: Callable,
    finish: Callable,
    rows: list[dict[str, Any]],
    train_fn: Callable,
    console: Any,
) -> bool:
    """Run the configurations as Ray tasks (all submitted at once; Ray starts each when its
    resources are free) and record them in spec order through ``finish``.

    Returns:
        True when interrupted (Ctrl-C): running tasks are cancelled (train-model stops as
        on Ctrl-C), runs that finished anyway are recorded from their ``metrics.json``,
        the others as interrupted.
    """
    ray = ray_backend.require_ray()
    task = ray_backend.remote(_ray_train, max_retries=ray_backend.DEFAULT_RETRIES)
    todo = []
    for spec in specs:
        common, options = begin(spec)
        if options is not None:
            todo.append((spec, common, ray_resources(options, session)))
    log.info(
        "running %d configurations as Ray tasks on %s node(s) (%s CPUs, %s GPUs)",
        len(todo),
        session.nodes,
        session.cpus,
        session.gpus,
    )
    submitted: dict[str, float] = {}
    cancelled: list[Any] = []

    def submit(item: Any) -> Any:
        spec, _, (options, resources) = item
        submitted[spec.name] = time.monotonic()
        return task.options(**resources).remote(train_fn, options)

    def cancel(ref: Any) -> None:
        try:
            ray.cancel(ref)  # KeyboardInterrupt in the task: train-model stops cleanly
        except Exception:  # noqa: BLE001 - finished or gone
            pass
        cancelled.append(ref)

    results = ray_backend.ordered_results(submit, todo, max(1, len(todo)), return_exceptions=True, cancel=cancel)
    try:
        with contextlib.closing(results):
            for (spec, common, _), outcome in results:
                finish(spec, common, outcome, time.monotonic() - submitted[spec.name])
    except KeyboardInterrupt:
        if cancelled:
            ray.wait(cancelled, num_returns=len(cancelled), timeout=30)
        recorded = {r["run"] for r in rows}
        for spec, common, _ in todo:
            if spec.name in recorded or spec.name not in submitted:
                continue
            run_dir = Path(common["run_dir"])
            if run_state(run_dir) == "done":
                rows.append(cr.run_row(_read_metrics(run_dir / runs.METRICS_NAME), **common))
            else:
                rows.append(cr.run_row(None, status="interrupted", error="interrupted (Ctrl-C)", **common))
        return True
    return False


# ---------------------------------------------------------------------------------------
# Typer command
# ---------------------------------------------------------------------------------------
