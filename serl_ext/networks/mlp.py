"""Multi-layer perceptron used by every head (critic, actor, gripper critic).

Follows the jaxrl / rlpd ``MLP``: Dense -> (Dropout) -> (LayerNorm) -> activation
per hidden layer; the activation after the last layer is optional.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

default_init = nn.initializers.xavier_uniform

#: Hidden activations by config name (``agent.activation``). HiL-SERL's launchers use tanh
#: (``serl_launcher/utils/launcher.py``), jaxrl / RLPD use relu.
ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu, "swish": nn.swish}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (a key of ``ACTIVATIONS``).

    Raises:
      ValueError: unknown name (the message lists the known ones).
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Fully connected network.

    Attributes:
      hidden_dims: widths of the Dense layers, e.g. ``(256, 256)``; the last one is the
        output width.
      activations: activation applied after each hidden layer (``nn.relu`` default).
      use_layer_norm: LayerNorm after each Dense (before the activation), as in RLPD /
        HiL-SERL critics.
      activate_final: also apply dropout/LayerNorm/activation after the last layer.
      dropout_rate: dropout probability (None or 0 = off). Needs ``rngs={"dropout": key}``
        and ``train=True`` to be active.

    Input ``x``: float array ``(..., D)``; output float32 ``(..., hidden_dims[-1])``.
    Raises ValueError if ``hidden_dims`` is empty.
    """

    hidden_dims: Sequence[int]
    activations: Callable[[jax.Array], jax.Array] = nn.relu
    use_layer_norm: bool = False
    activate_final: bool = False
    dropout_rate: Optional[float] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if len(self.hidden_dims) == 0:
            raise ValueError("MLP.hidden_dims must contain at least one width, got ()")
        x = jnp.asarray(x, jnp.float32)
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(int(size), kernel_init=default_init())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                if self.dropout_rate is not None and self.dropout_rate > 0:
                    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
                if self.use_layer_norm:
                    x = nn.LayerNorm()(x)
                x = self.activations(x)
        return x
