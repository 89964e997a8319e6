"""Critic ensembles (``nn.vmap`` over parameters) and REDQ-style subsampling.

Pattern from ikostrikov/rlpd ``rlpd/networks/ensemble.py``: one module definition,
parameters stacked on a leading ensemble axis, inputs broadcast to every member.
"""

from __future__ import annotations

from typing import Any, Type

import flax.linen as nn
import jax
import jax.numpy as jnp


class Ensemble(nn.Module):
    """``num`` independent copies of ``net_cls`` evaluated on the same inputs.

    Attributes:
      net_cls: module class (or ``functools.partial`` of one) to replicate.
      num: ensemble size (>= 1).

    Every parameter gets a leading axis of size ``num``; positional inputs are shared
    (``in_axes=None``); the output gets a leading ensemble axis: ``(num, *out_shape)``.
    Only positional arguments are supported (keyword arguments are not vmapped).
    """

    net_cls: Type[nn.Module]
    num: int = 2

    @nn.compact
    def __call__(self, *args):
        if self.num < 1:
            raise ValueError(f"Ensemble.num must be >= 1, got {self.num}")
        ensemble = nn.vmap(
            self.net_cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )
        return ensemble()(*args)


def subsample_indices(key: jax.Array, num_sample: int, num_qs: int) -> jax.Array:
    """Random subset of ``num_sample`` distinct members out of ``num_qs`` (REDQ).

    Returns int32 ``(num_sample,)``. Raises ValueError unless 1 <= num_sample <= num_qs.
    """
    if not 1 <= int(num_sample) <= int(num_qs):
        raise ValueError(
            f"need 1 <= num_sample <= num_qs, got num_sample={num_sample}, num_qs={num_qs}"
        )
    return jax.random.choice(key, int(num_qs), shape=(int(num_sample),), replace=False)


def subsample_ensemble(key: jax.Array, params: Any, num_sample: int | None, num_qs: int) -> Any:
    """Keep a random subset of ensemble members in a parameter tree (REDQ, Chen et al. 2021).

    Args:
      key: PRNG key (consumed).
      params: parameters of an :class:`Ensemble`, every leaf with leading axis ``num_qs``.
      num_sample: members to keep; ``None`` or ``num_qs`` returns ``params`` unchanged.
      num_qs: ensemble size.

    Returns the same tree with leading axis ``num_sample`` (members chosen without
    replacement with :func:`subsample_indices` from ``key``). Apply it with an
    ``Ensemble(..., num=num_sample)`` module definition.
    Raises ValueError on an out-of-range ``num_sample`` or a leaf whose leading axis is
    not ``num_qs``.
    """
    if num_sample is None or int(num_sample) == int(num_qs):
        return params
    idx = subsample_indices(key, num_sample, num_qs)

    def take(x):
        if x.ndim == 0 or x.shape[0] != num_qs:
            raise ValueError(
                f"every ensemble parameter needs leading axis {num_qs}, got shape {x.shape}"
            )
        return jnp.take(x, idx, axis=0)

    return jax.tree_util.tree_map(take, params)
