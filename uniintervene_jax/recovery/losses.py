"""Losses of the recovery policy (DESIGN section 4 "Recovery policy"): pure ``jax.numpy``
functions ``(outputs, targets) -> (loss, info)`` of the two heads.

* token head (the official one): cross-entropy of the next FAST token, PAD targets masked;
* continuous head: mean squared error of the chunk.
"""

from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax


def chunk_loss(pred: jax.Array, actions: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """MSE of the continuous head: mean of ``(pred - actions)^2`` over ``(B, H, A)`` (float32).

    Returns ``(loss, {"train/loss", "train/mse"})`` (both the same scalar).
    """
    loss = jnp.mean(jnp.square(pred - actions))
    return loss, {"train/loss": loss, "train/mse": loss}


def token_loss(logits: jax.Array, targets: jax.Array, pad: int) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Masked next-token cross-entropy of the token head.

    Args:
      logits: float32 ``(B, L, vocab)`` at the inputs ``[BOS, t_1, ..., t_{L-1}]``.
      targets: int32 ``(B, L)``: FAST tokens, EOS, then PAD.
      pad: the PAD id; PAD targets are masked out (the mean is over the other targets, at least 1).
    Returns ``(loss, {"train/loss", "train/token_accuracy"})``: the masked mean cross-entropy and
    the masked fraction of targets that are the argmax.
    """
    mask = (targets != pad).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    loss = jnp.sum(ce * mask) / jnp.maximum(mask.sum(), 1.0)
    acc = jnp.sum((jnp.argmax(logits, -1) == targets) * mask) / jnp.maximum(mask.sum(), 1.0)
    return loss, {"train/loss": loss, "train/token_accuracy": acc}
