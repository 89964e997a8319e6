"""The proxy-value loss (DESIGN.md section 4; the official offline code,
``research_impl/JEPA/train_vf_stitched.py:compute_value_losses_from_preds`` with the settings of
``scripts/run_vf_stitched.sh``: alpha_prog 1, progress_on_success_only 1, lambda_mc 0).

Every term is the average over the twin heads ``0.5 * (term(V1) + term(V2))`` of a weighted
batch mean ``wmean(x) = sum_b w_b x_b / max(sum_b w_b, 1e-6)`` (the official
``_weighted_mean``), with ``w_b = failure_weight`` for samples from failed episodes and 1.0
otherwise (the official run script uses 1.0 for both):

* TD (weight 1): ``(V_k(s) - y)^2`` with ``y = r + gamma (1 - d) min(V1, V2)(s')`` (gamma 0.99),
  ``y`` stopped. ``min(V1, V2)(s')`` uses the target parameters, updated after every step by
  Polyak averaging with rate ``target_tau``; the default ``target_tau = 1.0`` makes the target
  the current parameters under ``stop_gradient`` (the official code's ``.detach()``).
* label regression (weight 0.3), on **all** samples: ``(V_k(s) - (G_MC + progress * success))^2``.
* progress regression (weight 1), on **successful samples only**: ``(V_k(s) - progress)^2``
  weighted by ``w_b * success_b`` (normalised by the weight of the successful samples).
* conservative hinge (weight 0.05): ``relu(V_k(s) - G_MC)``, the Monte-Carlo return.

Rewards for the value function do not come from the env: ``r = 1`` and ``d = 1`` at the last
step of a successful episode (the success terminal), ``r = 0`` elsewhere; the last step of a
failed episode has ``d = 1`` only if the env terminated it (a truncation bootstraps).
Batches hold ``failure_fraction`` (0.5) samples from failed episodes.
"""

from __future__ import annotations

from typing import Dict, Tuple

import chex
import jax
import jax.numpy as jnp


def proxy_value_loss(
    v1: jax.Array,
    v2: jax.Array,
    v_next: jax.Array,
    rewards: jax.Array,
    dones: jax.Array,
    progress: jax.Array,
    mc_returns: jax.Array,
    success: jax.Array,
    weights: jax.Array,
    gamma: float = 0.99,
    td_weight: float = 1.0,
    label_weight: float = 0.3,
    progress_weight: float = 1.0,
    conservative_weight: float = 0.05,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Proxy-value loss of one batch (pure; formula in the module docstring).

    Args:
      v1, v2: float32 ``(B,)`` head values at ``s`` (after the sigmoid).
      v_next: float32 ``(B,)`` ``min(V1, V2)(s')`` (stopped here).
      rewards, dones, progress, mc_returns: float32 ``(B,)``.
      success: ``(B,)`` 1.0 for samples from successful episodes, else 0.0.
      weights: ``(B,)`` per-sample weights (``failure_weight`` for failed episodes, else 1).

    Returns:
      ``(loss, info)``: scalar total and ``td_loss``, ``label_loss``, ``progress_loss``,
      ``conservative_loss`` (unweighted by the term weights), ``td_target``, ``v_mean``.
    """
    chex.assert_rank(v1, 1)
    chex.assert_equal_shape([v1, v2, v_next, rewards, dones, progress, mc_returns, success, weights])
    target = jax.lax.stop_gradient(rewards + gamma * (1.0 - dones) * v_next)

    def wmean(x, w):
        return jnp.sum(w * x) / jnp.maximum(jnp.sum(w), 1e-6)

    def twin(fn, w):
        return 0.5 * (wmean(fn(v1), w) + wmean(fn(v2), w))

    label_target = mc_returns + progress * success
    td = twin(lambda v: (v - target) ** 2, weights)
    label = twin(lambda v: (v - label_target) ** 2, weights)
    prog = twin(lambda v: (v - progress) ** 2, weights * success)
    cons = twin(lambda v: jax.nn.relu(v - mc_returns), weights)
    loss = td_weight * td + label_weight * label + progress_weight * prog + conservative_weight * cons
    info = {
        "loss": loss,
        "td_loss": td,
        "label_loss": label,
        "progress_loss": prog,
        "conservative_loss": cons,
        "td_target": jnp.mean(target),
        "v_mean": jnp.mean(jnp.minimum(v1, v2)),
    }
    return loss, info
