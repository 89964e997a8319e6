"""SAC / RLPD agent with a shared, critic-trained observation encoder (HiL-SERL style).

Structure follows ikostrikov/rlpd and dibyaghosh/jaxrl_m: the agent is an immutable
``flax.struct.PyTreeNode`` holding one ``TrainState`` per network (actor, critic,
temperature), the target critic parameters and a carried ``rng``; every update returns
``(new_agent, info)``. High-UTD updates (default ``update_order="sac"``) follow SERL's
``update_high_utd``: the batch is split into ``utd_ratio`` minibatches, the critic is updated
on each inside ``lax.scan`` (unrolled by ``fused_update`` and for image encoders; Polyak
target update after every critic step), then actor and temperature are updated once on the last minibatch (after the
critic steps, with the new critic). ``update_order="upstream"`` gives HiL-SERL's learner step
(below).

Losses (pure functions below):

* TD target (SAC, Haarnoja et al. 2018; RLPD, Ball et al. 2023):
  ``y = r + discount * mask * min_{i in S} Q'_i(s', a')`` with ``a' ~ pi(.|s')`` and
  ``S`` a random subset of ``num_min_qs`` target critics (REDQ; all when None), minus
  ``discount * mask * alpha * log pi(a'|s')`` when ``backup_entropy``; then clipped to
  ``critic_target_clip`` when set.
* Critic: mean over ensemble members and batch of ``(Q_i(s, a) - y)^2``.
* Actor: ``mean(alpha * log pi(a|s) - mean_i Q_i(s, a))``, ``a ~ pi`` reparameterised
  (mean over the ensemble as in HiL-SERL / RLPD).
* Temperature, ``temperature_parameterization``:
  ``"exp"`` (default; SAC v2 / softlearning form): ``mean(log_alpha * (-log pi - target_entropy))``
  with ``alpha = exp(log_alpha)``; ``log pi`` from the actor step's samples at ``s``, gradient
  stopped.
  ``"softplus"`` (HiL-SERL's ``GeqLagrangeMultiplier``, ``serl_launcher/networks/lagrange.py``):
  ``alpha = softplus(x)``, loss ``alpha * (H - target_entropy)`` with ``H = -mean log pi(a'|s')``,
  ``a' ~ pi(.|s')`` sampled by the pre-update actor at ``next_observations``
  (``serl_launcher/agents/continuous/sac.py`` ``temperature_loss_fn``).

Order of one ``update`` call, ``update_order`` (``docs/hil_serl_fidelity.md`` rows 14-15):

* ``"sac"`` (default): ``utd_ratio`` critic steps in ``lax.scan``, then one actor step on the
  last minibatch against the updated critic, then the temperature step.
* ``"upstream"`` (HiL-SERL's learner loop, ``examples/train_rlpd.py``, with
  ``SACAgent.update``'s ``apply_loss_fns`` in ``serl_launcher/common/common.py``):
  ``utd_ratio - 1`` critic-only steps, then one full step on the last minibatch in which the
  critic, actor and temperature gradients are all taken at the same pre-update parameters and
  applied together (then the Polyak target update). With ``idle_adam_steps`` the actor's and
  the temperature's Adam also step with zero gradients during each critic-only step, as
  upstream's constant-zero losses of the networks not updated do (their momentum moves them).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Optional, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from serl_ext.agents import common
from serl_ext.networks.encoders import ObservationEncoder
from serl_ext.networks.ensemble import Ensemble, subsample_ensemble
from serl_ext.networks.heads import (
    Critic,
    TanhGaussianPolicy,
    tanh_gaussian_mode,
    tanh_gaussian_sample,
)
from serl_ext.networks.mlp import get_activation
from serl_ext.networks.params import to_numpy_tree

Batch = Dict[str, Any]


def get_default_config() -> ml_collections.ConfigDict:
    """Default SAC config (HiL-SERL values; RLPD = ``num_qs=10, num_min_qs=2``)."""
    c = ml_collections.ConfigDict()
    # Adam learning rates of the actor, the critic (incl. encoder) and the temperature.
    c.actor_lr = 3e-4
    c.critic_lr = 3e-4
    c.temp_lr = 3e-4
    # MLP widths of actor and critic heads.
    c.hidden_dims = (256, 256)
    # LayerNorm after every hidden Dense (RLPD / HiL-SERL critics and actor).
    c.use_layer_norm = True
    # Hidden activation of actor and critic MLPs: "relu" (jaxrl / RLPD), "tanh" (HiL-SERL's
    # launchers), "gelu" or "swish" (serl_ext.networks.mlp.ACTIVATIONS).
    c.activation = "relu"
    # Critic ensemble size (HiL-SERL 2, RLPD 10).
    c.num_qs = 2
    # Target min over a random subset of this many target critics (REDQ); None = all
    # num_qs (HiL-SERL). RLPD uses num_qs=10, num_min_qs=2.
    c.num_min_qs = ml_collections.config_dict.placeholder(int)
    # Discount factor gamma, per agent step.
    c.discount = 0.97
    # Polyak rate of the target critic (and target encoder), after every critic step.
    c.tau = 0.005
    # Initial entropy temperature alpha.
    c.init_temperature = 1e-2
    # Target entropy; None -> -action_dim / 2 (continuous action dims).
    c.target_entropy = ml_collections.config_dict.placeholder(float)
    # Subtract discount * mask * alpha * log pi(a'|s') in the TD target (off in HiL-SERL).
    c.backup_entropy = False
    # None or (low, high): clip the TD target to the possible return range. For sparse
    # 0/1 rewards with termination on success, (0.0, 1.0) is the recommended setting of
    # the training configs (DESIGN section 7). An empty tuple () also means None: the command
    # line cannot set a tuple field to None (`--config.agent.critic_target_clip=None` gives
    # (None,)), so `--config.agent.critic_target_clip='()'` switches the clip off.
    c.critic_target_clip = ml_collections.config_dict.placeholder(tuple)
    # Order of the networks' steps in one update (module docstring): "sac" (utd critic steps,
    # then actor and temperature on the updated critic) or "upstream" (HiL-SERL's: utd - 1
    # critic-only steps, then critic, actor and temperature from the same pre-update params).
    c.update_order = "sac"
    # update_order="upstream" only: during each critic-only step also step the actor's and
    # the temperature's Adam with zero gradients (upstream's zero losses do; momentum-only
    # moves, docs/hil_serl_fidelity.md row 15). False = they step once per update.
    c.idle_adam_steps = False
    # "exp": alpha = exp(log_alpha), temperature loss on the actor step's entropy at s (SAC v2);
    # "softplus": alpha = softplus(x), loss alpha * (entropy - target) with the entropy at s'
    # from the pre-update actor (HiL-SERL's GeqLagrangeMultiplier). Both start at
    # init_temperature.
    c.temperature_parameterization = "exp"
    # Optimised update (issue 14): with utd_ratio <= FUSED_UNROLL_MAX_UTD the critic steps of one
    # update are unrolled into straight-line code (``lax.scan(..., unroll=True)``), so XLA can
    # schedule and fuse across steps and its cost analysis counts every step; the same math as
    # the rolled scan, results equal to float rounding (rtol 1e-5, not bit for bit:
    # tests/test_learner_fused_update.py; benchmarks/bench_learner_limit.py times both).
    # False (default) = the rolled ``lax.scan``, bit-identical to earlier versions (the
    # reference of tests/test_encoder_defaults_unchanged.py) for state encoders. An encoder
    # with image keys always unrolls: XLA's CPU convolutions inside a rolled loop ran many
    # times slower (``common.unrolls_scan``, ``benchmarks/results/pixel_update_scan.md``).
    c.fused_update = False
    # Bounds of the actor's standard deviation (log-std clipped to [log min, log max]).
    c.std_min = 1e-5
    c.std_max = 5.0
    # Observation encoder (see serl_ext.agents.common.encoder_config for each field).
    c.encoder = common.encoder_config()
    return c


# --------------------------------------------------------------------------- losses


def compute_td_target(
    rewards: jax.Array,
    masks: jax.Array,
    target_next_qs: jax.Array,
    discount: float,
    next_log_probs: Optional[jax.Array] = None,
    temperature: Optional[jax.Array] = None,
    backup_entropy: bool = False,
    target_clip: Optional[Tuple[float, float]] = None,
    subset_indices: Optional[jax.Array] = None,
) -> jax.Array:
    """SAC/RLPD TD target.

    Args:
      rewards, masks: float32 ``(B,)``; ``masks = 1 - terminated``.
      target_next_qs: float32 ``(M, B)`` target-critic values at ``(s', a' ~ pi)``.
      discount: gamma.
      next_log_probs: ``(B,)`` log pi(a'|s'); needed when ``backup_entropy``.
      temperature: scalar alpha; needed when ``backup_entropy``.
      backup_entropy: subtract ``discount * mask * alpha * log pi(a'|s')``.
      target_clip: None or ``(low, high)`` clip of the final target.
      subset_indices: int ``(K,)``: take the min only over these rows of
        ``target_next_qs`` (REDQ subset); None = all rows.

    Returns float32 ``(B,)``:
    ``clip(r + discount * mask * (min_{i in S} Q_i - [alpha * log pi]), low, high)``.
    Raises ValueError on inconsistent shapes or a missing entropy input.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    masks = jnp.asarray(masks, jnp.float32)
    if target_next_qs.ndim != 2 or rewards.shape != (target_next_qs.shape[1],):
        raise ValueError(
            f"need target_next_qs (M, B) and rewards (B,), got {target_next_qs.shape} and {rewards.shape}"
        )
    chex.assert_equal_shape([rewards, masks])
    qs = target_next_qs if subset_indices is None else jnp.take(target_next_qs, subset_indices, axis=0)
    next_v = qs.min(axis=0)
    if backup_entropy:
        if next_log_probs is None or temperature is None:
            raise ValueError("backup_entropy needs next_log_probs and temperature")
        chex.assert_equal_shape([next_log_probs, rewards])
        next_v = next_v - temperature * next_log_probs
    target = rewards + discount * masks * next_v
    if target_clip is not None:
        low, high = target_clip
        target = jnp.clip(target, low, high)
    return target


