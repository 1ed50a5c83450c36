"""The shared training loop (visfore.core.trainer) on a tiny fake task, no torch: exact
resume mid-epoch, time budget, best checkpoints, Ctrl-C."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from visfore.core.interrupt import StopFlag
from visfore.core.trainer import (
    Callback,
    Checkpointer,
    StepResult,
    StopOnInterrupt,
    TimeBudget,
    Trainer,
    TrainState,
    TrainTask,
)


class FakeTask(TrainTask):
    """3 batches per epoch, each a (epoch, index) pair; the "weight" is the sum of the
    batches seen (so the order matters); validation follows a fixed list of values."""

    def __init__(self, val_values: Sequence[float] = (3.0, 2.0, 2.5, 1.0), steps: int = 3) -> None:
        self.val_values, self.steps = list(val_values), steps
        self.weight = 0.0
        self.seen: list[tuple[int, int]] = []
        self.saved: dict[str, dict[str, Any]] = {}

    def epoch_batches(self, state: TrainState) -> Sequence[Any]:
        return [(state.epoch, i) for i in range(self.steps)]

    def train_step(self, batch: Any, state: TrainState) -> StepResult:
        self.seen.append(batch)
        self.weight = self.weight * 0.5 + batch[0] * 10 + batch[1]
        return StepResult(loss=float(batch[1] + 1), samples=2)

    def end_epoch(self, state: TrainState) -> dict[str, Any]:
        return {"val": self.val_values[state.epoch - 1]}

    def save_checkpoint(self, paths: Sequence[Path], state: TrainState, record: Mapping[str, Any]) -> None:
        for path in paths:
            self.saved[Path(path).name] = {
                "state": copy.deepcopy(state.to_dict()),
                "weight": self.weight,
                "record": dict(record),
            }


class StopAfter(Callback):
    """Ask to stop after ``n`` steps in total."""

    def __init__(self, n: int) -> None:
        self.n = n

    def wants_stop(self, trainer: Trainer, state: TrainState) -> bool:
        return state.global_step >= self.n


def _fit(task: FakeTask, state: TrainState, epochs: int, *extra: Callback) -> TrainState:
    cbs = [*extra, Checkpointer(Path("last"), Path("best"), monitor="val")]
    return Trainer(task, epochs=epochs, callbacks=cbs).fit(state)


def test_resume_mid_epoch_continues_at_the_same_batch():
    straight = FakeTask()
    s_state = _fit(straight, TrainState(), epochs=3)

    first = FakeTask()
    stopped = _fit(first, TrainState(), 3, StopAfter(4))  # epoch 1 done, 1 step into epoch 2
    assert stopped.stopped_early and (stopped.epoch, stopped.epoch_step, stopped.global_step) == (1, 1, 4)
    saved = first.saved["last"]
    assert saved["record"] == {"partial_epoch_train_loss": 1.0}

    resumed_task = FakeTask()
    resumed_task.weight = saved["weight"]
    resumed = _fit(resumed_task, TrainState.from_dict(saved["state"]), epochs=3)
    assert resumed_task.seen[0] == (1, 1)  # the very batch after the last one done
    assert first.seen + resumed_task.seen == straight.seen
    assert resumed_task.weight == straight.weight
    assert resumed.global_step == s_state.global_step == 9 and not resumed.stopped_early
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in s_state.history]
    assert resumed.train_samples == s_state.train_samples == 18


def test_state_round_trip_and_epoch_loss():
    state = TrainState(epoch=2, epoch_step=1, loss_sum=3.0, loss_count=2, extra={"k": 1})
    assert TrainState.from_dict({**state.to_dict(), "unknown": 5}) == state
    assert state.epoch_loss == 1.5 and math.isnan(TrainState().epoch_loss)


def test_time_budget_stops_and_checkpoints(caplog):
    task = FakeTask()
    state = _fit(task, TrainState(), 3, TimeBudget(1e-9))
    assert state.stopped_early and (state.epoch, state.epoch_step, state.global_step) == (0, 1, 1)
    assert task.saved["last"]["state"]["epoch_step"] == 1 and "best" not in task.saved
    assert "time budget" in caplog.text
    # no budget: every epoch
    assert _fit(FakeTask(), TrainState(), 2, TimeBudget(None)).epoch == 2


def test_best_only_when_improved():
    task = FakeTask(val_values=(3.0, 2.0, 2.5, 1.0))
    writes: list[list[str]] = []
    original = task.save_checkpoint

    def record(paths, state, rec):
        writes.append([Path(p).name for p in paths])
        original(paths, state, rec)

    task.save_checkpoint = record  # type: ignore[method-assign]
    state = _fit(task, TrainState(), epochs=4)
    assert writes == [["last", "best"], ["last", "best"], ["last"], ["last", "best"]]
    assert state.best == 1.0 and task.saved["best"]["state"]["epoch"] == 4
    assert [h.get("improved", False) for h in state.history] == [True, True, False, True]


def test_ctrl_c_checkpoints_then_raises():
    flag = StopFlag()
    task = FakeTask()

    class CtrlCAtStep2(Callback):
        def on_step_end(self, trainer, state, result):
            if state.global_step == 2:
                flag._handler(2, None)  # what the SIGINT handler does

    with pytest.raises(KeyboardInterrupt):
        _fit(task, TrainState(), 3, CtrlCAtStep2(), StopOnInterrupt(flag))
    assert task.saved["last"]["state"]["global_step"] == 2 and task.saved["last"]["state"]["epoch_step"] == 2
    # a second Ctrl-C interrupts at once
    with pytest.raises(KeyboardInterrupt):
        flag._handler(2, None)


def test_ctrl_c_at_the_end_of_an_epoch_raises_after_its_checkpoint():
    flag = StopFlag()
    task = FakeTask()

    class CtrlCAtStep3(Callback):
        def on_step_end(self, trainer, state, result):
            if state.global_step == 3:
                flag.requested = True

    with pytest.raises(KeyboardInterrupt):
        _fit(task, TrainState(), 3, CtrlCAtStep3(), StopOnInterrupt(flag))
    assert task.saved["last"]["state"]["epoch"] == 1 and task.saved["last"]["state"]["epoch_step"] == 0


def test_any_rank_makes_every_rank_stop():
    calls: list[bool] = []

    def any_rank(flag: bool) -> bool:  # as if another rank asked to stop at step 2
        calls.append(flag)
        return flag or len(calls) == 2

    task = FakeTask()
    state = Trainer(task, epochs=3, callbacks=[Checkpointer(Path("last"))], any_rank=any_rank).fit(TrainState())
    assert state.global_step == 2 and state.stopped_early and task.saved["last"]["state"]["epoch_step"] == 2


def test_finished_run_does_not_step():
    task = FakeTask()
    state = _fit(task, TrainState(epoch=3), epochs=3)
    assert task.seen == [] and state.global_step == 0


def test_nothing_to_train_runs_no_callback():
    """A finished run resumed (state.epoch >= epochs): fit returns at once, so no progress
    bar (it showed 'loss nan 0.0 clips/s'), no signal handler, no checkpoint."""

    class Spy(Callback):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def context(self):
            self.calls.append("context")
            return super().context()

        def on_train_start(self, trainer, state):
            self.calls.append("start")

        def on_train_end(self, trainer, state):
            self.calls.append("end")

    spy, task = Spy(), FakeTask()
    state = _fit(task, TrainState(epoch=2, global_step=6, stopped_early=True), 2, spy)
    assert spy.calls == [] and task.saved == {} and task.seen == []
    assert not state.stopped_early and state.global_step == 6
    # a larger target trains on from there (the resumed run's new --epochs)
    state = _fit(task, state, 3, spy)
    assert task.seen == [(2, 0), (2, 1), (2, 2)] and state.epoch == 3 and spy.calls == ["context", "start", "end"]


@pytest.mark.parametrize("at_step", [2, 3], ids=["mid-epoch", "end-of-epoch"])
def test_ctrl_c_says_what_was_saved_in_the_exception_not_in_the_log(at_step, caplog):
    """The KeyboardInterrupt carries 'saved LAST; HINT' (the CLI prints it on its one
    'interrupted' line); the checkpointer logs no 'interrupted' warning of its own."""
    flag = StopFlag()

    class CtrlC(Callback):
        def on_step_end(self, trainer, state, result):
            if state.global_step == at_step:
                flag.requested = True

    cbs = [CtrlC(), StopOnInterrupt(flag), Checkpointer(Path("run/last"), monitor="val", resume_hint="go on")]
    with pytest.raises(KeyboardInterrupt) as info:
        Trainer(FakeTask(), epochs=3, callbacks=cbs).fit(TrainState())
    assert str(info.value) == f"saved {Path('run/last')}; go on"
    assert "interrupted" not in caplog.text
