"""The ``visfore`` Typer app: every command registered under its name.

Each command is a thin module of :mod:`visfore.cli` whose options come from the
command's typed config; it imports its pipeline (and with it torch, zarr, mujoco) inside
the command body, so ``visfore --help`` stays fast. Library code reports notes and
warnings through :mod:`logging`; :func:`setup_logging` shows them on stderr with rich.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from typer.core import TyperGroup

from visfore.cli.collect import collect_command
from visfore.cli.compare_plans import compare_plans_command
from visfore.cli.dataset import dataset_info_command, dataset_verify_command
from visfore.cli.evaluate import evaluate_command
from visfore.cli.help import VisforeTyper
from visfore.cli.mimic import mimic_command
from visfore.cli.options import ResumePathCommand
from visfore.cli.plan import plan_command
from visfore.cli.play_model import play_model_command
from visfore.cli.predict import predict_command
from visfore.cli.ray import RayCommand
from visfore.cli.train_eval_all import train_eval_all_command
from visfore.cli.train_model import train_model_command
from visfore.cli.train_policy import train_policy_command
from visfore.cli.train_through_model import train_through_model_command
from visfore.cli.train_translator import train_translator_command
from visfore.core.errors import VisforeError

log = logging.getLogger("visfore")

#: Deprecated command lines rewritten before parsing: ``train-policy --through-model RUN``
#: is now ``train-through-model --model RUN`` (its own command with its own options).
_THROUGH_MODEL_FLAG = "--through-model"
#: ``command`` of a through-model run's config.yaml (visfore.planning.through_model.COMMAND,
#: not imported here: that module loads torch).
_THROUGH_MODEL_COMMAND = "train-policy-through-model"


def _resumes_a_through_model_run(args: list[str]) -> bool:
    """``train-policy --resume RUN_DIR`` (or ``--resume --out RUN_DIR``) of a through-model
    run: the old way to continue one, which train-policy forwarded to the through-model path."""
    if not any(a == "--resume" or a.startswith("--resume=") for a in args):
        return False
    candidates = [a.split("=", 1)[1] for a in args if a.startswith(("--resume=", "--out="))]
    candidates += [b for a, b in zip(args, args[1:]) if a in ("--resume", "--out", "-o")]
    from visfore.core import runs

    for candidate in candidates:
        try:
            if runs.read_config(candidate).get("command") == _THROUGH_MODEL_COMMAND:
                return True
        except (VisforeError, OSError):
            continue
    return False


class VisforeGroup(TyperGroup):
    """The top-level group: keeps deprecated spellings of whole commands working."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] == "train-policy" and _resumes_a_through_model_run(args[1:]):
            args = ["train-through-model", *args[1:]]
            setup_logging()
            log.warning(
                "`visfore train-policy --resume RUN_DIR` of a through-model run is deprecated; "
                "use `visfore train-through-model --resume --out RUN_DIR`"
            )
        elif (
            args
            and args[0] == "train-policy"
            and any(a == _THROUGH_MODEL_FLAG or a.startswith(_THROUGH_MODEL_FLAG + "=") for a in args)
        ):
            args = ["train-through-model"] + [
                "--model" + a[len(_THROUGH_MODEL_FLAG) :] if a.startswith(_THROUGH_MODEL_FLAG) else a for a in args[1:]
            ]
            setup_logging()
            log.warning(
                "`visfore train-policy --through-model RUN` is deprecated; "
                "use `visfore train-through-model --model RUN`"
            )
        return super().parse_args(ctx, args)


def setup_logging(verbose: bool = False) -> None:
    """Show the ``visfore`` loggers' records on stderr through rich (INFO, or DEBUG with
    ``verbose``); called once per command invocation."""
    from rich.console import Console
    from rich.logging import RichHandler

    logger = logging.getLogger("visfore")
    for handler in list(logger.handlers):
        if getattr(handler, "_visfore", False):
            logger.removeHandler(handler)
    # Console(stderr=True) looks sys.stderr up at each write (CliRunner swaps it per call).
    handler = RichHandler(
        console=Console(stderr=True), show_time=False, show_path=False, markup=False, rich_tracebacks=False
    )
    handler._visfore = True  # type: ignore[attr-defined]  # our marker attribute (see the loop above)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


# VisforeTyper: every command's and group's --help laid out for any width (visfore.cli.help).
app = VisforeTyper(
    cls=VisforeGroup,
    name="visfore",
    help="Visual foresight toolkit: collect reacher datasets and train video-prediction forward models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show debug messages."),
) -> None:
    """Visual foresight toolkit: collect datasets from visfore-envs, train forward models,
    plan with them, train and evaluate policies."""
    setup_logging(verbose)


dataset_app = VisforeTyper(help="Inspect visfore Zarr datasets.", no_args_is_help=True)

# RayCommand: a bare `--ray` (no address) means `--ray local` (Click has no optional-value options).
app.command("collect", cls=RayCommand)(collect_command)
app.command("train-model")(train_model_command)
app.command("train-eval-all", cls=RayCommand)(train_eval_all_command)
app.command("train-policy", cls=ResumePathCommand)(train_policy_command)
app.command("train-translator")(train_translator_command)
app.command("train-through-model", cls=ResumePathCommand)(train_through_model_command)
app.command("evaluate", cls=RayCommand)(evaluate_command)
app.command("predict")(predict_command)
app.command("play-model")(play_model_command)
app.command("plan")(plan_command)
app.command("compare-plans")(compare_plans_command)
app.command("mimic")(mimic_command)
dataset_app.command("info")(dataset_info_command)
dataset_app.command("verify")(dataset_verify_command)
app.add_typer(dataset_app, name="dataset")


def main() -> None:
    """Console-script entry point."""
    app()
