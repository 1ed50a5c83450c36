"""The feature-space costs of ``visfore plan``: ``--cost latent`` and ``--cost keypoints``
through a latent model's probe, and the weighted sum of cost terms.

A latent world model (``rssm``, ``jepa``; :mod:`visfore_models.latent`) imagines the
features of every candidate without decoding a frame
(``model.imagine(state, actions (1, N, T, A), decode=False) -> (1, N, T, F)``) and maps a
goal image into the same space (``model.encode_goal(goal (1, 3, H, W)) -> (1, F)``). The
planner scores candidates there (the latent-space planning of PlaNet, Hafner et al. 2019,
arXiv:1811.04551, with a goal embedding in place of a reward model, as in goal-conditioned
latent planning with JEPA-style world models, e.g. DINO-WM, Zhou et al. 2024,
arXiv:2411.04983, which takes the squared L2 distance between the imagined and the goal
embedding at the final step):

* :func:`latent_cost`: ``||f_t - g||_2^2`` (sum over the ``F`` features) at the final
  step, or its mean over every step of the horizon;
* :func:`keypoint_cost`: ``||k_t - k*||_2`` in metres, final or mean over steps, for key
  points read by the model's probe (:func:`probe_keypoints`) or by a translator from
  frames (:class:`visfore.planning.costs.Translator`);
* :func:`weighted_sum`: ``sum_i w_i c_i`` over the terms of ``--cost``;
* :func:`latent_distances` / :func:`keypoint_distances`: the same distances per step
  against one goal per sample (``visfore train-through-model``'s latent loss, differentiable).

The probe (``train-model --probe keypoints``) is a read-out trained on the dataset's
*states* (privileged labels, :mod:`visfore.data.labels`); a plan that uses it is
state-supervised, and ``visfore plan`` labels it so. Its outputs are ``P = G + nq`` values,
the ``G`` key-point coordinates first (the env's layout ``[p0_x, p0_y(, p0_z), p1_x,
...]``, metres), then the joint angles; :func:`probe_keypoint_coords` finds ``G``.

Pixel models implement the same methods (features = flattened frames), so these costs
work on them too (``latent`` is then the summed squared pixel error).
"""

from __future__ import annotations

from typing import Any, Mapping

from visfore.core.errors import VisforeError

__all__ = [
    "keypoint_cost",
    "keypoint_distances",
    "latent_cost",
    "latent_distances",
    "probe_goal_keypoints",
    "probe_keypoint_coords",
    "probe_keypoints",
    "select_steps",
    "weighted_sum",
]


def select_steps(values: Any, cost_steps: str) -> Any:
    """``(N, T, ...)`` -> ``(N, 1, ...)`` (the final step, ``"final"``) or all T (``"all"``).

    Raises:
        VisforeError: ``cost_steps`` not final or all.
    """
    if cost_steps == "final":
        return values[:, -1:]
    if cost_steps == "all":
        return values
    raise VisforeError(f"--cost-steps must be one of final, all, got {cost_steps!r}")


def latent_cost(features: Any, goal: Any, cost_steps: str = "final") -> Any:
    """Squared L2 distance of imagined features to the goal's.

    Args:
        features: ``(N, T, F)`` float tensor, the features of the ``T`` imagined states of
            each of ``N`` candidates (``model.imagine(..., decode=False)``).
        goal: ``(F,)`` float tensor, ``model.encode_goal(goal_frame[None])[0]``.
        cost_steps: ``"final"`` (step T only) or ``"all"`` (mean over the T steps).

    Returns:
        ``(N,)`` float32: ``sum_f (features[n, t, f] - goal[f])^2`` at ``t = T``, or its
        mean over ``t``. Zero for a candidate whose (final, or every) feature equals the
        goal exactly.

    Raises:
        VisforeError: shapes that do not match (one line).
    """
    if features.dim() != 3 or goal.shape != features.shape[-1:]:
        raise VisforeError(
            f"latent cost needs features (N, T, F) and a goal (F,), got {tuple(features.shape)} and {tuple(goal.shape)}"
        )
    sel = select_steps(features.float(), cost_steps)
    return (sel - goal.float()).square().sum(dim=-1).mean(dim=1)


