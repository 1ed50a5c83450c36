"""The ``visfore`` Typer app: every command registered under its name.

Each command lives in the module of its pipeline and imports heavy libraries (torch,
zarr, mujoco) inside its body, so ``visfore --help`` stays fast.
"""

from __future__ import annotations

import typer

from visfore.data.collect import collect_command
from visfore.data.dataset_info import dataset_info_command
from visfore.rl.evaluate import evaluate_command
from visfore.rl.mimic import mimic_command
from visfore.planning.plan import plan_command
from visfore.worldmodels.play_model import play_model_command
from visfore.worldmodels.predict import predict_command
from visfore.core.ray_backend import RayCommand
from visfore.worldmodels.train_eval_all import train_eval_all_command
from visfore.cli.train_model import train_model_command
from visfore.rl.train_policy import train_policy_command
from visfore.perception.train_translator import train_translator_command

app = typer.Typer(
    name="visfore",
    help="Visual foresight toolkit: collect reacher datasets and train video-prediction forward models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dataset_app = typer.Typer(help="Inspect visfore Zarr datasets.", no_args_is_help=True)

# RayCommand: a bare `--ray` (no address) means `--ray local` (Click has no optional-value options).
app.command("collect", cls=RayCommand)(collect_command)
app.command("train-model")(train_model_command)
app.command("train-eval-all", cls=RayCommand)(train_eval_all_command)
app.command("train-policy")(train_policy_command)
app.command("train-translator")(train_translator_command)
app.command("evaluate", cls=RayCommand)(evaluate_command)
app.command("predict")(predict_command)
app.command("play-model")(play_model_command)
app.command("plan")(plan_command)
app.command("mimic")(mimic_command)
dataset_app.command("info")(dataset_info_command)
app.add_typer(dataset_app, name="dataset")


def main() -> None:
    """Console-script entry point."""
    app()

