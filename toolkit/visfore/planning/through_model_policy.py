"""The policy of ``visfore train-through-model`` and its loading: :class:`GoalPolicyNet`,
the goal-conditioned network on frames that the training backpropagates into (pixel
models), and :class:`LatentPolicyNet`, the MLP on a latent model's features (``rssm``,
``jepa``); :class:`ThroughModelPolicy` / :class:`LatentThroughModelPolicy`, a trained net
as a :class:`visfore.planning.goal_reaching.GoalController` for real episodes (``visfore
plan --policy RUN``); and :func:`load_through_model_policy`, which reads either back from
a run directory (``checkpoints/best.pt`` or ``last.pt``; the run is trained by
:mod:`visfore.planning.through_model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from visfore.core import runs
from visfore.core.device import select_device
from visfore.core.errors import VisforeError
from visfore.worldmodels.model_run import frames_to_model, load_model_run, sample_seed

__all__ = [
    "COMMAND",
    "GoalPolicyNet",
    "LatentPolicyNet",
    "LatentThroughModelPolicy",
    "ThroughModelPolicy",
    "load_through_model_policy",
]

#: Run directory prefix and ``config.yaml`` ``command``.
COMMAND = "train-policy-through-model"
CHECKPOINT_FORMAT = "visfore-through-model-policy-checkpoint"
CHECKPOINT_VERSION = 1
POLICY_NETS = ("cnn", "mlp")
#: ``net`` of a :class:`LatentPolicyNet`'s config (the policy of a latent model).
LATENT_NET = "latent-mlp"


class _BoundedActionNet(nn.Module):
    """What both policy nets share: the action bounds (buffers ``action_low`` /
    ``action_high``, (A,) float32), scaling actions into ``[-1, 1]`` and squashing raw
    outputs into the bounds."""

    action_low: torch.Tensor  # (A,) buffer
    action_high: torch.Tensor  # (A,) buffer

    def _register_bounds(self, A: int, action_low: Any, action_high: Any) -> None:
        """Check and store the bounds (default ``[-1, 1]`` per dimension).

        Raises:
            ValueError: not two (A,) arrays with ``low < high``.
        """
        low = np.asarray([-1.0] * A if action_low is None else action_low, dtype=np.float32).reshape(-1)
        high = np.asarray([1.0] * A if action_high is None else action_high, dtype=np.float32).reshape(-1)
        if low.shape != (A,) or high.shape != (A,) or not np.all(low < high):
            raise ValueError(f"action bounds must be two ({A},) arrays with low < high, got {low} and {high}")
        self.register_buffer("action_low", torch.from_numpy(low))
        self.register_buffer("action_high", torch.from_numpy(high))

    def scale_action(self, action: torch.Tensor) -> torch.Tensor:
        """``(..., A)`` actions in the bounds -> ``[-1, 1]``."""
        mid = (self.action_high + self.action_low) / 2
        half = (self.action_high - self.action_low) / 2
        return (action - mid) / half

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        """``(..., A)`` raw outputs -> ``low + (tanh(raw) + 1) / 2 * (high - low)``."""
        u = torch.tanh(raw)
        return self.action_low + (u + 1.0) * 0.5 * (self.action_high - self.action_low)


class GoalPolicyNet(_BoundedActionNet):
    """Goal-conditioned deterministic policy on frames.

    Inputs (all on the net's device):

    * ``frames``: ``(B, F, 3, H, W)`` float in ``[0, 1]``, the last ``F`` frames, oldest
      first (the current frame last);
    * ``goal``: ``(B, 3, H, W)`` float in ``[0, 1]``, the goal frame;
    * ``prev_action``: ``(B, A)`` float, the previous action in the env's units (ignored
      unless ``prev_action=True``; zeros at an episode's start).

    Output: ``(B, A)`` actions ``low + (tanh(z) + 1) / 2 * (high - low)``, strictly inside
    the action bounds.

    Networks:

    * ``cnn``: the ``F + 1`` frames stacked on channels ``(B, 3(F+1), H, W)`` minus 0.5 ->
      4 convolutions 4x4 stride 2 (32, 64, 64, 64 channels, ReLU; H/16 x W/16) -> flatten,
      concatenated with the scaled previous action -> Linear(hidden) -> ReLU -> Linear(A)
      (the encoder of Mnih et al.'s DQN family, strided instead of pooled).
    * ``mlp``: every frame average-pooled to ``mlp_size x mlp_size`` -> flatten (with the
      previous action) -> Linear(hidden) -> ReLU -> Linear(hidden) -> ReLU -> Linear(A).

    The last layer starts at weights ``U(-3e-3, 3e-3)`` and bias 0 (DDPG's actor
    initialisation, Lillicrap et al. 2016), so initial actions are near the bounds' middle.

    Args:
        net: ``cnn`` or ``mlp``.
        image_size: ``(H, W)``; the cnn needs both >= 16.
        action_dim: A.
        action_low, action_high: ``(A,)`` bounds, ``low < high``.
        frames: F >= 1.
        prev_action: use the previous action.
        hidden: hidden width.
        mlp_size: pooled frame size of the mlp (<= H and W).

    Raises:
        ValueError: bad sizes or bounds (one line).
    """

    CNN_CHANNELS = (32, 64, 64, 64)

    def __init__(
        self,
        *,
        net: str = "cnn",
        image_size: Sequence[int] = (64, 64),
        action_dim: int = 2,
        action_low: Sequence[float] | np.ndarray | None = None,
        action_high: Sequence[float] | np.ndarray | None = None,
        frames: int = 1,
        prev_action: bool = True,
        hidden: int = 256,
        mlp_size: int = 16,
    ) -> None:
        super().__init__()
        if net not in POLICY_NETS:
            raise ValueError(f"policy net must be one of {', '.join(POLICY_NETS)}, got {net!r}")
        H, W = (int(image_size[0]), int(image_size[1]))
        A = int(action_dim)
        self.net, self.image_size, self.action_dim = net, (H, W), A
        self.frames, self.use_prev_action, self.hidden, self.mlp_size = (
            int(frames),
            bool(prev_action),
            int(hidden),
            int(mlp_size),
        )
        self._register_bounds(A, action_low, action_high)
        in_ch = 3 * (self.frames + 1)
        extra = A if self.use_prev_action else 0
        if net == "cnn":
            n = len(self.CNN_CHANNELS)
            if H < 2**n or W < 2**n:
                raise ValueError(f"the cnn policy needs frames of at least {2**n}x{2**n}, got {H}x{W}")
            layers: list[nn.Module] = []
            c = in_ch
            for out in self.CNN_CHANNELS:
                layers += [nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU()]
                c = out
            self.encoder = nn.Sequential(*layers, nn.Flatten())
            flat = c * (H >> n) * (W >> n)
            self.head = nn.Sequential(nn.Linear(flat + extra, self.hidden), nn.ReLU(), nn.Linear(self.hidden, A))
        else:
            s = self.mlp_size
            if s > H or s > W:
                raise ValueError(f"mlp_size {s} exceeds the frame size {H}x{W}")
            self.encoder = nn.Sequential(nn.AdaptiveAvgPool2d((s, s)), nn.Flatten())
            self.head = nn.Sequential(
                nn.Linear(in_ch * s * s + extra, self.hidden),
                nn.ReLU(),
                nn.Linear(self.hidden, self.hidden),
                nn.ReLU(),
                nn.Linear(self.hidden, A),
            )
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.uniform_(last.weight, -3e-3, 3e-3)
        nn.init.zeros_(last.bias)

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this net (YAML/JSON-plain)."""
        return {
            "net": self.net,
            "image_size": list(self.image_size),
            "action_dim": self.action_dim,
            "action_low": [float(x) for x in self.action_low.cpu()],
            "action_high": [float(x) for x in self.action_high.cpu()],
            "frames": self.frames,
            "prev_action": self.use_prev_action,
            "hidden": self.hidden,
            "mlp_size": self.mlp_size,
        }

    def forward(
        self, frames: torch.Tensor, goal: torch.Tensor, prev_action: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Actions ``(B, A)`` for ``frames (B, F, 3, H, W)``, ``goal (B, 3, H, W)``,
        ``prev_action (B, A)`` (see the class docstring)."""
        B = frames.shape[0]
        x = torch.cat([frames.reshape(B, -1, *frames.shape[-2:]), goal], dim=1)
        if self.net == "cnn":
            x = x - 0.5
        z = self.encoder(x)
        if self.use_prev_action:
            prev = prev_action if prev_action is not None else z.new_zeros(B, self.action_dim)
            z = torch.cat([z, self.scale_action(prev.to(z.dtype))], dim=1)
        return self.squash(self.head(z))


class LatentPolicyNet(_BoundedActionNet):
    """Goal-conditioned deterministic policy on a latent model's features (DreamerV1's
    actor, Hafner et al. 2020, "Dream to Control", arXiv:1912.01603: an MLP on the model
    state, trained by backpropagating through the latent dynamics; here deterministic and
    goal-conditioned).

    Inputs (all on the net's device):

    * ``features``: ``(B, F)`` float, ``model.features(state)`` of the current state;
    * ``goal``: ``(B, F)`` float, ``model.encode_goal(goal frame)``;
    * ``prev_action``: ``(B, A)`` float, the previous action in the env's units (ignored
      unless ``prev_action=True``; zeros at an episode's start).

    Network: ``[features, goal, scaled previous action]`` -> ``layers`` times
    (Linear(hidden) -> LayerNorm -> SiLU, DreamerV3's MLP blocks) -> Linear(A) -> tanh,
    scaled to ``low + (tanh(z) + 1) / 2 * (high - low)``, strictly inside the bounds. The
    last layer starts at ``U(-3e-3, 3e-3)`` and bias 0, as :class:`GoalPolicyNet`'s.

    Args:
        feature_dim: F (``model.feature_dim``).
        action_dim: A.
        action_low, action_high: ``(A,)`` bounds, ``low < high``.
        prev_action: use the previous action.
        hidden: hidden width.
        layers: hidden layers (>= 1).

    Raises:
        ValueError: bad sizes or bounds (one line).
    """

    net = LATENT_NET

    def __init__(
        self,
        *,
        feature_dim: int,
        action_dim: int = 2,
        action_low: Sequence[float] | np.ndarray | None = None,
        action_high: Sequence[float] | np.ndarray | None = None,
        prev_action: bool = True,
        hidden: int = 256,
        layers: int = 2,
    ) -> None:
        super().__init__()
        F, A = int(feature_dim), int(action_dim)
        if F < 1 or A < 1 or int(hidden) < 1 or int(layers) < 1:
            raise ValueError(
                f"the latent policy needs feature_dim, action_dim, hidden and layers >= 1, got {F}, {A}, "
                f"{hidden} and {layers}"
            )
        self.feature_dim, self.action_dim = F, A
        self.use_prev_action, self.hidden, self.layers = bool(prev_action), int(hidden), int(layers)
        self._register_bounds(A, action_low, action_high)
        blocks: list[nn.Module] = []
        width = 2 * F + (A if self.use_prev_action else 0)
        for _ in range(self.layers):
            blocks += [nn.Linear(width, self.hidden), nn.LayerNorm(self.hidden), nn.SiLU()]
            width = self.hidden
        last = nn.Linear(width, A)
        nn.init.uniform_(last.weight, -3e-3, 3e-3)
        nn.init.zeros_(last.bias)
        self.head = nn.Sequential(*blocks, last)

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this net (YAML/JSON-plain), with ``net``."""
        return {
            "net": LATENT_NET,
            "feature_dim": self.feature_dim,
            "action_dim": self.action_dim,
            "action_low": [float(x) for x in self.action_low.cpu()],
            "action_high": [float(x) for x in self.action_high.cpu()],
            "prev_action": self.use_prev_action,
            "hidden": self.hidden,
            "layers": self.layers,
        }

    def forward(
        self, features: torch.Tensor, goal: torch.Tensor, prev_action: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Actions ``(B, A)`` for ``features (B, F)``, ``goal (B, F)``, ``prev_action (B, A)``."""
        B = features.shape[0]
        parts = [features.float(), goal.float().expand(B, -1)]
        if self.use_prev_action:
            prev = prev_action if prev_action is not None else features.new_zeros(B, self.action_dim)
            parts.append(self.scale_action(prev.float()))
        return self.squash(self.head(torch.cat(parts, dim=1)))


def _last_frames(history: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """``(B, n, 3, H, W)``: the last ``n`` of ``history`` (each ``(B, 3, H, W)``), oldest
    first, the earliest repeated where fewer exist."""
    frames = list(history[-n:])
    frames = [frames[0]] * (n - len(frames)) + frames
    return torch.stack(frames, dim=1)


def _to_float(x: np.ndarray, device: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).to(torch.float32).div_(255.0)


class _PolicyFrames:
    """What both through-model controllers share: the net's action bounds as numpy (A,)
    float32 arrays, and the check of an env frame (uint8 (H, W, 3), the model's size)."""

    net: Any
    image_size: tuple[int, ...]

    @property
    def action_low(self) -> np.ndarray:
        return self.net.action_low.cpu().numpy()

    @property
    def action_high(self) -> np.ndarray:
        return self.net.action_high.cpu().numpy()

    def _checked_frame(self, frame: Any, what: str) -> np.ndarray:
        """``frame`` as an array. Raises VisforeError (one line): another shape or dtype."""
        frame = np.asarray(frame)
        H, W = self.image_size
        if frame.shape != (H, W, 3) or frame.dtype != np.uint8:
            raise VisforeError(
                f"the through-model policy takes ({H}, {W}, 3) uint8 frames; the {what} is {frame.dtype} {frame.shape}"
            )
        return frame


class ThroughModelPolicy(_PolicyFrames):
    """A trained :class:`GoalPolicyNet` as a :class:`visfore.planning.goal_reaching.GoalController`.

    Attributes:
        name: ``"through-model"``.
        net: the :class:`GoalPolicyNet` (eval mode).
        device: its ``torch.device``.
        image_size: (H, W) of the frames it takes.
        env_id, env_kwargs: the env of the training frames (from the model's dataset).
        run_dir: the run directory it was loaded from (None when built in memory).
        imagined: always None (the policy imagines nothing at run time).

    ``act`` keeps the last F real frames (the first one repeated at reset) and the previous
    action (zeros at reset) and returns ``(A,)`` float32 inside the action bounds, no
    randomness.
    """

    name = "through-model"
    imagined: np.ndarray | None = None

    def __init__(
        self,
        net: GoalPolicyNet,
        *,
        device: Any = "cpu",
        env_id: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        run_dir: Path | None = None,
        name: str = "through-model",
    ) -> None:
        self.net = net.eval()
        self.device = torch.device(device)
        self.env_id, self.env_kwargs, self.run_dir = env_id, dict(env_kwargs or {}), run_dir
        self.name = name
        self.image_size = tuple(net.image_size)
        self._history: list[torch.Tensor] = []
        self._goal: torch.Tensor | None = None
        self._prev: torch.Tensor | None = None
        self._fresh = True

    def _frame(self, frame: Any, what: str) -> torch.Tensor:
        frame = self._checked_frame(frame, what)
        return _to_float(frame, self.device).permute(2, 0, 1).contiguous()

    def reset(self, env: Any, obs: dict, goal_frame: np.ndarray, rng: np.random.Generator) -> None:
        """Start an episode at ``obs["pixels"]`` toward ``goal_frame`` ((H, W, 3) uint8);
        ``env`` and ``rng`` are not used (the policy is deterministic)."""
        self._goal = self._frame(goal_frame, "goal frame")[None]
        self._history = [self._frame(obs["pixels"], "observation")[None]]
        self._prev = torch.zeros(1, self.net.action_dim, device=self.device)
        self._fresh = True

    @torch.no_grad()
    def act(self, obs: dict, info: dict) -> np.ndarray:
        """The action ``(A,)`` float32 for the current ``obs["pixels"]``.

        Raises:
            VisforeError: called before :meth:`reset`, or a frame of another size.
        """
        if self._goal is None or self._prev is None:
            raise VisforeError("ThroughModelPolicy.act called before reset")
        if not self._fresh:  # the first act sees the reset observation, already held
            self._history.append(self._frame(obs["pixels"], "observation")[None])
            del self._history[: -self.net.frames]
        self._fresh = False
        a = self.net(_last_frames(self._history, self.net.frames), self._goal, self._prev)
        self._prev = a
        return a[0].cpu().numpy().astype(np.float32)

    def __repr__(self) -> str:
        return f"ThroughModelPolicy(net={self.net.net!r}, run_dir={self.run_dir})"


class LatentThroughModelPolicy(_PolicyFrames):
    """A trained :class:`LatentPolicyNet` and its latent model as a
    :class:`visfore.planning.goal_reaching.GoalController`.

    Each step filters the real frames into the model's latent state as ``visfore plan``'s
    latent planner does (:class:`visfore.planning.controllers.LearnedCEMController`): a
    window of the last C real frames (the reset frame repeated C times at reset) and the
    C - 1 actions taken between them (zeros at reset), ``state = model.init_state(frames,
    actions)`` -- the same filtering that gave the training's start states -- then the
    action ``net(model.features(state), model.encode_goal(goal frame), previous action)``.
    A stochastic model (rssm) filters under a seed drawn from the episode's generator
    (plus the step index), so episodes are reproducible and the global RNG is untouched.

    Attributes:
        name: ``"through-model"``.
        net: the :class:`LatentPolicyNet` (eval mode).
        model_run: the :class:`visfore.worldmodels.model_run.ModelRun` it acts through.
        device, image_size, env_id, env_kwargs, run_dir: as :class:`ThroughModelPolicy`.
        supervision: ``"self-supervised"``, or ``"state-supervised (...)"`` when the run's
            loss read key points through the model's probe.
        imagined: always None (the policy imagines nothing at run time).
    """

    name = "through-model"
    imagined: np.ndarray | None = None

    def __init__(
        self,
        net: LatentPolicyNet,
        model_run: Any,
        *,
        device: Any = "cpu",
        env_id: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        run_dir: Path | None = None,
        name: str = "through-model",
        supervision: str = "self-supervised",
    ) -> None:
        model = model_run.model
        if int(model.feature_dim) != net.feature_dim or int(model.action_dim) != net.action_dim:
            raise VisforeError(
                f"the policy takes {net.feature_dim} features and {net.action_dim}-dim actions but the "
                f"{model_run.model_name} model of {model_run.run_dir} has {model.feature_dim} and {model.action_dim}"
            )
        self.net = net.eval()
        self.model_run = model_run
        self.device = torch.device(device)
        self.env_id, self.env_kwargs, self.run_dir = env_id, dict(env_kwargs or {}), run_dir
        self.name, self.supervision = name, supervision
        self.image_size = tuple(model_run.image_size)
        self._frames: torch.Tensor | None = None  # (C, 3, H, W)
        self._actions: torch.Tensor | None = None  # (C - 1, A)
        self._goal: torch.Tensor | None = None  # (1, F)
        self._prev: torch.Tensor | None = None  # (1, A)
        self._seed: int | None = None
        self._t = 0

    def _frame(self, frame: Any, what: str) -> torch.Tensor:
        return frames_to_model(self._checked_frame(frame, what), self.device)

    @torch.no_grad()
    def reset(self, env: Any, obs: dict, goal_frame: np.ndarray, rng: np.random.Generator) -> None:
        """Start an episode at ``obs["pixels"]`` toward ``goal_frame`` ((H, W, 3) uint8);
        ``rng`` seeds a stochastic model's filtering, ``env`` is not used."""
        goal = self._frame(goal_frame, "goal frame")
        first = self._frame(obs["pixels"], "observation")
        C, A = self.model_run.context, self.net.action_dim
        self._frames = first[None].repeat(C, 1, 1, 1)
        self._actions = torch.zeros((C - 1, A), dtype=torch.float32, device=self.device)
        self._goal = self.model_run.model.encode_goal(goal[None]).float()
        self._prev = torch.zeros(1, A, device=self.device)
        self._seed = int(rng.integers(0, 2**62)) if self.model_run.stochastic else None
        self._t = 0

    def latent_features(self) -> torch.Tensor:
        """``(1, F)``: the features of the state filtered from the current window."""
        assert self._frames is not None and self._actions is not None
        seed = None if self._seed is None else self._seed + self._t
        with torch.no_grad(), sample_seed(seed, self.device):
            model = self.model_run.model
            return model.features(model.init_state(self._frames[None], self._actions[None])).float()

    @torch.no_grad()
    def act(self, obs: dict, info: dict) -> np.ndarray:
        """The action ``(A,)`` float32 for the current ``obs["pixels"]``.

        Raises:
            VisforeError: called before :meth:`reset`, or a frame of another size.
        """
        if self._frames is None or self._actions is None or self._goal is None or self._prev is None:
            raise VisforeError("LatentThroughModelPolicy.act called before reset")
        if self._t > 0:  # the first act sees the reset observation, already held
            new = self._frame(obs["pixels"], "observation")
            self._frames = torch.cat([self._frames[1:], new[None]], dim=0)
            if self._actions.shape[0] > 0:
                self._actions = torch.cat([self._actions[1:], self._prev], dim=0)
        a = self.net(self.latent_features(), self._goal, self._prev)
        self._prev = a
        self._t += 1
        return a[0].cpu().numpy().astype(np.float32)

    def __repr__(self) -> str:
        return f"LatentThroughModelPolicy(model={self.model_run.model_name!r}, run_dir={self.run_dir})"


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    """config.yaml of a train-through-model run (see :func:`visfore.core.runs.read_run_config`)."""
    return runs.read_run_config(run_dir, COMMAND, "train-through-model run")


def _net_from_state(state: Mapping[str, Any], path: Path, device: Any) -> GoalPolicyNet | LatentPolicyNet:
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("policy"), dict):
        raise VisforeError(f"{path} is not a through-model policy checkpoint")
    try:
        config = dict(state["policy"]["config"])
        net: GoalPolicyNet | LatentPolicyNet
        if config.get("net") == LATENT_NET:
            config.pop("net")
            net = LatentPolicyNet(**config)
        else:
            net = GoalPolicyNet(**config)
        net.load_state_dict(state["policy"]["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VisforeError(f"cannot rebuild the policy of {path}: {text}") from None
    return net.to(device).eval()


def load_through_model_policy(
    run_dir: str | Path, device: Any = None, checkpoint: str = "best"
) -> ThroughModelPolicy | LatentThroughModelPolicy:
    """Load the policy of a ``visfore train-through-model`` run.

    Args:
        run_dir: the run directory (``runs/train-policy-through-model-...``).
        device: None or ``"cpu"`` (CPU), ``"auto"``, ``"cuda"``, ``"cuda:N"`` or a
            ``torch.device``.
        checkpoint: ``best`` (lowest validation goal error in imagination; falls back to
            ``last`` when missing) or ``last``.

    Returns:
        A :class:`ThroughModelPolicy` (eval mode) with the env id / kwargs of the training
        frames; for a run trained through a latent model a
        :class:`LatentThroughModelPolicy`, with that model loaded from the model run that
        ``config.yaml`` records (``model.run_dir``, ``model.checkpoint``).

    Raises:
        VisforeError: not such a run, no or unreadable checkpoint, unknown ``checkpoint``,
            unavailable device, a latent run whose model run cannot be loaded (one line
            each).
    """
    if checkpoint not in ("best", "last"):
        raise VisforeError(f"unknown checkpoint {checkpoint!r}; valid: best, last")
    run_dir = Path(run_dir)
    saved = _read_run_config(run_dir)
    path = runs.best_checkpoint_path(run_dir) if checkpoint == "best" else runs.last_checkpoint_path(run_dir)
    if checkpoint == "best" and not path.is_file():
        path = runs.last_checkpoint_path(run_dir)
    if not path.is_file():
        raise VisforeError(f"{run_dir} has no trained policy ({runs.CHECKPOINT_DIR}/{path.name} is missing)")
    dev = device if isinstance(device, torch.device) else select_device(str(device or "cpu"))
    net = _net_from_state(runs.load_checkpoint(path, map_location=dev), path, dev)
    saved_env = saved.get("env")
    env: dict[str, Any] = saved_env if isinstance(saved_env, dict) else {}
    if isinstance(net, LatentPolicyNet):
        saved_model = saved.get("model")
        record: dict[str, Any] = saved_model if isinstance(saved_model, dict) else {}
        if not record.get("run_dir"):
            raise VisforeError(f"{run_dir / runs.CONFIG_NAME} records no model run (model.run_dir)")
        model_run = load_model_run(record["run_dir"], str(record.get("checkpoint") or "best"), device=dev)
        return LatentThroughModelPolicy(
            net,
            model_run,
            device=dev,
            env_id=env.get("id"),
            env_kwargs=env.get("kwargs") or {},
            run_dir=run_dir,
            supervision=str(saved.get("supervision") or "self-supervised"),
        )
    return ThroughModelPolicy(
        net, device=dev, env_id=env.get("id"), env_kwargs=env.get("kwargs") or {}, run_dir=run_dir
    )
