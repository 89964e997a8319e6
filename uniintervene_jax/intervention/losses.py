"""Losses of the intervention model (DESIGN.md section 4, "Intervention model").

All functions are pure ``jax.numpy`` code (jittable, differentiable) and also accept numpy
arrays. Shape checks are static (they raise at trace time); value checks (NaN) are left to
the callers that see concrete data (:mod:`uniintervene_jax.intervention.train`).

Total loss (all weights 1 by default, DESIGN section 4, official lambda_future / lambda_q /
lambda_v_curr / lambda_tvr / lambda_intervention)::

    L = w_f * normalized_mse(z_pred, z_target(o_{t+1}))              # future head (use_future)
      + w_q * [smooth_l1(q1, V(t+1)) + smooth_l1(q2, V(t+1))]         # twin Q head
      + w_v * smooth_l1(v_now, V_t)                                   # current-value head (tvr_history)
      + w_r * smooth_l1(risk, TVR_t)                                  # risk regression (tvr_history)
      + w_c * sigmoid_focal_loss(risk, label_t, alpha=0.75, gamma=2)  # trigger logit

With ``head_type="tvr_history"`` the same risk scalar is both regressed to the temporal
value-risk target and used as the logit of the stagnation label (DESIGN section 4); with
``"binary"`` the trigger head's logit has the focal term only. See :func:`intervention_loss`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp


def _float_pair(pred: Any, target: Any, name: str) -> Tuple[jax.Array, jax.Array]:
    """Both as float32 arrays; ValueError naming ``name`` when their shapes differ."""
    pred = jnp.asarray(pred, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"{name}: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    return pred, target


def normalized_mse(pred: jax.Array, target: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Normalised MSE of the future head (DESIGN section 4: "L2-normalise both, squared error").

    ``pred`` and ``target`` are L2-normalised along the last axis (norm floored at ``eps``),
    then the squared error is **summed over the feature axis D** and **averaged over the
    batch**. For unit vectors this equals ``2 - 2 cos(pred, target)``, so the value lies in
    ``[0, 4]`` and is invariant to a positive rescaling of either input.

    Args:
      pred: float ``(B, D)`` (any leading dims ``(..., D)``) predicted latent.
      target: float, same shape, target latent (gradients are not stopped here; callers pass
        a constant).
    Returns: float32 scalar.
    Raises: ValueError when shapes differ or the input has no feature axis.
    """
    pred, target = _float_pair(pred, target, "normalized_mse")
    if pred.ndim < 1:
        raise ValueError("normalized_mse needs a feature axis, got a scalar")

    def unit(x):
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)

    err = jnp.sum(jnp.square(unit(pred) - unit(target)), axis=-1)
    return jnp.mean(err)


def smooth_l1(pred: jax.Array, target: jax.Array, beta: float = 1.0) -> jax.Array:
    """Smooth-L1 (Huber) loss with mean reduction, as PyTorch ``F.smooth_l1_loss``.

    Per element with ``d = |pred - target|``: ``0.5 d^2 / beta`` if ``d < beta`` else
    ``d - 0.5 beta``; ``beta == 0`` is plain L1 (as in PyTorch).

    Args: ``pred``, ``target`` float arrays of the same shape; ``beta >= 0`` (Python float).
    Returns: float32 scalar (mean over all elements).
    Raises: ValueError for different shapes or ``beta < 0``.
    """
    if beta < 0:
        raise ValueError(f"smooth_l1: beta must be >= 0, got {beta}")
    pred, target = _float_pair(pred, target, "smooth_l1")
    d = jnp.abs(pred - target)
    if beta == 0:
        return jnp.mean(d)
    return jnp.mean(jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta))


def sigmoid_focal_loss(logits: jax.Array, labels: jax.Array, alpha: float = 0.75,
                       gamma: float = 2.0) -> jax.Array:
    """Sigmoid focal loss (Lin et al. 2017) with mean reduction, as torchvision
    ``ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction="mean")``.

    ``p = sigmoid(x)``, ``ce = BCE-with-logits(x, y)``, ``p_t = p y + (1 - p)(1 - y)``,
    ``loss = ce (1 - p_t)^gamma``, and when ``alpha >= 0`` multiplied by
    ``alpha_t = alpha y + (1 - alpha)(1 - y)``. DESIGN section 4 uses alpha 0.75, gamma 2
    on the stagnation label. ``ce`` is computed with ``log_sigmoid`` (stable for large |x|).

    Args:
      logits: float ``(B,)`` (any shape).
      labels: same shape, bool or float in [0, 1].
      alpha: class weight of positives; a negative value disables weighting (torchvision).
      gamma: focusing exponent >= 0.
    Returns: float32 scalar (mean over all elements).
    Raises: ValueError for different shapes or ``gamma < 0``.
    """
    if gamma < 0:
        raise ValueError(f"sigmoid_focal_loss: gamma must be >= 0, got {gamma}")
    x, y = _float_pair(logits, labels, "sigmoid_focal_loss")
    p = jax.nn.sigmoid(x)
    ce = -(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))
    p_t = p * y + (1.0 - p) * (1.0 - y)
    loss = ce * jnp.power(1.0 - p_t, gamma)
    if alpha >= 0:
        loss = loss * (alpha * y + (1.0 - alpha) * (1.0 - y))
    return jnp.mean(loss)


