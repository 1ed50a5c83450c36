"""Multi-process training (torchrun, DDP) helpers of ``train-model``.

:func:`setup_distributed` joins the process group named by ``WORLD_SIZE`` / ``RANK`` /
``LOCAL_RANK`` (NCCL on CUDA, gloo on CPU) and returns a :class:`Dist`; every other
function is a no-op (or the identity) when ``Dist.enabled`` is False, so the single-process
path runs the same code. :func:`any_rank` builds the ``flag -> bool`` that
:class:`visfore.core.trainer.Trainer` takes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as tdist

from visfore.core.device import parse_device_spec
from visfore.core.errors import VisforeError

__all__ = [
    "Dist",
    "agree_on_errors",
    "all_gather_object",
    "any_rank",
    "broadcast_object",
    "setup_distributed",
    "shard",
    "sum_across_ranks",
    "teardown",
    "weights_digest",
]


@dataclass
class Dist:
    """This process's place in a torchrun job (world_size 1 = not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: Optional[str] = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise VisforeError(f"environment variable {name}={text!r} is not an integer") from None


def setup_distributed(device_spec: str) -> Dist:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL when training on
    CUDA, else gloo); a no-op otherwise. The group is destroyed by :func:`teardown` only
    if it was created here."""
    world = env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    if not tdist.is_available():
        raise VisforeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    spec = parse_device_spec(device_spec)
    if spec.startswith("cuda:"):
        raise VisforeError(f"--device {spec} cannot be used with torchrun; use auto or cuda (one GPU per LOCAL_RANK)")
    use_cuda = spec == "cuda" or (spec == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise VisforeError(f"--device {spec} requested but CUDA is not available (torch {torch.__version__})")
    local_rank = env_int("LOCAL_RANK", env_int("RANK", 0))
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise VisforeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(local_rank)
    owns = False
    if tdist.is_initialized():
        backend = str(tdist.get_backend())
    else:
        backend = "nccl" if use_cuda else "gloo"
        # generous timeout: ranks > 0 wait in a collective while rank 0 evaluates an epoch
        tdist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=60))
        owns = True
    return Dist(
        world_size=tdist.get_world_size(),
        rank=tdist.get_rank(),
        local_rank=local_rank,
        backend=backend,
        owns_group=owns,
    )


def teardown(dist: Dist) -> None:
    if dist.owns_group:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def all_gather_object(dist: Dist, obj: Any) -> list[Any]:
    if not dist.enabled:
        return [obj]
    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(dist: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.enabled:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def agree_on_errors(dist: Dist, exc: BaseException | None) -> None:
    """Raise on every rank when any rank failed (so none waits forever in a collective)."""
    if not dist.enabled:
        if exc is not None:
            raise exc
        return
    messages = all_gather_object(
        dist, None if exc is None else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    )
    if exc is not None:
        raise exc
    for rank, message in enumerate(messages):
        if message is not None:
            raise VisforeError(f"rank {rank}: {message}")


def sum_across_ranks(dist: Dist, values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device if dist.backend == "nccl" else "cpu")
    tdist.all_reduce(t)
    return [float(x) for x in t.cpu()]


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's part of an epoch's clip order, as ``DistributedSampler`` splits it
    (wrap-around padding to a multiple of ``world``, then every ``world``-th from ``rank``)."""
    if world <= 1:
        return order
    n = len(order)
    total = -(-n // world) * world
    padded = np.concatenate([order, np.resize(order, total - n)]) if total > n else order
    return padded[rank::world]


def weights_digest(model: Any) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def any_rank(dist: Dist, device: torch.device) -> Callable[[bool], bool]:
    """``flag -> bool``: True on every rank when ``flag`` is True on any rank (a collective
    under DDP; the identity in one process)."""

    def reduce(flag: bool) -> bool:
        if not dist.enabled:
            return flag
        return sum_across_ranks(dist, [1.0 if flag else 0.0], device)[0] > 0

    return reduce