def keypoint_cost(keypoints: Any, goal: Any, cost_steps: str = "final") -> Any:
    """Euclidean distance of key points to the goal's key points.

    Args:
        keypoints: ``(N, T, G)`` float tensor, metres (the env's layout).
        goal: ``(G,)`` float tensor, metres.
        cost_steps: ``"final"`` or ``"all"`` (mean over the T steps).

    Returns:
        ``(N,)`` float32 ``||k_t - k*||_2`` (metres, over all ``G`` coordinates, as the env's
        ``info["distance"]``) at the final step or averaged over the steps.

    Raises:
        VisforeError: shapes that do not match (one line).
    """
    if keypoints.dim() != 3 or goal.shape != keypoints.shape[-1:]:
        raise VisforeError(
            f"key-point cost needs key points (N, T, G) and a goal (G,), got {tuple(keypoints.shape)} "
            f"and {tuple(goal.shape)}"
        )
    sel = select_steps(keypoints.float(), cost_steps)
    return (sel - goal.float()).norm(dim=-1).mean(dim=1)


def probe_keypoints(model: Any, features: Any, coords: int) -> Any:
    """The key points a model's probe reads from features: its first ``coords`` outputs.

    Args:
        model: a latent model with a probe (``model.probe_dim >= coords``).
        features: ``(..., F)`` float tensor.
        coords: ``G``, the key-point coordinates (:func:`probe_keypoint_coords`).

    Returns:
        ``(..., G)`` float32, metres.
    """
    return model.probe(features)[..., :coords].float()


def probe_goal_keypoints(model: Any, goal_frames: Any, frames: int, coords: int) -> Any:
    """The key points a model's probe reads from goal frames held still: the features of
    ``init_state`` of each goal frame repeated ``frames`` times with zero actions (a
    robot at rest in the goal pose), then :func:`probe_keypoints`.

    The probe is trained on the features of filtered states, so this is the input it
    knows. ``model.encode_goal`` is the frame embedding the ``latent`` cost compares
    against, a different input for the probe: on ``ReacherPlane-v0`` (32x32, an ``rssm``
    trained with ``--probe keypoints+velocities --probe-weight 10``, 40 target poses) the
    goal's key points read from it were 2.7 cm off (norm over the 4 coordinates) against
    1.1 cm from the state at rest, while the success threshold is 2 cm.

    Args:
        model: a latent model with a probe and ``init_state`` / ``features``.
        goal_frames: ``(B, 3, H, W)`` float in [0, 1], on the model's device.
        frames: how many times each goal frame is filtered (>= 1; the planner's window).
        coords: ``G``, the key-point coordinates.

    Returns:
        ``(B, G)`` float32 metres. A stochastic model draws from torch's RNG (seed it).
    """
    B = goal_frames.shape[0]
    held = goal_frames[:, None].expand(B, int(frames), *goal_frames.shape[1:])
    rest = goal_frames.new_zeros((B, int(frames) - 1, int(model.action_dim)))
    state = model.init_state(held, rest)
    return probe_keypoints(model, model.features(state), coords)


