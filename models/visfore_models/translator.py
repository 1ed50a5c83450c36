"""Frame translator: RGB frames -> joint angles and key-point positions (the
"translation/understanding" step from what the camera sees to the robot's state).

:class:`FrameTranslator` maps the last frame (or the last ``memory`` frames) of a robot to
its joint configuration ``q`` (radians) and its key points ``k`` (metres, the env's
``keypoints`` layout). No env code, no dataset I/O: the toolkit
(``visfore train-translator``) decodes the training targets from the datasets' states and
stores the key-point normalisation in the model's buffers.

Architecture (``L = len(channels)``, ``H, W`` divisible by ``2 ** L``)::

    frame (3, H, W) ++ CoordConv x/y channels in [-1, 1]          (5, H, W)
      -> conv 5x5 s2 + GN + ReLU                         (channels[0], H/2, W/2)
      -> [conv 3x3 s2 + GN + ReLU] for channels[1:]      (channels[-1], H/2^L, W/2^L)
    memory > 1: the encoder runs on each of the last ``memory`` frames and a ConvLSTM
      cell (:class:`visfore_models.convlstm.ConvLSTMCell`, Shi et al. 2015) runs over
      them at the bottleneck; its last hidden state is the feature map
      (``lstm_channels``, H/2^L, W/2^L)
    flatten (keeps *where* things are) -> Linear(hidden) + ReLU ->
      angle head   Linear(2 nq)  -> (c_j, s_j) per joint;  q_j = atan2(s_j, c_j)
      key-point head Linear(G)   -> z (normalised);        k = z * std + mean

Angles. Each joint angle is predicted as a point ``(c, s)`` on the plane, trained towards
``(cos q, sin q)`` and decoded with ``atan2(s, c)`` (in [-pi, pi]), so an angle near
``pi`` and one near ``-pi`` are neighbours for the loss and the output never has to jump
at the wrap-around (the continuous-representation argument of Zhou et al. 2019, "On the
Continuity of Rotation Representations in Neural Networks", CVPR, for 2D rotations). This
assumes every ``qpos`` coordinate is a hinge angle (true for the reachers and the target
humanoid).

Key points are regressed in units of the training set's per-coordinate standard
deviation around its mean (buffers ``keypoint_mean`` / ``keypoint_std``, (G,) float32,
saved in the ``state_dict``; set them with :meth:`FrameTranslator.set_keypoint_stats`).

CoordConv: Liu et al. 2018, "An intriguing failing of convolutional neural networks and
the CoordConv solution", arXiv:1807.03247 -- two constant channels holding the pixel
coordinates make absolute positions easy to regress. GroupNorm (never BatchNorm) keeps
each sample independent of its batch, so eval and train mode agree.

(De)serialisation::

    state = translator_state(model)     # {"name": "frame_translator", "config", "state_dict"}
    model = load_translator(state)      # rebuilt, weights and key-point stats loaded, eval mode
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_channels, check_positive, conv_gn_relu
from .base import normalize_image_size
from .convlstm import ConvLSTMCell

__all__ = [
    "TRANSLATOR_NAME",
    "FrameTranslator",
    "angles_from_cos_sin",
    "load_translator",
    "translator_loss",
    "translator_state",
    "wrap_angle",
]

#: ``name`` stored by :func:`translator_state`.
TRANSLATOR_NAME = "frame_translator"


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Angles (any shape, radians) wrapped into [-pi, pi): ``(x + pi) mod 2 pi - pi``."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def angles_from_cos_sin(cos_sin: torch.Tensor) -> torch.Tensor:
    """Decode ``(..., nq, 2)`` (cos-like, sin-like) pairs to angles ``(..., nq)`` in
    [-pi, pi] with ``atan2(s, c)``; the pair need not be on the unit circle."""
    return torch.atan2(cos_sin[..., 1], cos_sin[..., 0])


class FrameTranslator(nn.Module):
    """CNN (+ optional ConvLSTM memory) from frames to joint angles and key points.

    Args:
        num_joints: nq >= 1, joint angles predicted (hinges, radians).
        num_keypoint_coords: G >= 1, key-point coordinates predicted (metres).
        image_size: ``H`` (square) or ``(H, W)``; both divisible by ``2 ** len(channels)``.
        memory: frames the model looks at (1 = the last frame only, a plain CNN; > 1: a
            ConvLSTM over the last ``memory`` frames).
        channels: encoder widths, each conv halves the resolution (default
            ``(32, 64, 64, 128)``: 64x64 -> 4x4; about 0.66 M parameters with one frame).
            A full-resolution first conv cost 4.5x the CPU time for no gain we needed.
        lstm_channels: hidden channels of the ConvLSTM cell (used when ``memory > 1``).
        hidden: width of the fully connected layer before the heads.
        coord_channels: append the CoordConv x/y channels to the input.

    Raises:
        ValueError: a size is not a positive int, or the image size does not fit.

    Call: ``model(frames)`` with ``frames`` float in [0, 1], ``(B, 3, H, W)`` (one frame)
    or ``(B, T, 3, H, W)`` (the last frame is the one translated; only the last ``memory``
    frames are used, and with ``T < memory`` the first frame is repeated on the left, as
    at the start of an episode). Returns a dict:

    * ``"cos_sin"``: (B, nq, 2) raw angle outputs (trained towards ``(cos q, sin q)``);
    * ``"qpos"``: (B, nq) angles in radians, [-pi, pi] (``atan2``);
    * ``"keypoints_norm"``: (B, G) normalised key points;
    * ``"keypoints"``: (B, G) key points in metres (``keypoints_norm * std + mean``).
    """

    #: Buffers (``register_buffer``): key-point normalisation and the coordinate channels.
    keypoint_mean: torch.Tensor
    keypoint_std: torch.Tensor
    coords: torch.Tensor

    def __init__(
        self,
        *,
        num_joints: int,
        num_keypoint_coords: int,
        image_size: int | tuple[int, int] = 64,
        memory: int = 1,
        channels: Sequence[int] = (32, 64, 64, 128),
        lstm_channels: int = 64,
        hidden: int = 256,
        coord_channels: bool = True,
    ) -> None:
        super().__init__()
        self.num_joints = check_positive("num_joints", num_joints)
        self.num_keypoint_coords = check_positive("num_keypoint_coords", num_keypoint_coords)
        self.image_size = normalize_image_size(image_size)
        self.memory = check_positive("memory", memory)
        self.channels = check_channels("channels", channels)
        self.lstm_channels = check_positive("lstm_channels", lstm_channels)
        self.hidden = check_positive("hidden", hidden)
        self.coord_channels = bool(coord_channels)
        factor = 2 ** len(self.channels)
        H, W = self.image_size
        if H % factor or W % factor:
            raise ValueError(
                f"FrameTranslator with {len(self.channels)} encoder levels needs H and W "
                f"divisible by {factor}, got {H}x{W}"
            )
        cin = 3 + (2 if self.coord_channels else 0)
        layers = [conv_gn_relu(cin, self.channels[0], 5, stride=2)]
        for a, b in zip(self.channels[:-1], self.channels[1:]):
            layers.append(conv_gn_relu(a, b, 3, stride=2))
        self.encoder = nn.Sequential(*layers)
        feat_c = self.channels[-1]
        if self.memory > 1:
            self.lstm: ConvLSTMCell | None = ConvLSTMCell(feat_c, self.lstm_channels, 3)
            feat_c = self.lstm_channels
        else:
            self.lstm = None
        h, w = H // factor, W // factor
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(feat_c * h * w, self.hidden), nn.ReLU(inplace=True))
        self.angle_head = nn.Linear(self.hidden, 2 * self.num_joints)
        self.keypoint_head = nn.Linear(self.hidden, self.num_keypoint_coords)
        self.register_buffer("keypoint_mean", torch.zeros(self.num_keypoint_coords))
        self.register_buffer("keypoint_std", torch.ones(self.num_keypoint_coords))
        ys = torch.linspace(-1.0, 1.0, H).view(1, 1, H, 1).expand(1, 1, H, W)
        xs = torch.linspace(-1.0, 1.0, W).view(1, 1, 1, W).expand(1, 1, H, W)
        self.register_buffer("coords", torch.cat([xs, ys], dim=1), persistent=False)

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this model (plain types)."""
        return {
            "num_joints": self.num_joints,
            "num_keypoint_coords": self.num_keypoint_coords,
            "image_size": list(self.image_size),
            "memory": self.memory,
            "channels": list(self.channels),
            "lstm_channels": self.lstm_channels,
            "hidden": self.hidden,
            "coord_channels": self.coord_channels,
        }

    @torch.no_grad()
    def set_keypoint_stats(self, mean: Any, std: Any, *, min_std: float = 1e-3) -> None:
        """Set the key-point normalisation: ``mean``, ``std`` (G,) metres (array-likes).

        ``std`` is clamped below at ``min_std`` (a coordinate that never moves, e.g. a
        fixed shoulder, would otherwise divide by ~0).

        Raises:
            ValueError: a shape other than (G,) or a non-finite value.
        """
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        g = self.num_keypoint_coords
        if mean.shape != (g,) or std.shape != (g,):
            raise ValueError(f"key-point mean/std must have shape ({g},), got {tuple(mean.shape)}, {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("key-point mean/std must be finite")
        self.keypoint_mean.copy_(mean)
        self.keypoint_std.copy_(std.clamp_min(min_std))

    def _check(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() == 4:
            frames = frames.unsqueeze(1)
        if frames.dim() != 5 or frames.shape[2] != 3 or tuple(frames.shape[3:]) != self.image_size:
            H, W = self.image_size
            raise ValueError(
                f"FrameTranslator expects frames (B, 3, {H}, {W}) or (B, T, 3, {H}, {W}), got {tuple(frames.shape)}"
            )
        if not frames.is_floating_point():
            raise ValueError(f"FrameTranslator expects float frames in [0, 1], got {frames.dtype}")
        T = frames.shape[1]
        if T > self.memory:
            frames = frames[:, T - self.memory :]
        elif T < self.memory:
            pad = frames[:, :1].expand(-1, self.memory - T, -1, -1, -1)
            frames = torch.cat([pad, frames], dim=1)
        return frames

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """The vector fed to the heads: (B, hidden) from frames as in :meth:`forward`."""
        frames = self._check(frames)
        B, T = frames.shape[:2]
        x = frames.reshape(B * T, *frames.shape[2:])
        if self.coord_channels:
            x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1).to(x.dtype)], dim=1)
        f = self.encoder(x)
        f = f.reshape(B, T, *f.shape[1:])
        if self.lstm is None:
            feat = f[:, -1]
        else:
            state = self.lstm(f[:, 0])
            for t in range(1, T):
                state = self.lstm(f[:, t], state)
            feat = state[0]
        return self.fc(feat)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(frames)
        cos_sin = self.angle_head(h).view(-1, self.num_joints, 2)
        z = self.keypoint_head(h)
        return {
            "cos_sin": cos_sin,
            "qpos": angles_from_cos_sin(cos_sin),
            "keypoints_norm": z,
            "keypoints": z * self.keypoint_std + self.keypoint_mean,
        }


