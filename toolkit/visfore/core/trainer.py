"""One training-loop skeleton for every command that trains a network.

``train-model`` (forward models), ``train-translator`` (pixels to key points) and
``train-through-model`` (a policy trained through a learned model) share this loop; each
supplies a :class:`TrainTask` (how to make the batches of an epoch, one optimisation step,
the end-of-epoch evaluation, the checkpoint contents) and the loop does the rest in the
same way for all of them:

- counters live in one :class:`TrainState` dataclass (saved in every checkpoint and
  restored on ``--resume``), never in closure variables;
- everything around the loop is a :class:`Callback`, in the manner of
  stable-baselines3's callbacks: :class:`TimeBudget` (``--time-budget``),
  :class:`StopOnInterrupt` (the first Ctrl-C ends the step cleanly, a second one at once),
  :class:`TensorBoardLogger`, :class:`RichProgress`, :class:`Checkpointer` (``last`` after
  every epoch and when stopped mid-epoch, ``best`` when the monitored value improved;
  written atomically by the task);
- a run stopped mid-epoch (time budget, Ctrl-C) keeps its exact position
  (``TrainState.epoch_step``), so ``--resume`` continues at the very batch where it
  stopped.

Multi-process training (DDP) passes ``any_rank``, a function that is True on every rank
when a flag is True on any rank, so all ranks stop at the same step.

API history (keep it stable; say here what changes):

- first user ``train-model`` (:class:`visfore.worldmodels.training.ForwardModelTask`):
  :meth:`TrainTask.iterate` added (load the index batches, e.g. through a ``DataLoader``);
  every callback's :meth:`Callback.wants_stop` is asked at each step (no short-circuit, so
  a Ctrl-C during a step that also ends the time budget still raises);
  :class:`StopOnInterrupt` wraps a :class:`visfore.core.interrupt.StopFlag` (pass one to
  test the interrupt path); :meth:`Trainer.fit` resets ``state.stopped_early``;
  :class:`Checkpointer` marks an improved epoch record with ``"improved": True``.
- ``--epochs`` as the target on resume: :meth:`Trainer.fit` with nothing left to train
  (``state.epoch >= epochs``) returns at once, without entering any callback (no progress
  bar showing ``loss nan``, no signal handler).
- one line per Ctrl-C: :class:`Checkpointer` no longer logs "interrupted"; it leaves
  :attr:`Trainer.interrupt_note` (``saved PATH`` plus its ``resume_hint``), which the
  :class:`KeyboardInterrupt` the loop raises carries as its message (the CLI prints
  ``interrupted; <note>`` once: ``visfore.cli.errors.handle_errors``).

Example (the shape of every task)::

    class MyTask(TrainTask):
        def epoch_batches(self, state): return batches_of_epoch(state.epoch)
        def train_step(self, batch, state): ...; return StepResult(loss=l, clips=len(batch))
        def end_epoch(self, state): return {"val_loss": validate()}
        def save_checkpoint(self, paths, state, record): save(...)

    state = TrainState()
    Trainer(MyTask(), epochs=10, callbacks=[TimeBudget(5.0), Checkpointer(run_dir, "val_loss")]).fit(state)
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from visfore.core.interrupt import StopFlag

__all__ = [
    "Callback",
    "Checkpointer",
    "RichProgress",
    "StepResult",
    "StopOnInterrupt",
    "TensorBoardLogger",
    "TimeBudget",
    "TrainState",
    "TrainTask",
    "Trainer",
]

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The loop's counters; saved in every checkpoint (:meth:`to_dict`) and restored on resume.

    Attributes:
        epoch: epochs completed.
        epoch_step: optimisation steps done in the current (unfinished) epoch.
        global_step: optimisation steps done in total.
        train_seconds: wall-clock seconds spent in training steps (not evaluation).
        train_samples: training samples (clips, frames) seen, over all processes.
        best: best value of the monitored metric so far (``inf`` when none).
        history: one record per completed epoch (what :meth:`TrainTask.end_epoch` returned).
        loss_sum, loss_count: running sum and count of the current epoch's per-sample loss
            (kept across a mid-epoch stop so the resumed epoch reports the same mean).
        stopped_early: the loop ended before ``epochs`` (time budget).
        extra: task-specific counters (e.g. the scheduled-sampling step).
    """

    epoch: int = 0
    epoch_step: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    best: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_count: int = 0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for a checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> TrainState:
        """Inverse of :meth:`to_dict` (unknown keys are ignored, missing ones default)."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in mapping.items() if k in known})

    @property
    def epoch_loss(self) -> float:
        """Mean per-sample loss of the current epoch so far (NaN before the first step)."""
        return self.loss_sum / self.loss_count if self.loss_count else math.nan


@dataclass
class StepResult:
    """What one optimisation step reports.

    Attributes:
        loss: the step's loss (a Python float, already reduced over processes).
        samples: samples in this process's batch (for the epoch mean and samples/s).
        scalars: extra values to log (``{"train/lr": 1e-3}``), by TensorBoard tag.
    """

    loss: float
    samples: int
    scalars: dict[str, float] = field(default_factory=dict)


class TrainTask:
    """What a training command supplies to :class:`Trainer` (override the methods)."""

    #: Processes training together (DDP); samples/s counts all of them.
    world_size: int = 1

    def epoch_batches(self, state: TrainState) -> Sequence[Any]:
        """The batches of epoch ``state.epoch`` in order (a pure function of the seed and
        the epoch, so a resumed run sees the same ones); the loop skips the first
        ``state.epoch_step`` of them."""
        raise NotImplementedError

    def iterate(self, batches: Sequence[Any], state: TrainState) -> Iterable[Any]:
        """The batches the loop steps through, from the rest of :meth:`epoch_batches`
        (``batches`` already skips the first ``state.epoch_step``). Override to load them,
        e.g. through a ``DataLoader`` whose sampler yields the index batches; the default
        yields them as they are."""
        return batches

    def train_step(self, batch: Any, state: TrainState) -> StepResult:
        """One optimisation step on ``batch``.

        Raises:
            VisforeError: the loss is not finite (training diverged), with advice.
        """
        raise NotImplementedError

    def end_epoch(self, state: TrainState) -> dict[str, Any]:
        """Evaluate after a completed epoch; the record is appended to ``state.history``."""
        return {}

    def save_checkpoint(self, paths: Sequence[Path], state: TrainState, record: Mapping[str, Any]) -> None:
        """Write a checkpoint to every path in ``paths`` (atomically), or nothing."""


class Callback:
    """Hooks around the loop; every method is optional (the default does nothing)."""

    def on_train_start(self, trainer: Trainer, state: TrainState) -> None:
        """Before the first step (also after a resume)."""

    def on_step_end(self, trainer: Trainer, state: TrainState, result: StepResult) -> None:
        """After each optimisation step (``state`` already counts it)."""

    def on_epoch_end(self, trainer: Trainer, state: TrainState, record: dict[str, Any]) -> None:
        """After each completed epoch and its evaluation."""

    def on_stop_mid_epoch(self, trainer: Trainer, state: TrainState) -> None:
        """When the loop stops inside an epoch (time budget or Ctrl-C)."""

    def on_train_end(self, trainer: Trainer, state: TrainState) -> None:
        """After the loop, however it ended (not on an exception)."""

    def wants_stop(self, trainer: Trainer, state: TrainState) -> bool:
        """True to end the loop after the current step."""
        return False

    def context(self) -> contextlib.AbstractContextManager[Any]:
        """A context held for the whole loop (signal handlers, progress displays)."""
        return contextlib.nullcontext()


class Trainer:
    """Run a :class:`TrainTask` for ``epochs`` epochs with callbacks.

    Args:
        task: the command's steps.
        epochs: the target number of completed epochs (the total, also on resume).
        callbacks: run in order at each hook.
        any_rank: ``flag -> bool`` True on every process when ``flag`` is True on any one
            (multi-process training); the identity by default.
    """

    def __init__(
        self,
        task: TrainTask,
        *,
        epochs: int,
        callbacks: Iterable[Callback] = (),
        any_rank: Callable[[bool], bool] = lambda flag: flag,
    ) -> None:
        self.task = task
        self.epochs = int(epochs)
        self.callbacks = list(callbacks)
        self.any_rank = any_rank
        self.interrupted = False
        #: What the KeyboardInterrupt raised after a Ctrl-C says (set by the Checkpointer).
        self.interrupt_note: str | None = None
        self.steps_in_epoch = 0

    def _stop_requested(self, state: TrainState) -> bool:
        # ask every callback (no short-circuit): StopOnInterrupt records the interrupt
        # even when the time budget also ran out at this step
        return any([cb.wants_stop(self, state) for cb in self.callbacks])

    def fit(self, state: TrainState) -> TrainState:
        """Train until ``epochs`` are completed or a callback asks to stop.

        With nothing left to train (``state.epoch >= epochs``, e.g. a finished run
        resumed) it returns ``state`` unchanged and runs no callback at all.

        Returns:
            ``state``, updated in place.

        Raises:
            KeyboardInterrupt: after Ctrl-C, once the position is checkpointed; its
                message is :attr:`interrupt_note` (``saved PATH; ...``) when a
                :class:`Checkpointer` wrote one.
        """
        state.stopped_early = False  # an outcome of this call (a resumed state may carry True)
        if state.epoch >= self.epochs:
            return state
        with contextlib.ExitStack() as stack:
            for cb in self.callbacks:
                stack.enter_context(cb.context())
            for cb in self.callbacks:
                cb.on_train_start(self, state)
            while state.epoch < self.epochs:
                if not self._run_epoch(state):
                    break
            for cb in self.callbacks:
                cb.on_train_end(self, state)
        return state

    def _run_epoch(self, state: TrainState) -> bool:
        """One epoch (or the rest of one); False when the loop must end."""
        batches = self.task.epoch_batches(state)
        self.steps_in_epoch = len(batches)
        t_start = time.monotonic()
        stop = False
        for batch in self.task.iterate(batches[state.epoch_step :], state):
            result = self.task.train_step(batch, state)
            state.global_step += 1
            state.epoch_step += 1
            state.loss_sum += result.loss * result.samples
            state.loss_count += result.samples
            state.train_samples += result.samples * self.task.world_size
            for cb in self.callbacks:
                cb.on_step_end(self, state, result)
            if self.any_rank(self._stop_requested(state)):
                stop = True
                break
        state.train_seconds += time.monotonic() - t_start
        if state.epoch_step < len(batches):
            # stopped inside the epoch: the checkpoint keeps the exact position
            state.stopped_early = True
            for cb in self.callbacks:
                cb.on_stop_mid_epoch(self, state)
            self._raise_if_interrupted()
            return False
        state.epoch += 1
        state.epoch_step = 0
        record = {
            "epoch": state.epoch,
            "global_step": state.global_step,
            "train_loss": state.epoch_loss,
            **self.task.end_epoch(state),
        }
        state.loss_sum, state.loss_count = 0.0, 0
        state.history.append(record)
        for cb in self.callbacks:
            cb.on_epoch_end(self, state, record)
        self._raise_if_interrupted()
        if state.epoch < self.epochs and self.any_rank(stop or self._stop_requested(state)):
            state.stopped_early = True
            return False
        return True

    def _raise_if_interrupted(self) -> None:
        if self.any_rank(self.interrupted):
            raise KeyboardInterrupt(*([self.interrupt_note] if self.interrupt_note else []))


class TimeBudget(Callback):
    """Stop after ``minutes`` of wall-clock time since the loop started (None = no limit).

    The loop's position is checkpointed by :class:`Checkpointer`, so ``--resume`` continues.
    """

    def __init__(self, minutes: float | None) -> None:
        self.seconds = None if minutes is None else float(minutes) * 60.0
        self.minutes = minutes
        self._t0 = time.monotonic()
        self.reached = False

    def on_train_start(self, trainer: Trainer, state: TrainState) -> None:
        self._t0 = time.monotonic()

    def wants_stop(self, trainer: Trainer, state: TrainState) -> bool:
        if self.seconds is not None and time.monotonic() - self._t0 > self.seconds:
            self.reached = True
        return self.reached

    def on_stop_mid_epoch(self, trainer: Trainer, state: TrainState) -> None:
        if self.reached and not trainer.interrupted:
            log.warning(
                "time budget of %g min reached at epoch %d, step %d/%d",
                self.minutes,
                state.epoch + 1,
                state.epoch_step,
                trainer.steps_in_epoch,
            )

    def on_epoch_end(self, trainer: Trainer, state: TrainState, record: dict[str, Any]) -> None:
        if state.epoch < trainer.epochs and self.wants_stop(trainer, state):
            log.warning("time budget of %g min reached after epoch %d", self.minutes, state.epoch)


class StopOnInterrupt(Callback):
    """The first Ctrl-C ends the loop after the current step (so the checkpoint holds a
    consistent state, then :class:`KeyboardInterrupt` is raised); a second one interrupts
    at once. Outside the main thread it does nothing.

    Args:
        flag: the :class:`~visfore.core.interrupt.StopFlag` to watch (default: a new one;
            pass one whose ``requested`` is already True to test the interrupt path).
    """

    def __init__(self, flag: StopFlag | None = None) -> None:
        self.flag = flag if flag is not None else StopFlag()

    @property
    def requested(self) -> bool:
        return self.flag.requested

    def context(self) -> contextlib.AbstractContextManager[Any]:
        return self.flag.catch_sigint()

    def wants_stop(self, trainer: Trainer, state: TrainState) -> bool:
        if self.flag.requested:
            trainer.interrupted = True
        return self.flag.requested


class Checkpointer(Callback):
    """Checkpoints through :meth:`TrainTask.save_checkpoint`: ``last`` after every epoch and
    when the loop stops mid-epoch, ``best`` too when ``monitor`` improved (lower is
    better; ``monitor=None`` never writes ``best``).

    After a Ctrl-C it logs nothing: it sets :attr:`Trainer.interrupt_note` to
    ``saved LAST`` (and ``; RESUME_HINT``), the message of the :class:`KeyboardInterrupt`
    the loop then raises, so the command says "interrupted" once.

    Args:
        last, best: the two checkpoint paths.
        monitor: the key of the epoch record to minimise (``"val_mse"``).
        is_writer: False on processes other than rank 0 (they still call the task, which
            may need collective operations, with an empty path list).
        resume_hint: how to continue after a Ctrl-C (``"continue with --resume --out
            RUN"``), appended to the note; None: nothing appended.
    """

    def __init__(
        self,
        last: Path,
        best: Path | None = None,
        *,
        monitor: str | None = None,
        is_writer: bool = True,
        resume_hint: str | None = None,
    ) -> None:
        self.last, self.best, self.monitor, self.is_writer = Path(last), best, monitor, is_writer
        self.resume_hint = resume_hint

    def _note_interrupt(self, trainer: Trainer) -> None:
        if trainer.interrupted and self.is_writer:
            trainer.interrupt_note = f"saved {self.last}" + (f"; {self.resume_hint}" if self.resume_hint else "")

    def on_epoch_end(self, trainer: Trainer, state: TrainState, record: dict[str, Any]) -> None:
        paths = [self.last]
        value = record.get(self.monitor) if self.monitor else None
        if value is not None and math.isfinite(float(value)) and float(value) < state.best:
            state.best = float(value)
            record["improved"] = True
            if self.best is not None:
                paths.append(Path(self.best))
        trainer.task.save_checkpoint(paths if self.is_writer else [], state, record)
        self._note_interrupt(trainer)

    def on_stop_mid_epoch(self, trainer: Trainer, state: TrainState) -> None:
        record = {"partial_epoch_train_loss": state.epoch_loss}
        trainer.task.save_checkpoint([self.last] if self.is_writer else [], state, record)
        self._note_interrupt(trainer)


class TensorBoardLogger(Callback):
    """Step scalars (``train/loss`` and :attr:`StepResult.scalars`) and the numeric values
    of each epoch record (``epoch/<key>``) to a TensorBoard ``SummaryWriter``.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or anything with
            ``add_scalar``/``flush``/``close``); None logs nothing.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def on_step_end(self, trainer: Trainer, state: TrainState, result: StepResult) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", result.loss, state.global_step)
        for tag, value in result.scalars.items():
            self.writer.add_scalar(tag, value, state.global_step)

    def on_epoch_end(self, trainer: Trainer, state: TrainState, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key not in ("epoch", "global_step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}", value, state.epoch)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer, state: TrainState) -> None:
        if self.writer is not None:
            self.writer.flush()