def _flag(config: Any, name: str, default: Any) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default) if hasattr(config, name) else default


def intervention_loss(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array],
                      config: Any) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Total loss of the intervention model (DESIGN section 4; weights 1 by default).

    Args:
      outputs: dict from :class:`~uniintervene_jax.intervention.model.InterventionNet`:
        ``risk``, ``q1``, ``q2`` (B,) always; ``z_pred`` (B, D) when ``use_future``;
        ``v_now`` (B,) with ``tvr_history``.
      batch: ``target_latents_next`` (B, D) latent of o_{t+1} under the frozen target
        encoder (used when ``use_future``), ``values_next`` (B,) proxy V(t+1), ``values_now``
        (B,) proxy V_t and ``tvr`` (B,) TVR target (``tvr_history``), ``labels`` (B,) bool
        stagnation labels.
      config: ConfigDict or mapping with ``use_future`` (bool, default True), ``head_type``
        (default ``"tvr_history"``), weights ``future_weight``, ``q_weight``,
        ``value_weight``, ``tvr_weight``, ``focal_weight`` (default 1), ``focal_alpha``
        (0.75), ``focal_gamma`` (2.0), ``smooth_l1_beta`` (1.0).

    ``use_future=False`` drops ``future_loss``; ``head_type="binary"`` drops ``value_loss``
    and ``risk_tvr_loss``. The Q and focal terms are always on.

    Returns: ``(loss, info)``; ``info`` holds float32 scalars ``loss`` and each active term
    (``future_loss``, ``q_loss`` = sum of both heads' smooth-L1, ``q1_loss``, ``q2_loss``,
    ``value_loss``, ``risk_tvr_loss``, ``focal_loss``) plus ``risk_mean``, ``q_mean``.
    Raises: ValueError (KeyError-like message) when a needed output or batch key is missing.
    """
    use_future = bool(_flag(config, "use_future", True))
    use_tvr = str(_flag(config, "head_type", "tvr_history")) == "tvr_history"
    beta = float(_flag(config, "smooth_l1_beta", 1.0))

    def need(d, key, what):
        if key not in d:
            raise ValueError(f"intervention_loss: {what} has no key {key!r}; keys: {sorted(d)}")
        return d[key]

    risk = need(outputs, "risk", "outputs")
    terms: Dict[str, jax.Array] = {}
    weights: Dict[str, float] = {}
    if use_future:
        z_target = jax.lax.stop_gradient(jnp.asarray(need(batch, "target_latents_next", "batch")))
        terms["future_loss"] = normalized_mse(need(outputs, "z_pred", "outputs"), z_target)
        weights["future_loss"] = float(_flag(config, "future_weight", 1.0))
    v_next = jnp.asarray(need(batch, "values_next", "batch"), jnp.float32)
    q1_loss = smooth_l1(need(outputs, "q1", "outputs"), v_next, beta)
    q2_loss = smooth_l1(need(outputs, "q2", "outputs"), v_next, beta)
    terms["q_loss"] = q1_loss + q2_loss
    weights["q_loss"] = float(_flag(config, "q_weight", 1.0))
    if use_tvr:
        terms["value_loss"] = smooth_l1(need(outputs, "v_now", "outputs"),
                                        jnp.asarray(need(batch, "values_now", "batch"), jnp.float32), beta)
        weights["value_loss"] = float(_flag(config, "value_weight", 1.0))
        terms["risk_tvr_loss"] = smooth_l1(risk, jnp.asarray(need(batch, "tvr", "batch"), jnp.float32), beta)
        weights["risk_tvr_loss"] = float(_flag(config, "tvr_weight", 1.0))
    terms["focal_loss"] = sigmoid_focal_loss(risk, need(batch, "labels", "batch"),
                                             float(_flag(config, "focal_alpha", 0.75)),
                                             float(_flag(config, "focal_gamma", 2.0)))
    weights["focal_loss"] = float(_flag(config, "focal_weight", 1.0))

    loss = sum(weights[k] * v for k, v in terms.items())
    info = dict(terms)
    info["loss"] = loss
    info["risk_mean"] = jnp.mean(risk)
    info["q1_loss"] = q1_loss
    info["q2_loss"] = q2_loss
    info["q_mean"] = jnp.mean(outputs["q"]) if "q" in outputs else jnp.mean(
        jnp.minimum(outputs["q1"], outputs["q2"]))
    return loss, info