def temperature_loss(log_alpha: jax.Array, log_probs: jax.Array, target_entropy: float) -> jax.Array:
    """SAC v2 temperature loss ``mean(log_alpha * (-log_probs - target_entropy))``.

    ``log_probs`` ``(B,)`` (treated as constants), ``log_alpha`` scalar. The gradient
    w.r.t. ``log_alpha`` is ``entropy - target_entropy``: alpha grows when the policy's
    entropy is below the target.
    """
    log_probs = jax.lax.stop_gradient(log_probs)
    return jnp.mean(log_alpha * (-log_probs - target_entropy))


UPDATE_ORDERS = ("sac", "upstream")
#: Largest ``utd_ratio`` whose critic steps ``fused_update`` unrolls (compile time grows with the
#: number of unrolled steps; above it the scan stays rolled).
FUSED_UNROLL_MAX_UTD = common.MAX_UNROLL
TEMPERATURE_PARAMETERIZATIONS = ("exp", "softplus")


def inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = log(1 + exp(x)) = y``, i.e. ``log(expm1(y))`` (float64).

    HiL-SERL initialises its softplus multiplier this way
    (``serl_launcher/networks/lagrange.py``). Raises ValueError for ``y <= 0``.
    """
    if not y > 0:
        raise ValueError(f"softplus takes only values > 0, got {y}")
    return math.log(math.expm1(y))


def softplus_temperature_loss(raw: jax.Array, entropy: jax.Array, target_entropy: float) -> jax.Array:
    """HiL-SERL's temperature loss ``softplus(raw) * (entropy - target_entropy)``.

    ``raw`` float32 scalar (alpha = softplus(raw)); ``entropy`` float32 scalar, the batch mean
    of ``-log pi(a'|s')`` (treated as a constant). The gradient w.r.t. ``raw`` is
    ``sigmoid(raw) * (entropy - target_entropy)``. Form of ``GeqLagrangeMultiplier`` with
    ``lhs=entropy, rhs=target_entropy`` (``serl_launcher/networks/lagrange.py``).
    """
    entropy = jax.lax.stop_gradient(entropy)
    return jax.nn.softplus(raw) * (entropy - target_entropy)


# --------------------------------------------------------------------------- agent


@dataclasses.dataclass(frozen=True)
class Networks:
    """Module definitions of an agent (static, hashable)."""

    encoder: ObservationEncoder
    actor: TanhGaussianPolicy
    critic: nn.Module
    target_critic: nn.Module
    grasp_critic: Optional[nn.Module] = None


def _freeze_config(config: ml_collections.ConfigDict, **resolved) -> ml_collections.FrozenConfigDict:
    c = ml_collections.ConfigDict(config.to_dict())
    for k, v in resolved.items():
        c[k] = v
    return ml_collections.FrozenConfigDict(c)


def _target_clip(clip: Any) -> Any:
    """``critic_target_clip`` with ``()`` read as None (see :func:`get_default_config`)."""
    return None if clip is None or len(tuple(clip)) == 0 else clip


def validate_sac_config(config: Any) -> None:
    """Raise ValueError/TypeError for an invalid SAC config (see :func:`get_default_config`)."""
    if not isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        raise TypeError(f"config must be an ml_collections ConfigDict, got {type(config).__name__}")
    for name in ("actor_lr", "critic_lr", "temp_lr", "init_temperature", "std_min", "std_max"):
        if not float(config[name]) > 0:
            raise ValueError(f"config.{name} must be > 0, got {config[name]}")
    if not float(config.std_min) < float(config.std_max):
        raise ValueError(f"need std_min < std_max, got {config.std_min}, {config.std_max}")
    if len(tuple(config.hidden_dims)) == 0 or any(int(h) < 1 for h in config.hidden_dims):
        raise ValueError(f"config.hidden_dims must be positive widths, got {config.hidden_dims}")
    if int(config.num_qs) < 1:
        raise ValueError(f"config.num_qs must be >= 1, got {config.num_qs}")
    if config.num_min_qs is not None and not 1 <= int(config.num_min_qs) <= int(config.num_qs):
        raise ValueError(
            f"config.num_min_qs must be None or in [1, num_qs={config.num_qs}], got {config.num_min_qs}"
        )
    if not 0.0 < float(config.discount) <= 1.0:
        raise ValueError(f"config.discount must be in (0, 1], got {config.discount}")
    if not 0.0 < float(config.tau) <= 1.0:
        raise ValueError(f"config.tau must be in (0, 1], got {config.tau}")
    order = config.get("update_order", "sac")
    if order not in UPDATE_ORDERS:
        raise ValueError(f"config.update_order must be one of {UPDATE_ORDERS}, got {order!r}")
    if bool(config.get("idle_adam_steps", False)) and order != "upstream":
        raise ValueError("config.idle_adam_steps=True needs update_order='upstream'")
    param = config.get("temperature_parameterization", "exp")
    if param not in TEMPERATURE_PARAMETERIZATIONS:
        raise ValueError(
            f"config.temperature_parameterization must be one of {TEMPERATURE_PARAMETERIZATIONS}, got {param!r}"
        )
    if not isinstance(config.get("fused_update", False), bool):
        raise TypeError(f"config.fused_update must be a bool, got {config.fused_update!r}")
    clip = _target_clip(config.critic_target_clip)
    if clip is not None:
        if len(tuple(clip)) != 2 or not float(clip[0]) < float(clip[1]):
            raise ValueError(f"config.critic_target_clip must be None or (low, high) with low < high, got {clip}")


def _init_temp_params(config: Any) -> Dict[str, jax.Array]:
    """Temperature params giving ``alpha = init_temperature``: ``{"log_temp": log alpha}``
    ("exp") or ``{"softplus_temp": inverse_softplus(alpha)}`` ("softplus"), float32 scalars."""
    init = float(config.init_temperature)
    if config.temperature_parameterization == "softplus":
        return {"softplus_temp": common.f32(inverse_softplus(init))}
    return {"log_temp": common.f32(math.log(init))}


class SACAgent(struct.PyTreeNode):
    """SAC / RLPD agent (see the module docstring for the losses).

    Fields: ``rng`` (carried PRNG key), ``actor`` (TrainState, params of the policy head),
    ``critic`` (TrainState, params ``{"encoder", "critic"}``: the encoder is shared with
    the actor but trained only by the critic loss), ``target_critic_params`` (same tree as
    ``critic.params``), ``temp`` (TrainState, params ``{"log_temp": f32 scalar}``, or
    ``{"softplus_temp": f32 scalar}`` with ``temperature_parameterization="softplus"``), and the
    static ``config`` (frozen, resolved), ``nets`` (module definitions), ``obs_spec``.

    Create with :meth:`create`; never construct directly.
    """

    rng: jax.Array
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    temp: TrainState
    config: ml_collections.FrozenConfigDict = struct.field(pytree_node=False)
    nets: Networks = struct.field(pytree_node=False)
    obs_spec: common.ObsSpec = struct.field(pytree_node=False)

    # ------------------------------------------------------------------ creation

    @classmethod
    def _continuous_dim(cls, action_dim: int) -> int:
        return action_dim

    @classmethod
    def _build(
        cls,
        rng: jax.Array,
        observations: Dict[str, Any],
        actions: Any,
        config: ml_collections.ConfigDict,
        extra_resolved: Optional[Dict[str, Any]] = None,
    ):
        validate_sac_config(config)
        obs_spec = common.make_obs_spec(observations)
        common.validate_encoder_config(config.encoder, observations)
        action_dim = common.check_action_example(actions)
        cont_dim = cls._continuous_dim(action_dim)
        target_entropy = (
            -cont_dim / 2.0 if config.target_entropy is None else float(config.target_entropy)
        )
        clip = _target_clip(config.critic_target_clip)
        resolved = dict(
            action_dim=action_dim,
            continuous_action_dim=cont_dim,
            target_entropy=float(target_entropy),
            critic_target_clip=None if clip is None else (float(clip[0]), float(clip[1])),
            hidden_dims=tuple(int(h) for h in config.hidden_dims),
            # Configs written before these fields existed (old checkpoints' policy specs)
            # get today's behaviour.
            update_order=str(config.get("update_order", "sac")),
            idle_adam_steps=bool(config.get("idle_adam_steps", False)),
            temperature_parameterization=str(config.get("temperature_parameterization", "exp")),
            fused_update=bool(config.get("fused_update", False)),
        )
        resolved.update(extra_resolved or {})
        frozen = _freeze_config(config, **resolved)

        rng, k_enc, k_actor, k_critic, k_extra = jax.random.split(rng, 5)
        obs_b = common.batch_example(observations)
        encoder_def = common.make_encoder_def(config.encoder)
        enc_params = common.init_encoder(k_enc, encoder_def, config.encoder, obs_b)
        feats = encoder_def.apply({"params": enc_params}, obs_b)

        hidden = frozen.hidden_dims
        get_activation(frozen.activation)  # unknown names fail here, with the known ones listed
        actor_def = TanhGaussianPolicy(
            hidden, cont_dim, frozen.use_layer_norm, float(frozen.std_min), float(frozen.std_max),
            activation=frozen.activation,
        )
        critic_cls = functools.partial(Critic, hidden_dims=hidden, use_layer_norm=frozen.use_layer_norm,
                                       activation=frozen.activation)
        num_min = frozen.num_qs if frozen.num_min_qs is None else frozen.num_min_qs
        critic_def = Ensemble(critic_cls, num=int(frozen.num_qs))
        target_def = Ensemble(critic_cls, num=int(num_min))

        actor_params = actor_def.init(k_actor, feats)["params"]
        cont_actions = jnp.zeros((1, cont_dim), jnp.float32)
        critic_params = {
            "encoder": enc_params,
            "critic": critic_def.init(k_critic, feats, cont_actions)["params"],
        }
        parts = dict(
            rng=rng,
            k_extra=k_extra,
            feats=feats,
            frozen=frozen,
            obs_spec=obs_spec,
            encoder_def=encoder_def,
            actor_def=actor_def,
            critic_def=critic_def,
            target_def=target_def,
            actor_params=actor_params,
            critic_params=critic_params,
        )
        return parts

    @classmethod
    def _assemble(cls, parts: Dict[str, Any], grasp_def: Optional[nn.Module] = None) -> "SACAgent":
        frozen = parts["frozen"]
        critic_params = parts["critic_params"]
        nets = Networks(
            encoder=parts["encoder_def"],
            actor=parts["actor_def"],
            critic=parts["critic_def"],
            target_critic=parts["target_def"],
            grasp_critic=grasp_def,
        )
        return cls(
            rng=parts["rng"],
            actor=common.make_train_state(parts["actor_params"], float(frozen.actor_lr)),
            critic=common.make_train_state(critic_params, float(frozen.critic_lr), cls._frozen_prefixes(frozen)),
            target_critic_params=jax.tree_util.tree_map(jnp.array, critic_params),
            temp=common.make_train_state(_init_temp_params(frozen), float(frozen.temp_lr)),
            config=frozen,
            nets=nets,
            obs_spec=parts["obs_spec"],
        )

    @staticmethod
    def _frozen_prefixes(config: Any) -> Tuple[Tuple[str, ...], ...]:
        """Paths in ``critic.params`` that ``encoder.freeze`` keeps fixed (the backbones)."""
        return tuple(("encoder",) + p for p in common.frozen_param_prefixes(config.encoder))

    def _polyak(self, critic_params: Any) -> Any:
        """Target params after a Polyak step toward ``critic_params`` (rate ``tau``); frozen
        backbones are copied, so their target stays equal to the online copy."""
        target = optax.incremental_update(critic_params, self.target_critic_params, self.config.tau)
        return common.copy_frozen(critic_params, target, self._frozen_prefixes(self.config))

    @classmethod
    def create(
        cls,
        rng: jax.Array,
        observations: Dict[str, Any],
        actions: Any,
        config: Optional[ml_collections.ConfigDict] = None,
    ) -> "SACAgent":
        """Build an agent.

        Args:
          rng: PRNG key (carried by the agent afterwards).
          observations: ONE unbatched example observation dict (``"state"`` float32 (D,),
            images uint8 (H, W, C)); it fixes the observation spec.
          actions: ONE unbatched example action, float32 ``(A,)``.
          config: see :func:`get_default_config` (None = defaults).

        Raises ValueError/TypeError on an invalid config (e.g. ``num_min_qs > num_qs``)
        or example inconsistent with it.
        """
        config = get_default_config() if config is None else config
        return cls._assemble(cls._build(rng, observations, actions, config))

    # ------------------------------------------------------------------ network helpers

    @property
    def temperature(self) -> jax.Array:
        """alpha, float32 scalar: ``exp(log_temp)`` or ``softplus(softplus_temp)``."""
        return self._temperature_of(self.temp.params)

    def _temperature_of(self, temp_params: Dict[str, jax.Array]) -> jax.Array:
        if self.config.temperature_parameterization == "softplus":
            return jax.nn.softplus(temp_params["softplus_temp"])
        return jnp.exp(temp_params["log_temp"])

    def _encode(self, enc_params: Any, observations: Dict[str, jax.Array]) -> jax.Array:
        return self.nets.encoder.apply({"params": enc_params}, observations)

    def _policy(self, actor_params: Any, features: jax.Array) -> Tuple[jax.Array, jax.Array]:
        return self.nets.actor.apply({"params": actor_params}, features)

    def _continuous(self, actions: jax.Array) -> jax.Array:
        """The part of the stored action the continuous critic/actor model."""
        return actions

    def _aux_critic_loss(self, critic_params, feats, next_feats, next_feats_target, batch, key):
        """Extra critic-side loss (the hybrid agent's gripper critic); none for SAC."""
        return jnp.zeros((), jnp.float32), {}

    # ------------------------------------------------------------------ losses

    def _critic_loss(self, critic_params: Any, batch: Batch, key: jax.Array):
        cfg = self.config
        b = batch["rewards"].shape[0]
        k_pi, k_sub, k_aux = jax.random.split(key, 3)
        feats = self._encode(critic_params["encoder"], batch["observations"])
        # The actor acts through the (current) shared encoder, without gradient.
        next_feats = jax.lax.stop_gradient(self._encode(critic_params["encoder"], batch["next_observations"]))
        next_feats_target = self._encode(self.target_critic_params["encoder"], batch["next_observations"])

        mean, log_std = self._policy(self.actor.params, next_feats)
        next_actions, next_log_probs = tanh_gaussian_sample(k_pi, mean, log_std)
        target_params = subsample_ensemble(
            k_sub, self.target_critic_params["critic"], cfg.num_min_qs, cfg.num_qs
        )
        target_next_qs = self.nets.target_critic.apply({"params": target_params}, next_feats_target, next_actions)
        num_min = cfg.num_qs if cfg.num_min_qs is None else cfg.num_min_qs
        chex.assert_shape(target_next_qs, (num_min, b))
        target = compute_td_target(
            batch["rewards"],
            batch["masks"],
            target_next_qs,
            cfg.discount,
            next_log_probs=next_log_probs,
            temperature=self.temperature,
            backup_entropy=cfg.backup_entropy,
            target_clip=cfg.critic_target_clip,
        )
        target = jax.lax.stop_gradient(target)
        qs = self.nets.critic.apply({"params": critic_params["critic"]}, feats, self._continuous(batch["actions"]))
        chex.assert_shape(qs, (cfg.num_qs, b))
        critic_loss = jnp.mean((qs - target[None]) ** 2)
        aux_loss, aux_info = self._aux_critic_loss(critic_params, feats, next_feats, next_feats_target, batch, k_aux)
        info = {
            "critic_loss": critic_loss,
            "q_mean": qs.mean(),
            "target_q_mean": target.mean(),
            "rewards_mean": batch["rewards"].mean(),
            **aux_info,
        }
        return critic_loss + aux_loss, info

    def _actor_loss(self, actor_params: Any, feats: jax.Array, key: jax.Array):
        mean, log_std = self._policy(actor_params, feats)
        actions, log_probs = tanh_gaussian_sample(key, mean, log_std)
        qs = self.nets.critic.apply({"params": self.critic.params["critic"]}, feats, actions)
        chex.assert_shape(qs, (self.config.num_qs, feats.shape[0]))
        q = qs.mean(axis=0)
        loss = jnp.mean(self.temperature * log_probs - q)
        return loss, {"actor_loss": loss, "entropy": -log_probs.mean(), "log_probs": log_probs}

    # ------------------------------------------------------------------ update steps

    def _critic_step(self, batch: Batch) -> Tuple["SACAgent", Dict[str, jax.Array]]:
        rng, key = jax.random.split(self.rng)
        grads, info = jax.grad(self._critic_loss, has_aux=True)(self.critic.params, batch, key)
        critic = self.critic.apply_gradients(grads=grads)
        return self.replace(rng=rng, critic=critic, target_critic_params=self._polyak(critic.params)), info

    def _temperature_grads(self, batch: Batch, log_probs: jax.Array, key: Optional[jax.Array]):
        """``(loss, grads)`` of the temperature loss at this agent's (pre-update) params.

        "exp": from ``log_probs`` ``(B,)`` of the actor step's samples at ``observations``
        (``key`` unused, may be None). "softplus": entropy of fresh samples ``a' ~ pi(.|s')``
        of this agent's actor at ``next_observations`` (``key`` consumed).
        """
        cfg = self.config
        if cfg.temperature_parameterization == "softplus":
            next_feats = jax.lax.stop_gradient(self._encode(self.critic.params["encoder"], batch["next_observations"]))
            mean, log_std = self._policy(self.actor.params, next_feats)
            _, next_log_probs = tanh_gaussian_sample(key, mean, log_std)
            entropy = -jnp.mean(next_log_probs)

            def loss_fn(temp_params):
                return softplus_temperature_loss(temp_params["softplus_temp"], entropy, cfg.target_entropy)
        else:

            def loss_fn(temp_params):
                return temperature_loss(temp_params["log_temp"], log_probs, cfg.target_entropy)

        return jax.value_and_grad(loss_fn)(self.temp.params)

    def _actor_temp_step(self, batch: Batch) -> Tuple["SACAgent", Dict[str, jax.Array]]:
        rng, key = jax.random.split(self.rng)
        if self.config.temperature_parameterization == "softplus":
            key, k_temp = jax.random.split(key)
        else:
            k_temp = None  # the "exp" path draws exactly the keys it always did
        feats = jax.lax.stop_gradient(self._encode(self.critic.params["encoder"], batch["observations"]))
        grads, info = jax.grad(self._actor_loss, has_aux=True)(self.actor.params, feats, key)
        actor = self.actor.apply_gradients(grads=grads)
        log_probs = info.pop("log_probs")
        # Gradient at the pre-update actor (self.actor): what the loss reads is this step's
        # samples ("exp") or a fresh draw from the same actor ("softplus").
        t_loss, t_grads = self._temperature_grads(batch, log_probs, k_temp)
        temp = self.temp.apply_gradients(grads=t_grads)
        info.update(temperature=self.temperature, temperature_loss=t_loss)
        return self.replace(rng=rng, actor=actor, temp=temp), info

    def _critic_only_step(self, batch: Batch) -> Tuple["SACAgent", Dict[str, jax.Array]]:
        """update_order="upstream": one critic step; with ``idle_adam_steps`` the actor's and
        the temperature's Adam also apply a zero gradient (momentum-only move)."""
        agent, info = self._critic_step(batch)
        if self.config.idle_adam_steps:
            zeros = functools.partial(jax.tree_util.tree_map, jnp.zeros_like)
            agent = agent.replace(
                actor=agent.actor.apply_gradients(grads=zeros(agent.actor.params)),
                temp=agent.temp.apply_gradients(grads=zeros(agent.temp.params)),
            )
        return agent, info

    def _full_step(self, batch: Batch) -> Tuple["SACAgent", Dict[str, jax.Array], Dict[str, jax.Array]]:
        """update_order="upstream": critic, actor and temperature gradients all at this agent's
        (pre-update) params on one minibatch, applied together, then the Polyak update
        (HiL-SERL ``apply_loss_fns``). Returns ``(agent, critic_info, actor_info)``."""
        rng, k_critic, k_actor, k_temp = jax.random.split(self.rng, 4)
        c_grads, c_info = jax.grad(self._critic_loss, has_aux=True)(self.critic.params, batch, k_critic)
        feats = jax.lax.stop_gradient(self._encode(self.critic.params["encoder"], batch["observations"]))
        a_grads, a_info = jax.grad(self._actor_loss, has_aux=True)(self.actor.params, feats, k_actor)
        log_probs = a_info.pop("log_probs")
        t_loss, t_grads = self._temperature_grads(batch, log_probs, k_temp)
        critic = self.critic.apply_gradients(grads=c_grads)
        target = self._polyak(critic.params)
        a_info.update(temperature=self.temperature, temperature_loss=t_loss)
        new = self.replace(
            rng=rng,
            critic=critic,
            target_critic_params=target,
            actor=self.actor.apply_gradients(grads=a_grads),
            temp=self.temp.apply_gradients(grads=t_grads),
        )
        return new, c_info, a_info

    def _augment(self, batch: Batch) -> Tuple["SACAgent", Batch]:
        if self.config.encoder.augmentation != "random_crop" or not self.config.encoder.image_keys:
            return self, batch
        rng, key = jax.random.split(self.rng)
        return self.replace(rng=rng), common.augment_batch(key, batch, self.config.encoder)

    def _with_frozen_features(self, batch: Batch) -> Tuple["SACAgent", Batch]:
        """With ``encoder.freeze`` and image keys: ``(agent, batch)`` where every image of
        ``observations`` / ``next_observations`` is replaced by its (frozen) backbone's feature
        map and the agent encodes through the head stage only, so that one update runs each
        backbone once per image instead of once per use (three per critic step: s with the
        online encoder, s' with the online and with the target encoder; one more for the
        actor; XLA merged some of these itself, leaving 2 utd + 1 passes of B images against
        2 utd here, tests/test_frozen_backbone_once.py). Exact, not an approximation: the
        backbone gets no gradient and no Adam update, and ``_polyak`` copies it into the
        target, so every one of those uses reads the same parameters. Otherwise ``(self, batch)`` unchanged. Undo with
        :meth:`_full_encoder`."""
        enc = self.config.encoder
        if not bool(enc.get("freeze", False)) or not enc.image_keys:
            return self, batch
        backbone = self.nets.encoder.clone(stage="backbone")
        params = self.critic.params["encoder"]
        out = dict(batch)
        for name in ("observations", "next_observations"):
            feats = backbone.apply({"params": params}, batch[name])
            out[name] = {**batch[name], **{k: jax.lax.stop_gradient(v) for k, v in feats.items()}}
        return self._at_stage("head"), out

    def _at_stage(self, stage: str) -> "SACAgent":
        """The agent with its encoder at ``stage`` (``ImageEncoder``'s full / backbone / head)."""
        if self.nets.encoder.stage == stage:
            return self
        return self.replace(nets=dataclasses.replace(self.nets, encoder=self.nets.encoder.clone(stage=stage)))

    def _full_encoder(self) -> "SACAgent":
        """The agent with its encoder back at the full stage (after :meth:`_with_frozen_features`)."""
        return self._at_stage("full")

    def _check_batch(self, batch: Batch, utd_ratio: int) -> Batch:
        return common.check_batch(batch, self.obs_spec, self.config.action_dim, utd_ratio)

    # ------------------------------------------------------------------ public API

    def update(self, batch: Batch, utd_ratio: int = 1, donate: bool = False, frame_features: bool = False):
        """``utd_ratio`` critic steps + one actor/temperature step (jitted), in the order of
        ``config.update_order`` (module docstring).

        Args:
          batch: dict with ``observations``/``next_observations`` (dicts, leaves
            ``(utd_ratio * B, ...)``), ``actions`` ``(utd_ratio * B, A)``, ``rewards`` and
            ``masks`` ``(utd_ratio * B,)``; other keys are ignored.
          utd_ratio: number of critic minibatches (static: each value compiles once).
          donate: donate this agent's buffers to the update (saves memory on GPU; the
            old agent must not be used afterwards).
          frame_features: the image keys of the observations already hold their frozen
            backbone's feature maps (:meth:`frame_features_fn`, e.g. cached per stored frame by
            ``ReplayBuffer.attach_frame_features``; shapes :meth:`feature_obs_spec`): the update
            runs the encoder's head only. Needs ``encoder.freeze`` and no augmentation
            (``encoder.augmentation="none"`` or ``crop_pad=0``): a cached feature map is of the
            stored frame, not of a random crop. Equal to the update on the frames themselves
            with the same config (tests/test_frame_feature_cache.py).

        Returns ``(new_agent, info)``, ``info`` a dict of float32 scalars
        (critic metrics averaged over the ``utd_ratio`` critic steps).
        Raises ValueError on a malformed batch, or ``frame_features`` without a frozen
        backbone or with augmentation.
        """
        if frame_features:
            self._check_frame_features()
            checked = self.replace(obs_spec=self.feature_obs_spec())._check_batch(batch, utd_ratio)
            fn = _update_features_jit_donated if donate else _update_features_jit
            return fn(self, checked, utd_ratio=int(utd_ratio))
        checked = self._check_batch(batch, utd_ratio)
        fn = _update_jit_donated if donate else _update_jit
        return fn(self, checked, utd_ratio=int(utd_ratio))

    def _check_frame_features(self) -> None:
        enc = self.config.encoder
        if not enc.image_keys or not bool(enc.get("freeze", False)):
            raise ValueError("frame features need a frozen image backbone (encoder.freeze=True with image_keys)")
        if enc.augmentation == "random_crop" and int(enc.crop_pad) > 0:
            raise ValueError(
                "frame features are of the stored frames, so they skip the random-crop augmentation; "
                "set encoder.augmentation='none' (or crop_pad=0) to use them"
            )

    def frame_features_fn(self):
        """``fn(images) -> features`` of the frozen backbone(s), for
        ``ReplayBuffer.attach_frame_features``: ``images`` a dict ``{key: (N, H, W, C) uint8}``
        over ``encoder.image_keys``, the result ``{key: (N, h, w, c) float32 numpy}`` (after the
        weights' normalisation; jitted, one compile per N). The backbone is frozen, so the
        function stays valid for the whole run (this agent's parameters are captured).

        Raises ValueError under the conditions of :meth:`update` with ``frame_features``."""
        self._check_frame_features()
        backbone = self.nets.encoder.clone(stage="backbone")
        params = self.critic.params["encoder"]
        keys = tuple(self.config.encoder.image_keys)
        apply = jax.jit(lambda p, x: backbone.apply({"params": p}, x))

        def fn(images):
            out = apply(params, {k: jnp.asarray(images[k]) for k in keys})
            return {k: np.asarray(v) for k, v in out.items()}

        return fn

    def feature_obs_spec(self) -> common.ObsSpec:
        """:attr:`obs_spec` with each image key's entry replaced by its backbone's feature map
        (shape ``(h, w, c)``, float32): what a batch for ``update(frame_features=True)`` holds."""
        return _feature_obs_spec(self.nets.encoder, self.obs_spec)

    def update_critic(self, batch: Batch):
        """One critic step (plus target update) on the whole batch; jitted.

        Returns ``(new_agent, info)``."""
        checked = self._check_batch(batch, 1)
        return _update_critic_jit(self, checked)

    def _select_actions(self, observations: Dict[str, jax.Array], key: Optional[jax.Array]) -> jax.Array:
        feats = self._encode(self.critic.params["encoder"], observations)
        mean, log_std = self._policy(self.actor.params, feats)
        if key is None:
            return tanh_gaussian_mode(mean)
        return tanh_gaussian_sample(key, mean, log_std)[0]

    def sample_actions(self, observations: Dict[str, Any], key: jax.Array) -> jax.Array:
        """Stochastic action(s) ``tanh(mean + std * eps)``; jitted.

        ``observations``: one unbatched dict (returns ``(A,)``) or a batched dict with
        leading dim B (returns ``(B, A)``). ``key`` is consumed. Values in [-1, 1].
        """
        obs, squeeze = common.policy_observations(observations, self.obs_spec)
        return _act_jit(self, obs, key, squeeze=squeeze)

    def eval_actions(self, observations: Dict[str, Any]) -> jax.Array:
        """Deterministic action(s) ``tanh(mean)``; same shapes as :meth:`sample_actions`."""
        obs, squeeze = common.policy_observations(observations, self.obs_spec)
        return _act_jit(self, obs, None, squeeze=squeeze)

    def _policy_param_tree(self) -> Dict[str, Any]:
        return {"actor": self.actor.params, "encoder": self.critic.params["encoder"]}

    def policy_params(self) -> Dict[str, Any]:
        """What the actor process needs to act: ``{"actor": ..., "encoder": ...}`` as a
        nested plain dict of ``np.ndarray`` (msgpack-serialisable)."""
        return to_numpy_tree(self._policy_param_tree())

    def load_policy_params(self, params: Dict[str, Any]) -> "SACAgent":
        """Return a copy of this agent acting with ``params`` (from :meth:`policy_params`,
        possibly after a msgpack round trip).

        Raises ValueError naming the offending path when the tree structure, a shape or a
        dtype differs from this agent's.
        """
        new = common.replace_in_params(params, self._policy_param_tree(), name="policy_params")
        return self._with_policy_tree(new)

    def _with_policy_tree(self, new: Dict[str, Any]) -> "SACAgent":
        critic_params = dict(self.critic.params)
        critic_params["encoder"] = new["encoder"]
        return self.replace(
            actor=self.actor.replace(params=new["actor"]),
            critic=self.critic.replace(params=critic_params),
        )


# --------------------------------------------------------------------------- jitted


def _scan_unroll(config: Any, num_steps: int) -> int:
    """``unroll`` argument of the critic-step ``lax.scan`` over ``num_steps`` minibatches:
    ``common.scan_unroll`` with ``config.fused_update`` (all of them, straight-line code, when
    ``num_steps <= FUSED_UNROLL_MAX_UTD`` and the flag is set or the encoder reads images;
    else 1, a rolled loop)."""
    return common.scan_unroll(config.encoder, num_steps, fused=bool(config.get("fused_update", False)))


@functools.lru_cache(maxsize=64)
def _feature_obs_spec(encoder: ObservationEncoder, obs_spec: common.ObsSpec) -> common.ObsSpec:
    """``SACAgent.feature_obs_spec`` (cached: the module definition and the spec decide it)."""
    backbone = encoder.clone(stage="backbone")
    example = {k: jax.ShapeDtypeStruct((1, *shape), jnp.dtype(dt)) for k, shape, dt in obs_spec}
    shapes = jax.eval_shape(lambda x: backbone.init_with_output(jax.random.PRNGKey(0), x)[0], example)
    return tuple(
        (k, tuple(int(d) for d in shapes[k].shape[1:]), "float32") if k in shapes else (k, shape, dt)
        for k, shape, dt in obs_spec
    )


def _update_impl(agent: SACAgent, batch: Batch, utd_ratio: int, given_features: bool = False):
    if agent.config.update_order == "upstream":
        return _update_upstream_impl(agent, batch, utd_ratio, given_features)
    if given_features:
        agent = agent._at_stage("head")  # the batch holds backbone feature maps
    else:
        agent, batch = agent._augment(batch)
        agent, batch = agent._with_frozen_features(batch)
    minibatches = common.split_minibatches(batch, utd_ratio)
    agent, critic_infos = jax.lax.scan(
        lambda a, mb: a._critic_step(mb), agent, minibatches, unroll=_scan_unroll(agent.config, utd_ratio)
    )
    last = jax.tree_util.tree_map(lambda x: x[-1], minibatches)
    agent, actor_info = agent._actor_temp_step(last)
    info = {k: v.mean() for k, v in critic_infos.items()}
    info.update(actor_info)
    return agent._full_encoder(), info


def _update_upstream_impl(agent: SACAgent, batch: Batch, utd_ratio: int, given_features: bool = False):
    """update_order="upstream" (module docstring): ``utd_ratio - 1`` critic-only steps on the
    first minibatches, then one full step on the last; critic metrics averaged over all
    ``utd_ratio`` critic steps, as in the "sac" order."""
    if given_features:
        agent = agent._at_stage("head")  # the batch holds backbone feature maps
    else:
        agent, batch = agent._augment(batch)
        agent, batch = agent._with_frozen_features(batch)
    minibatches = common.split_minibatches(batch, utd_ratio)
    last = jax.tree_util.tree_map(lambda x: x[-1], minibatches)
    critic_infos = None
    if utd_ratio > 1:
        head = jax.tree_util.tree_map(lambda x: x[:-1], minibatches)
        agent, critic_infos = jax.lax.scan(
            lambda a, mb: a._critic_only_step(mb), agent, head, unroll=_scan_unroll(agent.config, utd_ratio - 1)
        )
    agent, last_info, actor_info = agent._full_step(last)
    if critic_infos is None:
        info = dict(last_info)
    else:
        info = {k: jnp.concatenate([v, last_info[k][None]]).mean() for k, v in critic_infos.items()}
    info.update(actor_info)
    return agent._full_encoder(), info


def _update_critic_impl(agent: SACAgent, batch: Batch):
    agent, batch = agent._augment(batch)
    agent, batch = agent._with_frozen_features(batch)
    agent, info = agent._critic_step(batch)
    return agent._full_encoder(), info


def _act_impl(agent: SACAgent, observations, key, squeeze: bool):
    actions = agent._select_actions(observations, key)
    return actions[0] if squeeze else actions


_update_jit = jax.jit(_update_impl, static_argnames=("utd_ratio",))
_update_jit_donated = jax.jit(_update_impl, static_argnames=("utd_ratio",), donate_argnums=(0,))
_update_features_jit = jax.jit(functools.partial(_update_impl, given_features=True), static_argnames=("utd_ratio",))
_update_features_jit_donated = jax.jit(
    functools.partial(_update_impl, given_features=True), static_argnames=("utd_ratio",), donate_argnums=(0,)
)
_update_critic_jit = jax.jit(_update_critic_impl)
_act_jit = jax.jit(_act_impl, static_argnames=("squeeze",))