class RichProgress(Callback):
    """A rich progress bar over all steps of the run (epoch, loss, samples/s, ETA), and a
    one-line summary per epoch from ``describe(record)``.

    Args:
        total_steps: steps of the whole run (for the bar and the ETA).
        enabled: False for ``--quiet`` (and on processes other than rank 0).
        unit: what a sample is, for the rate column (``"clips"``).
        describe: ``record -> str`` for the per-epoch line (None: no line).
        console: a rich console (default: standard output).
    """

    def __init__(
        self,
        total_steps: int,
        *,
        enabled: bool = True,
        unit: str = "clips",
        describe: Callable[[dict[str, Any]], str] | None = None,
        console: Any = None,
    ) -> None:
        self.total_steps, self.enabled, self.unit, self.describe = total_steps, enabled, unit, describe
        self.console = console
        self._progress: Any = None
        self._task: Any = None
        self._t_window = time.monotonic()
        self._samples_window = 0

    def context(self) -> contextlib.AbstractContextManager[Any]:
        if not self.enabled:
            return contextlib.nullcontext()
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.5f}"),
            TextColumn("{task.fields[rate]:.1f} " + self.unit + "/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        return self._progress

    def on_train_start(self, trainer: Trainer, state: TrainState) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(
                "train",
                total=self.total_steps,
                completed=state.global_step,
                epoch=min(state.epoch + 1, trainer.epochs),
                epochs=trainer.epochs,
                loss=math.nan,
                rate=0.0,
            )
        self._t_window = time.monotonic()

    def on_step_end(self, trainer: Trainer, state: TrainState, result: StepResult) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        self._samples_window += result.samples * trainer.task.world_size
        rate = self._samples_window / max(now - self._t_window, 1e-9)
        self._progress.update(self._task, advance=1, loss=result.loss, rate=rate, epoch=state.epoch + 1)
        if now - self._t_window > 20.0:
            self._t_window, self._samples_window = now, 0

    def on_epoch_end(self, trainer: Trainer, state: TrainState, record: dict[str, Any]) -> None:
        if self.describe is not None and self.enabled:
            line = self.describe(record)
            if self._progress is not None:
                self._progress.console.print(line)
            else:
                log.info(line)
