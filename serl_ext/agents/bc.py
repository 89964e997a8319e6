"""Behaviour cloning on the same encoders and tanh-Gaussian policy head as SAC.

Loss options (``config.loss``):

* ``"nll"`` (default): negative log-likelihood of the demonstrated actions under the
  tanh-Gaussian policy, ``-mean log pi(a|s)``; actions are clipped to
  ``[-1 + action_eps, 1 - action_eps]`` before ``atanh`` (HiL-SERL ``loss_bc`` uses the
  same log-likelihood). The tanh Jacobian term depends only on the data, so this fits
  a Gaussian to ``atanh(a)``.
* ``"mse"``: ``mean ||tanh(mean(s)) - a||^2`` on the deterministic action.

Unlike SAC, the encoder here is trained by the BC loss (there is no critic). The agent
has the same acting API and ``policy_params`` layout (``{"actor", "encoder"}``) as
:class:`serl_ext.agents.sac.SACAgent`, so the actor process treats both alike.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct
from flax.training.train_state import TrainState

from serl_ext.agents import common
from serl_ext.networks.augment import augment_observations
from serl_ext.networks.encoders import ObservationEncoder
from serl_ext.networks.heads import (
    TanhGaussianPolicy,
    tanh_gaussian_log_prob,
    tanh_gaussian_mode,
    tanh_gaussian_sample,
)
from serl_ext.networks.mlp import get_activation
from serl_ext.networks.params import to_numpy_tree

BC_LOSSES = ("nll", "mse")


def get_default_config() -> ml_collections.ConfigDict:
    """Default BC config."""
    c = ml_collections.ConfigDict()
    # Adam learning rate of the policy (incl. encoder).
    c.actor_lr = 3e-4
    # MLP widths of the policy head.
    c.hidden_dims = (256, 256)
    # LayerNorm after every hidden Dense.
    c.use_layer_norm = True
    # Hidden activation name (serl_ext.networks.mlp.ACTIVATIONS).
    c.activation = "relu"
    # "nll" (tanh-Gaussian negative log-likelihood) or "mse" (on tanh(mean)).
    c.loss = "nll"
    # Clip margin for demo actions before atanh in the NLL.
    c.action_eps = 1e-4
    # Bounds of the policy's standard deviation.
    c.std_min = 1e-5
    c.std_max = 5.0
    # Observation encoder (see serl_ext.agents.common.encoder_config).
    c.encoder = common.encoder_config()
    return c


def bc_loss(
    mean: jax.Array, log_std: jax.Array, actions: jax.Array, loss: str = "nll", action_eps: float = 1e-4
) -> jax.Array:
    """Scalar BC loss for policy outputs ``(B, A)`` and demo actions ``(B, A)`` in [-1, 1].

    ``"nll"``: ``-mean_b log pi(a_b|s_b)``; ``"mse"``: ``mean_b sum_i (tanh(mean) - a)^2``.
    Raises ValueError for another ``loss``.
    """
    if loss == "nll":
        return -jnp.mean(tanh_gaussian_log_prob(actions, mean, log_std, eps=action_eps))
    if loss == "mse":
        return jnp.mean(jnp.sum((tanh_gaussian_mode(mean) - actions) ** 2, axis=-1))
    raise ValueError(f"BC loss must be one of {BC_LOSSES}, got {loss!r}")


class BCAgent(struct.PyTreeNode):
    """Behaviour-cloning agent. Fields: ``rng``, ``actor`` (TrainState with params
    ``{"encoder", "actor"}``), static ``config``, ``encoder_def``, ``actor_def``, ``obs_spec``."""

    rng: jax.Array
    actor: TrainState
    config: ml_collections.FrozenConfigDict = struct.field(pytree_node=False)
    encoder_def: ObservationEncoder = struct.field(pytree_node=False)
    actor_def: TanhGaussianPolicy = struct.field(pytree_node=False)
    obs_spec: common.ObsSpec = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        rng: jax.Array,
        observations: Dict[str, Any],
        actions: Any,
        config: Optional[ml_collections.ConfigDict] = None,
    ) -> "BCAgent":
        """Build from one unbatched observation dict and one action ``(A,)`` example.

        ``config``: :func:`get_default_config` fields; missing ones take their defaults and
        fields BC does not have (e.g. a SAC config's ``critic_lr``) are ignored, so the
        training config's ``agent`` block can be passed as is.
        Raises ValueError/TypeError on a bad config or example.
        """
        config = get_default_config() if config is None else common.merge_config(get_default_config(), config, True)
        if config.loss not in BC_LOSSES:
            raise ValueError(f"config.loss must be one of {BC_LOSSES}, got {config.loss!r}")
        if not 0 < float(config.std_min) < float(config.std_max):
            raise ValueError(f"need 0 < std_min < std_max, got {config.std_min}, {config.std_max}")
        if not float(config.actor_lr) > 0:
            raise ValueError(f"config.actor_lr must be > 0, got {config.actor_lr}")
        obs_spec = common.make_obs_spec(observations)
        common.validate_encoder_config(config.encoder, observations)
        action_dim = common.check_action_example(actions)
        c = ml_collections.ConfigDict(config.to_dict())
        c.action_dim = action_dim
        c.hidden_dims = tuple(int(h) for h in config.hidden_dims)
        frozen = ml_collections.FrozenConfigDict(c)

        rng, k_enc, k_actor = jax.random.split(rng, 3)
        obs_b = common.batch_example(observations)
        encoder_def = common.make_encoder_def(config.encoder)
        enc_params = common.init_encoder(k_enc, encoder_def, config.encoder, obs_b)
        feats = encoder_def.apply({"params": enc_params}, obs_b)
        get_activation(frozen.activation)  # unknown names fail here, with the known ones listed
        actor_def = TanhGaussianPolicy(
            frozen.hidden_dims, action_dim, frozen.use_layer_norm, float(frozen.std_min), float(frozen.std_max),
            activation=frozen.activation,
        )
        params = {"encoder": enc_params, "actor": actor_def.init(k_actor, feats)["params"]}
        return cls(
            rng=rng,
            actor=common.make_train_state(
                params, float(frozen.actor_lr),
                tuple(("encoder",) + p for p in common.frozen_param_prefixes(frozen.encoder)),
            ),
            config=frozen,
            encoder_def=encoder_def,
            actor_def=actor_def,
            obs_spec=obs_spec,
        )

    def _forward(self, params: Any, observations: Dict[str, jax.Array]) -> Tuple[jax.Array, jax.Array]:
        feats = self.encoder_def.apply({"params": params["encoder"]}, observations)
        return self.actor_def.apply({"params": params["actor"]}, feats)

    def _step(self, batch: Dict[str, Any]) -> Tuple["BCAgent", Dict[str, jax.Array]]:
        rng, aug_key = jax.random.split(self.rng)
        obs = batch["observations"]
        enc = self.config.encoder
        if enc.augmentation == "random_crop" and enc.image_keys:
            obs = augment_observations(aug_key, obs, enc.image_keys, int(enc.crop_pad))

        def loss_fn(params):
            mean, log_std = self._forward(params, obs)
            loss = bc_loss(mean, log_std, batch["actions"], self.config.loss, float(self.config.action_eps))
            mse = jnp.mean(jnp.sum((jnp.tanh(mean) - batch["actions"]) ** 2, axis=-1))
            return loss, {"bc_loss": loss, "action_mse": mse, "std_mean": jnp.exp(log_std).mean()}

        grads, info = jax.grad(loss_fn, has_aux=True)(self.actor.params)
        return self.replace(rng=rng, actor=self.actor.apply_gradients(grads=grads)), info

    def update(self, batch: Dict[str, Any], utd_ratio: int = 1) -> Tuple["BCAgent", Dict[str, jax.Array]]:
        """``utd_ratio`` gradient steps on the ``utd_ratio`` equal minibatches of ``batch``.

        ``batch`` needs ``observations`` (dict, leading dim N) and ``actions`` (N, A) in
        [-1, 1]; other keys are ignored. Jitted. Returns ``(new_agent, info)`` with
        ``bc_loss``, ``action_mse``, ``std_mean`` averaged over the steps.
        Raises ValueError on a malformed batch.
        """
        if not isinstance(utd_ratio, (int, np.integer)) or isinstance(utd_ratio, bool) or utd_ratio < 1:
            raise ValueError(f"utd_ratio must be a positive int, got {utd_ratio!r}")
        if not isinstance(batch, Mapping) or "observations" not in batch or "actions" not in batch:
            raise ValueError("BC batch must be a dict with 'observations' and 'actions'")
        n = int(np.shape(batch["actions"])[0])
        if n % utd_ratio != 0:
            raise ValueError(f"batch size {n} is not a multiple of utd_ratio={utd_ratio}")
        if tuple(np.shape(batch["actions"])) != (n, self.config.action_dim):
            raise ValueError(f"batch['actions']: expected shape {(n, self.config.action_dim)}, got {np.shape(batch['actions'])}")
        checked = {
            "observations": common.check_observations(batch["observations"], self.obs_spec, (n,), "batch['observations']"),
            "actions": jnp.asarray(batch["actions"], jnp.float32),
        }
        return _bc_update_jit(self, checked, utd_ratio=int(utd_ratio))

    def _select_actions(self, observations, key):
        mean, log_std = self._forward(self.actor.params, observations)
        if key is None:
            return tanh_gaussian_mode(mean)
        return tanh_gaussian_sample(key, mean, log_std)[0]

    def sample_actions(self, observations: Dict[str, Any], key: jax.Array) -> jax.Array:
        """Stochastic action(s); one unbatched dict -> ``(A,)``, batched -> ``(B, A)``."""
        obs, squeeze = common.policy_observations(observations, self.obs_spec)
        return _bc_act_jit(self, obs, key, squeeze=squeeze)

    def eval_actions(self, observations: Dict[str, Any]) -> jax.Array:
        """Deterministic ``tanh(mean)``; shapes as :meth:`sample_actions`."""
        obs, squeeze = common.policy_observations(observations, self.obs_spec)
        return _bc_act_jit(self, obs, None, squeeze=squeeze)

    def policy_params(self) -> Dict[str, Any]:
        """``{"actor": ..., "encoder": ...}`` as nested plain dicts of ``np.ndarray``."""
        return to_numpy_tree(self.actor.params)

    def load_policy_params(self, params: Dict[str, Any]) -> "BCAgent":
        """Copy of the agent with ``params``; ValueError naming the path on mismatch."""
        new = common.replace_in_params(params, self.actor.params, name="policy_params")
        return self.replace(actor=self.actor.replace(params=new))


def _bc_update_impl(agent: BCAgent, batch, utd_ratio: int):
    minibatches = common.split_minibatches(batch, utd_ratio)
    unroll = common.scan_unroll(agent.config.encoder, utd_ratio)  # image encoders: unrolled
    agent, infos = jax.lax.scan(lambda a, mb: a._step(mb), agent, minibatches, unroll=unroll)
    return agent, {k: v.mean() for k, v in infos.items()}


def _bc_act_impl(agent: BCAgent, observations, key, squeeze: bool):
    actions = agent._select_actions(observations, key)
    return actions[0] if squeeze else actions


_bc_update_jit = jax.jit(_bc_update_impl, static_argnames=("utd_ratio",))
_bc_act_jit = jax.jit(_bc_act_impl, static_argnames=("squeeze",))
