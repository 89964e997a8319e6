"""Training loop of the intervention model: ``steps`` Adam steps on batches sampled from an
:class:`~uniintervene_jax.intervention.dataset.InterventionDataset` (losses:
:mod:`.losses`; model: :mod:`.model`; config: :mod:`.config`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

from uniintervene_jax.intervention.config import resolve_config
from uniintervene_jax.intervention.dataset import InterventionDataset
from uniintervene_jax.intervention.model import InterventionModel


def train_intervention_model(dataset: InterventionDataset, config: Any = None, steps: int = 1000,
                             progress_bar: bool = True, model: Optional[InterventionModel] = None
                             ) -> Tuple[InterventionModel, List[Dict[str, float]]]:
    """Trains (or continues training ``model``) for ``steps`` Adam steps.

    Batches of ``config.batch_size`` are sampled with replacement from the decision rows of
    ``dataset`` at natural class frequency (:meth:`InterventionDataset.sample_indices`; numpy
    generator seeded with ``config.seed``). A new model is created from ``dataset``'s first row (the
    PRNG key from ``config.seed``). Returns ``(model, history)``; ``history`` holds a dict
    of floats (``step`` + the update info) every ``config.log_every`` steps and at the end.
    Raises ValueError when ``dataset.history_len`` differs from ``config.history_len`` or
    ``steps < 1``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if model is None:
        cfg = resolve_config(config)
        if dataset.history_len != int(cfg.history_len):
            raise ValueError(f"dataset value history has K={dataset.history_len}, config.history_len={cfg.history_len}")
        example = {k: v[0] for k, v in dataset.observations.items()}
        model = InterventionModel.create(jax.random.PRNGKey(int(cfg.seed)), example, dataset.actions.shape[1],
                                         dataset.target_latents_next.shape[1], cfg, dataset.instr_ids.shape[1])
    else:
        cfg = model.config
    rng = np.random.default_rng(int(cfg.seed))
    history: List[Dict[str, float]] = []
    iterator = range(1, steps + 1)
    bar = None
    if progress_bar:
        from tqdm import tqdm
        bar = tqdm(iterator, desc="intervention model", leave=False)
        iterator = bar
    log_every = max(1, int(cfg.log_every))
    for step in iterator:
        batch = dataset.sample(rng, int(cfg.batch_size))
        model, info = model.update(batch)
        if step % log_every == 0 or step == steps:
            row = {"step": step, **{k: float(v) for k, v in info.items()}}
            history.append(row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}")
    return model, history
