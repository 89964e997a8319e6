"""Training loop of the proxy value function (DESIGN.md section 4, the official offline code):
episodes -> :class:`~uniintervene_jax.value.dataset.ValueDataset` -> ``steps`` updates of a new
:class:`~uniintervene_jax.value.model.ProxyValue` on batches with ``failure_fraction`` failures.
The loss is in :mod:`.losses`, the config in :mod:`.config`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from uniintervene_jax.value.config import resolve_config
from uniintervene_jax.value.dataset import ValueDataset
from uniintervene_jax.value.model import ProxyValue


def train_proxy_value(
    episodes: Sequence[Mapping[str, Any]],
    config: Optional[Any] = None,
    steps: int = 1000,
    progress_bar: bool = True,
    task: Optional[str] = None,
) -> ProxyValue:
    """Train a proxy value function on episodes (offline).

    Args:
      episodes: ``serl_ext.data.episodes`` dicts (successful and failed).
      config: :func:`~.config.get_default_config` fields (missing ones take defaults).
      steps: gradient steps (>= 1).
      progress_bar: show a tqdm bar with the running loss.
      task: instruction task for all episodes (None = each episode's ``metadata["task"]``).

    Returns the trained :class:`ProxyValue`.
    Raises ValueError for ``steps < 1`` and whatever :meth:`ValueDataset.from_episodes` raises.
    """
    from tqdm.auto import tqdm

    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    c = resolve_config(config)
    data = ValueDataset.from_episodes(episodes, task=task, gamma=float(c.gamma), failure_weight=float(c.failure_weight))
    example = {k: v[0] for k, v in data.frames.items()}
    model = ProxyValue.create(int(c.seed), example, c)
    np_rng = np.random.default_rng(int(c.seed))
    bar = tqdm(range(int(steps)), desc="proxy value", disable=not progress_bar)
    for step in bar:
        batch = data.sample(np_rng, int(c.batch_size), float(c.failure_fraction))
        model, info = model.update(batch)
        if progress_bar and (step % 50 == 0 or step == int(steps) - 1):
            bar.set_postfix(loss=f"{float(info['loss']):.4f}", td=f"{float(info['td_loss']):.4f}")
    return model
