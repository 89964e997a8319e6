"""Actor and critic heads that act on encoder features.

* :class:`Critic` -- Q(s, a) (SAC / RLPD critic, one ensemble member).
* :class:`StateCritic` -- V(s).
* :class:`DiscreteCritic` -- Q(s, .) over a discrete action set (HiL-SERL grasp critic).
* :class:`TanhGaussianPolicy` -- SAC actor (Haarnoja et al. 2018, appendix C), outputs the
  pre-tanh Gaussian ``(mean, log_std)``; the pure functions below sample it, score it
  and take its mode.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from serl_ext.networks.mlp import MLP, default_init, get_activation

_LOG_2PI = math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


class Critic(nn.Module):
    """Q(s, a): MLP on ``concat(features, actions)`` -> scalar.

    Inputs: ``features`` float32 ``(..., F)``, ``actions`` float32 ``(..., A)`` (same
    leading dims). Output float32 ``(...)``.
    """

    hidden_dims: Sequence[int]
    use_layer_norm: bool = True
    activation: str = "relu"

    @nn.compact
    def __call__(self, features: jax.Array, actions: jax.Array) -> jax.Array:
        x = jnp.concatenate([features, actions], axis=-1)
        x = MLP(self.hidden_dims, activations=get_activation(self.activation),
                use_layer_norm=self.use_layer_norm, activate_final=True)(x)
        return nn.Dense(1, kernel_init=default_init())(x)[..., 0]


class StateCritic(nn.Module):
    """V(s): MLP on ``features`` ``(..., F)`` -> float32 ``(...)``."""

    hidden_dims: Sequence[int]
    use_layer_norm: bool = True
    activation: str = "relu"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = MLP(self.hidden_dims, activations=get_activation(self.activation),
                use_layer_norm=self.use_layer_norm, activate_final=True)(features)
        return nn.Dense(1, kernel_init=default_init())(x)[..., 0]


class DiscreteCritic(nn.Module):
    """Q(s, .) over ``num_actions`` discrete actions: ``(..., F)`` -> ``(..., num_actions)``.

    Used for the HiL-SERL gripper critic (``GraspCritic`` in
    ``serl_launcher/networks/actor_critic_nets.py``, 3 actions).
    """

    hidden_dims: Sequence[int]
    num_actions: int = 3
    use_layer_norm: bool = True
    activation: str = "relu"

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        x = MLP(self.hidden_dims, activations=get_activation(self.activation),
                use_layer_norm=self.use_layer_norm, activate_final=True)(features)
        return nn.Dense(self.num_actions, kernel_init=default_init())(x)


class TanhGaussianPolicy(nn.Module):
    """SAC actor: state-dependent diagonal Gaussian, squashed by tanh.

    Attributes:
      hidden_dims: MLP widths.
      action_dim: A.
      use_layer_norm: LayerNorm in the trunk (HiL-SERL default True).
      activation: hidden activation name (``serl_ext.networks.mlp.ACTIVATIONS``).
      std_min, std_max: bounds on the standard deviation; ``log_std`` is clipped to
        ``[log std_min, log std_max]`` (HiL-SERL ``std_parameterization="exp"`` clips std to
        [1e-5, 5]).

    Input ``features`` float32 ``(..., F)``; returns ``(mean, log_std)``, both float32
    ``(..., A)``, of the pre-tanh Gaussian. Use :func:`tanh_gaussian_sample`,
    :func:`tanh_gaussian_log_prob` and :func:`tanh_gaussian_mode` on them.
    """

    hidden_dims: Sequence[int]
    action_dim: int
    use_layer_norm: bool = True
    std_min: float = 1e-5
    std_max: float = 5.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, features: jax.Array) -> Tuple[jax.Array, jax.Array]:
        if not 0 < self.std_min < self.std_max:
            raise ValueError(
                f"need 0 < std_min < std_max, got std_min={self.std_min}, std_max={self.std_max}"
            )
        x = MLP(self.hidden_dims, activations=get_activation(self.activation),
                use_layer_norm=self.use_layer_norm, activate_final=True)(features)
        mean = nn.Dense(self.action_dim, kernel_init=default_init())(x)
        log_std = nn.Dense(self.action_dim, kernel_init=default_init())(x)
        log_std = jnp.clip(log_std, math.log(self.std_min), math.log(self.std_max))
        return mean, log_std


def _log_tanh_jacobian(pre_tanh: jax.Array) -> jax.Array:
    """log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x)), numerically stable."""
    return 2.0 * (_LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def _gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    z = (x - mean) * jnp.exp(-log_std)
    return -0.5 * z**2 - log_std - 0.5 * _LOG_2PI


def tanh_gaussian_sample(
    key: jax.Array, mean: jax.Array, log_std: jax.Array
) -> Tuple[jax.Array, jax.Array]:
    """Reparameterised sample ``a = tanh(mean + std * eps)`` and its log-density.

    Args:
      key: PRNG key (consumed).
      mean, log_std: float32 ``(..., A)`` from :class:`TanhGaussianPolicy`.

    Returns ``(actions (..., A) in (-1, 1), log_prob (...))`` with
    ``log_prob = sum_i [log N(x_i; mean_i, std_i) - log(1 - tanh(x_i)^2)]`` (change of
    variables, SAC paper eq. 21), computed from the pre-tanh sample so it stays finite
    when ``tanh`` saturates.
    """
    eps = jax.random.normal(key, mean.shape, dtype=jnp.float32)
    x = mean + jnp.exp(log_std) * eps
    log_prob = jnp.sum(_gaussian_log_prob(x, mean, log_std) - _log_tanh_jacobian(x), axis=-1)
    return jnp.tanh(x), log_prob


def tanh_gaussian_log_prob(
    actions: jax.Array, mean: jax.Array, log_std: jax.Array, eps: float = 1e-6
) -> jax.Array:
    """Log-density of squashed actions under the tanh-Gaussian.

    ``actions`` ``(..., A)`` in [-1, 1] are clipped to ``[-1 + eps, 1 - eps]`` before
    ``atanh`` (the density is undefined at +-1). Returns float32 ``(...)``.
    """
    a = jnp.clip(jnp.asarray(actions, jnp.float32), -1.0 + eps, 1.0 - eps)
    x = jnp.arctanh(a)
    return jnp.sum(_gaussian_log_prob(x, mean, log_std) - _log_tanh_jacobian(x), axis=-1)


def tanh_gaussian_mode(mean: jax.Array) -> jax.Array:
    """Deterministic action ``tanh(mean)`` (the evaluation action of SAC / HiL-SERL)."""
    return jnp.tanh(mean)