def probe_keypoint_coords(model: Any, env: Any, layout: Any = None) -> int:
    """``G``, how many of a probe's outputs are key-point coordinates.

    Taken from the run's probe layout when it has one (a
    :class:`visfore.data.labels.ProbeLayout`, ``ModelRun.probe``: its ``keypoint_coords``;
    or ``config.yaml``'s ``probe`` mapping: ``keypoint_names`` x ``axis_names``), else from
    the env: ``len(keypoint_sites) * len(keypoint_axes)`` of ``env.unwrapped``
    (:class:`visfore_envs.core.KeypointTargetEnv`), the layout the probe's labels come from.

    Raises:
        VisforeError: the model has no probe (``probe_dim == 0``), ``G`` is unknown, or the
            probe has fewer outputs than ``G`` (one line each).
    """
    probe_dim = int(getattr(model, "probe_dim", 0) or 0)
    name = getattr(model, "name", type(model).__name__)
    if probe_dim < 1:
        raise VisforeError(f"the {name} model has no probe")
    G = 0
    if isinstance(getattr(layout, "keypoint_coords", None), int):
        G = int(layout.keypoint_coords)
    elif isinstance(layout, Mapping) and layout.get("keypoint_names") and layout.get("axis_names"):
        G = len(layout["keypoint_names"]) * len(layout["axis_names"])
    else:
        base = getattr(env, "unwrapped", env)
        sites = tuple(getattr(base, "keypoint_sites", ()) or ())
        axes = tuple(getattr(base, "keypoint_axes", (0, 1, 2)) or ())
        G = len(sites) * len(axes)
    if G < 1:
        raise VisforeError(f"cannot tell which probe outputs of the {name} model are key points")
    if probe_dim < G:
        raise VisforeError(
            f"the {name} model's probe has {probe_dim} outputs, fewer than the env's {G} key-point coordinates"
        )
    return G


def weighted_sum(terms: Mapping[str, Any], weights: Mapping[str, float]) -> Any:
    """``sum_i weights[i] * terms[i]`` over the names in ``weights``.

    Args:
        terms: name -> ``(N,)`` cost tensor (``pixels``, ``latent``, ``keypoints``).
        weights: name -> weight (>= 0); every name must be in ``terms``.

    Returns:
        ``(N,)`` float32.

    Raises:
        VisforeError: a weighted term missing from ``terms``, or no terms.
    """
    if not weights:
        raise VisforeError("the cost has no terms")
    total = None
    for name, w in weights.items():
        if name not in terms:
            raise VisforeError(f"cost term {name!r} was not computed")
        part = float(w) * terms[name].float()
        total = part if total is None else total + part
    assert total is not None
    return total


def _per_sample_goal(values: Any, goal: Any, what: str) -> None:
    if values.dim() != 3 or goal.dim() != 2 or goal.shape[0] != values.shape[0] or goal.shape[1] != values.shape[2]:
        raise VisforeError(
            f"{what} needs values (B, T, D) and goals (B, D), got {tuple(values.shape)} and {tuple(goal.shape)}"
        )


def latent_distances(features: Any, goal: Any) -> Any:
    """Squared L2 distance of every imagined state's features to its sample's goal.

    Args:
        features: ``(B, T, F)`` float tensor (``model.imagine(..., decode=False)``).
        goal: ``(B, F)`` float tensor, one goal per sample (``model.encode_goal(goals)``).

    Returns:
        ``(B, T)`` float32 ``sum_f (features[b, t, f] - goal[b, f])^2`` (the terms of
        :func:`latent_cost`, per step); differentiable.

    Raises:
        VisforeError: shapes that do not match (one line).
    """
    _per_sample_goal(features, goal, "the latent distance")
    return (features.float() - goal.float()[:, None]).square().sum(dim=-1)


def keypoint_distances(keypoints: Any, goal: Any) -> Any:
    """Euclidean distance of every step's key points to its sample's goal key points.

    Args:
        keypoints: ``(B, T, G)`` float tensor, metres.
        goal: ``(B, G)`` float tensor, metres.

    Returns:
        ``(B, T)`` float32 ``||k_t - k*||_2`` (the terms of :func:`keypoint_cost`, per
        step); differentiable (a zero distance has a zero gradient).

    Raises:
        VisforeError: shapes that do not match (one line).
    """
    _per_sample_goal(keypoints, goal, "the key-point distance")
    return (keypoints.float() - goal.float()[:, None]).norm(dim=-1)