def translator_loss(
    output: Mapping[str, torch.Tensor],
    qpos: torch.Tensor,
    keypoints: torch.Tensor,
    *,
    model: FrameTranslator,
    keypoint_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Training loss of :class:`FrameTranslator`.

    * ``angle``: mean squared error between ``output["cos_sin"]`` (B, nq, 2) and
      ``(cos q, sin q)``: ``2 - 2 cos(dq)`` per joint on the unit circle, so smooth
      across the wrap-around;
    * ``keypoint``: mean squared error of the normalised key points,
      ``((k - mean) / std - z)^2``;
    * ``total = angle + keypoint_weight * keypoint``.

    Args:
        output: the dict returned by the model.
        qpos: (B, nq) true angles, radians; keypoints: (B, G) true key points, metres.

    Returns:
        ``{"total", "angle", "keypoint"}`` scalar tensors.
    """
    target_cs = torch.stack([torch.cos(qpos), torch.sin(qpos)], dim=-1)
    angle = F.mse_loss(output["cos_sin"], target_cs)
    z = (keypoints - model.keypoint_mean) / model.keypoint_std
    keypoint = F.mse_loss(output["keypoints_norm"], z)
    return {"total": angle + keypoint_weight * keypoint, "angle": angle, "keypoint": keypoint}


def translator_state(model: FrameTranslator) -> dict[str, Any]:
    """``{"name": "frame_translator", "config": dict, "state_dict": dict}`` (``torch.save``-able;
    the key-point statistics are in the ``state_dict``)."""
    if not isinstance(model, FrameTranslator):
        raise ValueError(f"translator_state needs a FrameTranslator, got {type(model).__name__}")
    return {"name": TRANSLATOR_NAME, "config": model.config(), "state_dict": model.state_dict()}


def load_translator(state: Mapping[str, Any], *, device: torch.device | str | None = None) -> FrameTranslator:
    """Rebuild a :class:`FrameTranslator` from :func:`translator_state`'s dict, in eval mode.

    Raises:
        ValueError: a key is missing or the name is not ``"frame_translator"``.
    """
    missing = [k for k in ("name", "config", "state_dict") if k not in state]
    if missing:
        raise ValueError(f"translator state lacks key(s) {missing}; expected name, config, state_dict")
    if state["name"] != TRANSLATOR_NAME:
        raise ValueError(f"not a frame translator state (name {state['name']!r})")
    model = FrameTranslator(**dict(state["config"]))
    model.load_state_dict(state["state_dict"])
    if device is not None:
        model.to(device)
    return model.eval()
