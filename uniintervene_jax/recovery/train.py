"""Training loop of the goal-conditioned recovery policy: fit the FAST tokenizer (token head)
on the training chunks, then ``num_steps`` updates of a new
:class:`~uniintervene_jax.recovery.model.RecoveryPolicy` on uniformly sampled minibatches of
:func:`~uniintervene_jax.recovery.dataset.recovery_training_pairs` (config: :mod:`.config`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np

from uniintervene_jax.recovery.config import resolve_config
from uniintervene_jax.recovery.dataset import take_pairs
from uniintervene_jax.recovery.fast import FASTTokenizer
from uniintervene_jax.recovery.model import RecoveryPolicy


def train_recovery_policy(
    pairs: Mapping[str, Any],
    config: Any = None,
    num_steps: int = 1000,
    batch_size: int = 64,
    seed: int = 0,
    log_every: int = 100,
    fast_tokenizer: Optional[FASTTokenizer] = None,
) -> Tuple[RecoveryPolicy, List[Dict[str, float]]]:
    """Fits the FAST tokenizer (token head, unless given) on ``pairs["actions"]`` and trains a new
    :class:`RecoveryPolicy` for ``num_steps`` steps on uniformly sampled minibatches.

    Args:
      pairs: output of :func:`recovery_training_pairs` (or any dict with the same four keys).
      config: recovery-policy config overrides (:func:`~uniintervene_jax.recovery.config.get_default_config`).
      batch_size: minibatch size (sampled with replacement from a ``numpy`` generator seeded by ``seed``).
      log_every: history interval in steps (the last step is always logged).
    Returns:
      ``(policy, history)``: history is a list of ``{"step", "train/loss", ...}`` dicts.
    Raises:
      ValueError: empty pairs, bad num_steps/batch_size.
    """
    n = int(np.shape(pairs["actions"])[0])
    if n == 0:
        raise ValueError("no training pairs")
    if int(num_steps) < 1 or int(batch_size) < 1:
        raise ValueError(f"num_steps and batch_size must be >= 1, got {num_steps}, {batch_size}")
    c = resolve_config(config)
    actions = np.asarray(pairs["actions"], np.float32)
    if c.head == "token" and fast_tokenizer is None:
        fast_tokenizer = FASTTokenizer(c.fast.scale, c.fast.vocab_size, c.fast.min_frequency).fit(actions)
    obs_example = {k: v[0] for k, v in pairs["observations"].items()}
    policy = RecoveryPolicy.create(jax.random.PRNGKey(seed), obs_example, actions.shape[2], c, fast_tokenizer)
    data = dict(pairs)
    if c.head == "token":
        data["target_tokens"] = policy.encode_chunks(actions)  # tokenise once
    rng = np.random.default_rng(seed)
    history = []
    for step in range(1, int(num_steps) + 1):
        idx = rng.integers(0, n, size=int(batch_size))
        policy, info = policy.update(take_pairs(data, idx))
        if step % int(log_every) == 0 or step == int(num_steps):
            history.append({"step": step, **info})
    return policy, history
