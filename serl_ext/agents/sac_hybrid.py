"""HiL-SERL hybrid agent: SAC for the arm + a discrete (DQN) gripper critic.

Reference: rail-berkeley/hil-serl ``serl_launcher/agents/continuous/sac_hybrid_single.py``.
The last action dimension is the gripper command in {-1, 0, +1}; the other ``A - 1``
dims are continuous and handled exactly as in :class:`SACAgent`.

Gripper convention (same as HiL-SERL): discrete index ``k = command + 1``, i.e.
``0 <-> -1``, ``1 <-> 0`` (stay), ``2 <-> +1``. Which sign closes the gripper is the
environment's business (HiL-SERL's Franka envs close on -1 ... Meta-World closes on a
positive last action); this agent only learns values of the three commands. Stored
gripper actions are rounded to the nearest integer and clipped to [-1, 1] before indexing.

Gripper critic: ``grasp_num_qs`` :class:`DiscreteCritic` heads (ensemble over params) on
the shared encoder features, trained jointly with the continuous critic (the encoder gets
gradients from both). Double-DQN target (van Hasselt et al. 2016):

    k* = argmax_k mean_g Q_g(s', k)                 (online grasp critic)
    y  = r + grasp_penalty + discount * mask * min_g Q'_g(s', k*)   (target grasp critic)

``grasp_penalty`` is ``batch["grasp_penalty"]`` when present (the env wrapper gives -0.02
when the gripper command changes state; the actor's transitions and the learner's buffers
carry it, ``serl_ext.loop.common.TRANSITION_EXTRAS``) else 0. With ``grasp_num_qs = 1`` this is
exactly HiL-SERL's single grasp critic. Loss: mean over heads and batch of
``(Q_g(s, k_taken) - y)^2``. Acting: ``k = argmax_k mean_g Q_g(s, k)`` (greedy).
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import ml_collections

from serl_ext.agents import common
from serl_ext.agents import sac
from serl_ext.networks.ensemble import Ensemble
from serl_ext.networks.heads import DiscreteCritic, tanh_gaussian_sample

NUM_GRIPPER_ACTIONS = 3


def get_default_config() -> ml_collections.ConfigDict:
    """SAC defaults (:func:`serl_ext.agents.sac.get_default_config`) plus gripper fields."""
    c = sac.get_default_config()
    # Number of gripper (DQN) critic heads; 1 = HiL-SERL's single GraspCritic.
    c.grasp_num_qs = 2
    # None or (low, high): clip of the gripper TD target (off by default: the grasp
    # penalty makes returns leave the [0, 1] range of sparse rewards).
    c.grasp_target_clip = ml_collections.config_dict.placeholder(tuple)
    return c


def gripper_to_index(gripper: jax.Array) -> jax.Array:
    """Gripper command in {-1, 0, 1} (float) -> int32 index in {0, 1, 2} (round, clip, +1)."""
    return jnp.clip(jnp.round(gripper), -1, 1).astype(jnp.int32) + 1


def index_to_gripper(index: jax.Array) -> jax.Array:
    """int index in {0, 1, 2} -> float32 gripper command in {-1, 0, 1}."""
    return index.astype(jnp.float32) - 1.0


def compute_grasp_target(
    rewards: jax.Array,
    grasp_penalty: jax.Array,
    masks: jax.Array,
    online_next_qs: jax.Array,
    target_next_qs: jax.Array,
    discount: float,
    target_clip: Optional[Tuple[float, float]] = None,
) -> jax.Array:
    """Double-DQN gripper target.

    Args:
      rewards, grasp_penalty, masks: float32 ``(B,)``.
      online_next_qs: ``(G, B, K)`` online gripper-critic values at ``s'`` (selects k*).
      target_next_qs: ``(G, B, K)`` target gripper-critic values at ``s'`` (evaluates k*).
      discount: gamma.
      target_clip: optional ``(low, high)`` clip.

    Returns float32 ``(B,)``:
    ``r + penalty + discount * mask * min_g target_next_qs[g, b, argmax_k mean_g online[g, b, k]]``.
    Raises ValueError on shape mismatch.
    """
    if online_next_qs.shape != target_next_qs.shape or online_next_qs.ndim != 3:
        raise ValueError(
            f"need online/target next qs of equal shape (G, B, K), got {online_next_qs.shape}, {target_next_qs.shape}"
        )
    b = online_next_qs.shape[1]
    chex.assert_shape([rewards, grasp_penalty, masks], (b,))
    best = jnp.argmax(online_next_qs.mean(axis=0), axis=-1)  # (B,)
    chosen = jnp.take_along_axis(target_next_qs, best[None, :, None], axis=-1)[..., 0]  # (G, B)
    target = rewards + grasp_penalty + discount * masks * chosen.min(axis=0)
    if target_clip is not None:
        target = jnp.clip(target, target_clip[0], target_clip[1])
    return target


class SACHybridAgent(sac.SACAgent):
    """SAC over the first ``A - 1`` action dims + DQN gripper critic over the last.

    Same API as :class:`serl_ext.agents.sac.SACAgent`; ``critic.params`` holds
    ``{"encoder", "critic", "grasp_critic"}``; actions are ``(A,)`` with the last entry in
    {-1, 0, 1}; :meth:`policy_params` also carries ``"grasp_critic"`` (the gripper is
    chosen greedily by it). ``info`` adds ``grasp_critic_loss``, ``grasp_q_mean``,
    ``grasp_target_mean``.
    """

    @classmethod
    def _continuous_dim(cls, action_dim: int) -> int:
        if action_dim < 2:
            raise ValueError(f"the hybrid agent needs A >= 2 (arm dims + gripper), got A={action_dim}")
        return action_dim - 1

    @classmethod
    def create(
        cls,
        rng: jax.Array,
        observations: Dict[str, Any],
        actions: Any,
        config: Optional[ml_collections.ConfigDict] = None,
    ) -> "SACHybridAgent":
        """Build the agent (see :meth:`SACAgent.create`); config from :func:`get_default_config`.

        A plain SAC config is accepted: missing gripper fields take their defaults.
        Raises ValueError also for ``grasp_num_qs < 1`` or ``A < 2``.
        """
        config = get_default_config() if config is None else common.merge_config(get_default_config(), config, False)
        if "grasp_num_qs" not in config or int(config.grasp_num_qs) < 1:
            raise ValueError("config.grasp_num_qs must be >= 1 (use sac_hybrid.get_default_config())")
        clip = config.get("grasp_target_clip", None)
        if clip is not None and (len(tuple(clip)) != 2 or not float(clip[0]) < float(clip[1])):
            raise ValueError(f"config.grasp_target_clip must be None or (low, high), got {clip}")
        parts = cls._build(
            rng,
            observations,
            actions,
            config,
            extra_resolved=dict(grasp_target_clip=None if clip is None else (float(clip[0]), float(clip[1]))),
        )
        frozen = parts["frozen"]
        grasp_cls = functools.partial(
            DiscreteCritic,
            hidden_dims=frozen.hidden_dims,
            num_actions=NUM_GRIPPER_ACTIONS,
            use_layer_norm=frozen.use_layer_norm,
            activation=frozen.activation,
        )
        grasp_def = Ensemble(grasp_cls, num=int(frozen.grasp_num_qs))
        critic_params = dict(parts["critic_params"])
        critic_params["grasp_critic"] = grasp_def.init(parts["k_extra"], parts["feats"])["params"]
        parts["critic_params"] = critic_params
        return cls._assemble(parts, grasp_def=grasp_def)

    def _continuous(self, actions: jax.Array) -> jax.Array:
        return actions[..., :-1]

    def _grasp_qs(self, params: Any, feats: jax.Array) -> jax.Array:
        return self.nets.grasp_critic.apply({"params": params}, feats)

    def _aux_critic_loss(self, critic_params, feats, next_feats, next_feats_target, batch, key):
        cfg = self.config
        b = batch["rewards"].shape[0]
        g = int(cfg.grasp_num_qs)
        online_next = jax.lax.stop_gradient(self._grasp_qs(critic_params["grasp_critic"], next_feats))
        target_next = self._grasp_qs(self.target_critic_params["grasp_critic"], next_feats_target)
        chex.assert_shape([online_next, target_next], (g, b, NUM_GRIPPER_ACTIONS))
        penalty = batch["grasp_penalty"]
        target = compute_grasp_target(
            batch["rewards"], penalty, batch["masks"], online_next, target_next, cfg.discount, cfg.grasp_target_clip
        )
        target = jax.lax.stop_gradient(target)
        qs = self._grasp_qs(critic_params["grasp_critic"], feats)
        idx = gripper_to_index(batch["actions"][..., -1])
        taken = jnp.take_along_axis(qs, idx[None, :, None], axis=-1)[..., 0]
        chex.assert_shape(taken, (g, b))
        loss = jnp.mean((taken - target[None]) ** 2)
        return loss, {"grasp_critic_loss": loss, "grasp_q_mean": taken.mean(), "grasp_target_mean": target.mean()}

    def _check_batch(self, batch, utd_ratio):
        checked = common.check_batch(
            batch, self.obs_spec, self.config.action_dim, utd_ratio, optional_keys=("grasp_penalty",)
        )
        if "grasp_penalty" not in checked:  # same pytree with or without: no recompilation
            checked["grasp_penalty"] = jnp.zeros_like(checked["rewards"])
        return checked

    def _select_actions(self, observations, key):
        feats = self._encode(self.critic.params["encoder"], observations)
        mean, log_std = self._policy(self.actor.params, feats)
        if key is None:
            arm = jnp.tanh(mean)
        else:
            arm = tanh_gaussian_sample(key, mean, log_std)[0]
        grasp = jnp.argmax(self._grasp_qs(self.critic.params["grasp_critic"], feats).mean(axis=0), axis=-1)
        return jnp.concatenate([arm, index_to_gripper(grasp)[..., None]], axis=-1)

    def _policy_param_tree(self):
        return {
            "actor": self.actor.params,
            "encoder": self.critic.params["encoder"],
            "grasp_critic": self.critic.params["grasp_critic"],
        }

    def _with_policy_tree(self, new):
        critic_params = dict(self.critic.params)
        critic_params["encoder"] = new["encoder"]
        critic_params["grasp_critic"] = new["grasp_critic"]
        return self.replace(
            actor=self.actor.replace(params=new["actor"]),
            critic=self.critic.replace(params=critic_params),
        )
