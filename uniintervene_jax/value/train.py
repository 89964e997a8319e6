"""Training the proxy value function (DESIGN.md section 4, the official offline code).

Loss per batch (every term applied to both heads and summed over them; each term is a batch
mean of ``weight_b * loss_b`` with ``weight_b = failure_weight`` (2.0) for samples from failed
episodes and 1.0 otherwise):

* TD: ``(V_k(s) - y)^2`` with ``y = r + gamma (1 - d) min(V1, V2)(s')`` (gamma 0.99),
  ``y`` stopped. ``min(V1, V2)(s')`` uses the target parameters, updated after every step by
  Polyak averaging with rate ``target_tau``; the default ``target_tau = 1.0`` makes the target
  the current parameters under ``stop_gradient`` (the official code's ``.detach()``).
* label regression (weight 0.3): ``success_b * (V_k(s) - progress)^2`` (successful samples
  only; the term is still averaged over the whole batch).
* progress regression (weight 1): ``(V_k(s) - progress)^2`` for every sample (0 for failures).
* conservative hinge (weight 0.05): ``relu(V_k(s) - G_MC)``, the Monte-Carlo return.

Rewards for the value function do not come from the env: ``r = 1`` and ``d = 1`` at the last
step of a successful episode (the success terminal), ``r = 0`` elsewhere; the last step of a
failed episode has ``d = 1`` only if the env terminated it (a truncation bootstraps).
Batches hold ``failure_fraction`` (0.5) samples from failed episodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from serl_ext.agents import common
from serl_ext.networks.params import load_pretrained_encoder, to_numpy_tree
from uniintervene_jax import io
from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.value.labels import episode_success, monte_carlo_returns, nttg_progress
from uniintervene_jax.value.model import ProxyValueNet

MODEL_KIND = "proxy_value"
BATCH_KEYS = ("observations", "next_observations", "instructions", "rewards", "dones", "progress",
              "mc_returns", "success", "weights")


def get_default_config() -> ml_collections.ConfigDict:
    """Default proxy-value config (every field commented)."""
    c = ml_collections.ConfigDict()
    # Seed of parameter init, batch sampling and augmentation in train_proxy_value.
    c.seed = 0
    # Trunk MLP widths between [obs features, instruction embedding] and the latent z.
    c.hidden_dims = (256, 256)
    # Width D of the latent z (LayerNorm'ed); encode() returns it.
    c.latent_dim = 128
    # Hidden widths of each of the two value heads (each ends in Dense(1) + sigmoid).
    c.head_hidden_dims = (256,)
    # InstructionEncoder: hashed-word vocabulary size (must match tokenize_instruction) and width.
    c.instruction_vocab_size = 512
    c.instruction_dim = 32
    # Observation encoder (serl_ext.agents.common.encoder_config): "state" by default,
    # "small_cnn" + image_keys for images; latent_dim is the per-camera width here.
    c.encoder = common.encoder_config()
    c.encoder.latent_dim = 128
    # Adam learning rate (whole network, encoder included).
    c.lr = 3e-4
    # Batch size of train_proxy_value.
    c.batch_size = 256
    # TD discount (DESIGN section 4: 0.99); also the discount of the Monte-Carlo returns.
    c.gamma = 0.99
    # Polyak rate of the TD target params; 1.0 = current params with stop_gradient (official).
    c.target_tau = 1.0
    # Loss weights (DESIGN section 4): TD, label regression (successful samples only),
    # progress regression (all samples), conservative hinge relu(V - G_MC).
    c.td_weight = 1.0
    c.label_weight = 0.3
    c.progress_weight = 1.0
    c.conservative_weight = 0.05
    # Per-sample loss weight of samples from failed episodes (successful: 1.0).
    c.failure_weight = 2.0
    # Fraction of each batch drawn from failed episodes (when both kinds exist).
    c.failure_fraction = 0.5
    return c


def resolve_config(config: Optional[Any] = None) -> ml_collections.ConfigDict:
    """:func:`get_default_config` overridden by ``config`` (ConfigDict or plain dict, nested
    ``encoder`` merged field by field), validated.

    Raises TypeError for another type, ValueError for an out-of-range field.
    """
    if config is None:
        c = get_default_config()
    else:
        if isinstance(config, Mapping) and not isinstance(config, ml_collections.ConfigDict):
            config = ml_collections.ConfigDict(dict(config))
        if not isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
            raise TypeError(f"config must be a ConfigDict or dict, got {type(config).__name__}")
        defaults = get_default_config()
        unknown = sorted(set(config.keys()) - set(defaults.keys()))
        if "encoder" in config and config.encoder is not None:
            unknown += [f"encoder.{k}" for k in sorted(set(config.encoder.keys()) - set(defaults.encoder.keys()))]
        if unknown:
            raise ValueError(f"unknown proxy-value config fields {unknown}")
        c = common.merge_config(defaults, config, False)
    _check_config(c)
    return c


def _check_config(c: ml_collections.ConfigDict) -> None:
    if not float(c.lr) > 0:
        raise ValueError(f"config.lr must be > 0, got {c.lr}")
    if not 0.0 < float(c.target_tau) <= 1.0:
        raise ValueError(f"config.target_tau must be in (0, 1], got {c.target_tau}")
    if not 0.0 <= float(c.gamma) <= 1.0:
        raise ValueError(f"config.gamma must be in [0, 1], got {c.gamma}")
    if int(c.batch_size) < 1:
        raise ValueError(f"config.batch_size must be >= 1, got {c.batch_size}")
    if not 0.0 <= float(c.failure_fraction) <= 1.0:
        raise ValueError(f"config.failure_fraction must be in [0, 1], got {c.failure_fraction}")
    for name in ("td_weight", "label_weight", "progress_weight", "conservative_weight", "failure_weight"):
        if not float(c[name]) >= 0:
            raise ValueError(f"config.{name} must be >= 0, got {c[name]}")
    for name in ("hidden_dims", "head_hidden_dims"):
        if any(int(h) < 1 for h in c[name]):
            raise ValueError(f"config.{name} must hold positive widths, got {c[name]}")
    if int(c.latent_dim) < 1:
        raise ValueError(f"config.latent_dim must be >= 1, got {c.latent_dim}")


# ------------------------------------------------------------------ loss
def proxy_value_loss(
    v1: jax.Array,
    v2: jax.Array,
    v_next: jax.Array,
    rewards: jax.Array,
    dones: jax.Array,
    progress: jax.Array,
    mc_returns: jax.Array,
    success: jax.Array,
    weights: jax.Array,
    gamma: float = 0.99,
    td_weight: float = 1.0,
    label_weight: float = 0.3,
    progress_weight: float = 1.0,
    conservative_weight: float = 0.05,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Proxy-value loss of one batch (pure; formula in the module docstring).

    Args:
      v1, v2: float32 ``(B,)`` head values at ``s`` (after the sigmoid).
      v_next: float32 ``(B,)`` ``min(V1, V2)(s')`` (stopped here).
      rewards, dones, progress, mc_returns: float32 ``(B,)``.
      success: ``(B,)`` 1.0 for samples from successful episodes, else 0.0.
      weights: ``(B,)`` per-sample weights (2.0 for failed episodes).

    Returns:
      ``(loss, info)``: scalar total and ``td_loss``, ``label_loss``, ``progress_loss``,
      ``conservative_loss`` (unweighted by the term weights), ``td_target``, ``v_mean``.
    """
    chex.assert_rank(v1, 1)
    chex.assert_equal_shape([v1, v2, v_next, rewards, dones, progress, mc_returns, success, weights])
    target = jax.lax.stop_gradient(rewards + gamma * (1.0 - dones) * v_next)

    def wmean(x):
        return jnp.mean(weights * x)

    td = wmean((v1 - target) ** 2) + wmean((v2 - target) ** 2)
    sq_prog = (v1 - progress) ** 2 + (v2 - progress) ** 2
    label = wmean(success * sq_prog)
    prog = wmean(sq_prog)
    cons = wmean(jax.nn.relu(v1 - mc_returns) + jax.nn.relu(v2 - mc_returns))
    loss = td_weight * td + label_weight * label + progress_weight * prog + conservative_weight * cons
    info = {
        "loss": loss,
        "td_loss": td,
        "label_loss": label,
        "progress_loss": prog,
        "conservative_loss": cons,
        "td_target": jnp.mean(target),
        "v_mean": jnp.mean(jnp.minimum(v1, v2)),
    }
    return loss, info


# --------------------------------------------------------------- dataset
@dataclasses.dataclass
class ValueDataset:
    """Transitions of many episodes, flattened for proxy-value training.

    Observations are stored once per frame: ``frames[key]`` ``(M, ...)`` with
    ``M = sum_i (T_i + 1)``; transition ``n`` uses ``frames[k][obs_index[n]]`` and
    ``frames[k][next_index[n]]`` (``next_index = obs_index + 1``). Per transition (N = sum T_i):
    ``instructions`` int32 ``(N, L)``, ``rewards``/``dones``/``progress``/``mc_returns``/
    ``weights`` float32 ``(N,)``, ``success`` bool ``(N,)``, ``episode`` and ``t`` int32 ``(N,)``.
    ``episode_successes`` bool ``(E,)``. Progress of transition ``t`` of a successful episode of
    T steps is ``t / (T - 1)`` (the observation that starts the last step is labelled 1; the
    final observation ``o_T`` is only a next observation).
    """

    frames: Dict[str, np.ndarray]
    obs_index: np.ndarray
    next_index: np.ndarray
    instructions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    progress: np.ndarray
    mc_returns: np.ndarray
    success: np.ndarray
    weights: np.ndarray
    episode: np.ndarray
    t: np.ndarray
    episode_successes: np.ndarray

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[Mapping[str, Any]],
        task: Optional[str] = None,
        gamma: float = 0.99,
        failure_weight: float = 2.0,
        obs_keys: Optional[Sequence[str]] = None,
    ) -> "ValueDataset":
        """Flatten episodes (``serl_ext.data.episodes`` dicts).

        Args:
          episodes: non-empty sequence of episodes (T >= 1 each, same observation keys/shapes).
          task: task name for every episode's instruction; None = each ``metadata["task"]``.
          gamma: discount of the Monte-Carlo returns.
          failure_weight: loss weight of samples from failed episodes.
          obs_keys: observation keys to keep (None = all).

        Raises:
          ValueError: empty list, an episode with no steps, inconsistent observation
            keys/shapes, NaN/inf in float observations, no task known for an episode.
          KeyError: unknown task name (from ``instruction_for``).
        """
        if isinstance(episodes, Mapping):
            raise TypeError("from_episodes takes a sequence of episodes, got a single episode dict")
        episodes = list(episodes)
        if not episodes:
            raise ValueError("from_episodes needs at least one episode")
        frames: Dict[str, List[np.ndarray]] = {}
        cols: Dict[str, List[np.ndarray]] = {k: [] for k in (
            "obs_index", "instructions", "rewards", "dones", "progress", "mc_returns", "success",
            "weights", "episode", "t")}
        ep_success = []
        offset = 0
        spec = None
        for i, ep in enumerate(episodes):
            if not isinstance(ep, Mapping) or "observations" not in ep or "actions" not in ep:
                raise ValueError(f"episode {i} is not an episode dict with observations and actions")
            T = int(np.shape(ep["actions"])[0]) if np.ndim(ep["actions"]) >= 1 else 0
            if T < 1:
                raise ValueError(f"episode {i} has no steps")
            obs = ep["observations"]
            keys = sorted(obs) if obs_keys is None else list(obs_keys)
            this_spec = []
            for k in keys:
                if k not in obs:
                    raise ValueError(f"episode {i} has no observation key {k!r}")
                arr = np.asarray(obs[k])
                if arr.shape[0] != T + 1:
                    raise ValueError(f"episode {i}: observations[{k!r}] has {arr.shape[0]} frames, expected T+1={T + 1}")
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    raise ValueError(f"episode {i}: observations[{k!r}] contains NaN or inf")
                this_spec.append((k, arr.shape[1:], arr.dtype.str))
                frames.setdefault(k, []).append(arr)
            if spec is None:
                spec = this_spec
            elif this_spec != spec:
                raise ValueError(f"episode {i}: observation keys/shapes/dtypes {this_spec} differ from episode 0 {spec}")
            name = task if task is not None else (ep.get("metadata") or {}).get("task")
            if name is None:
                raise ValueError(f"episode {i}: no task given and metadata has no 'task'")
            ids = tokenize_instruction(instruction_for(name))
            success = episode_success(ep)
            terminals = np.asarray(ep.get("terminals", np.zeros(T, bool)), bool)
            if terminals.shape != (T,):
                raise ValueError(f"episode {i}: terminals must have shape ({T},), got {terminals.shape}")
            rewards = np.zeros(T, np.float32)
            dones = np.zeros(T, np.float32)
            if success:
                rewards[-1], dones[-1] = 1.0, 1.0
            elif terminals[-1]:
                dones[-1] = 1.0
            cols["obs_index"].append(offset + np.arange(T))
            cols["instructions"].append(np.tile(ids[None], (T, 1)))
            cols["rewards"].append(rewards)
            cols["dones"].append(dones)
            cols["progress"].append(nttg_progress(T, success))
            cols["mc_returns"].append(monte_carlo_returns(rewards, dones > 0, gamma))
            cols["success"].append(np.full(T, success, bool))
            cols["weights"].append(np.full(T, 1.0 if success else float(failure_weight), np.float32))
            cols["episode"].append(np.full(T, i, np.int32))
            cols["t"].append(np.arange(T, dtype=np.int32))
            ep_success.append(success)
            offset += T + 1
        cat = {k: np.concatenate(v) for k, v in cols.items()}
        obs_index = cat.pop("obs_index").astype(np.int64)
        return cls(
            frames={k: np.concatenate(v) for k, v in frames.items()},
            obs_index=obs_index,
            next_index=obs_index + 1,
            episode_successes=np.asarray(ep_success, bool),
            **cat,
        )

    def batch(self, indices: Any) -> Dict[str, Any]:
        """Batch of the transitions ``indices`` (int ``(B,)``) with the keys of ``BATCH_KEYS``
        (``success`` as float32)."""
        idx = np.asarray(indices, np.int64)
        oi, ni = self.obs_index[idx], self.next_index[idx]
        return {
            "observations": {k: v[oi] for k, v in self.frames.items()},
            "next_observations": {k: v[ni] for k, v in self.frames.items()},
            "instructions": self.instructions[idx],
            "rewards": self.rewards[idx],
            "dones": self.dones[idx],
            "progress": self.progress[idx],
            "mc_returns": self.mc_returns[idx],
            "success": self.success[idx].astype(np.float32),
            "weights": self.weights[idx],
        }

    def sample(self, rng: np.random.Generator, batch_size: int, failure_fraction: float = 0.5) -> Dict[str, Any]:
        """Random batch (with replacement) holding ``round(failure_fraction * batch_size)``
        samples from failed episodes and the rest from successful ones.

        Fallback: when the dataset has only successful or only failed samples, the batch is
        drawn uniformly from all samples (so it is 0% or 100% failures).

        Raises ValueError for ``batch_size < 1`` or ``failure_fraction`` outside [0, 1].
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= float(failure_fraction) <= 1.0:
            raise ValueError(f"failure_fraction must be in [0, 1], got {failure_fraction}")
        fail = np.flatnonzero(~self.success)
        succ = np.flatnonzero(self.success)
        if len(fail) == 0 or len(succ) == 0:
            idx = rng.integers(0, len(self), size=int(batch_size))
        else:
            n_fail = int(round(float(failure_fraction) * int(batch_size)))
            idx = np.concatenate([
                fail[rng.integers(0, len(fail), size=n_fail)],
                succ[rng.integers(0, len(succ), size=int(batch_size) - n_fail)],
            ])
        return self.batch(idx)


# ----------------------------------------------------------------- model
def _net_from_config(c: Any) -> ProxyValueNet:
    enc = c.encoder
    return ProxyValueNet(
        encoder_type=str(enc.type),
        image_keys=tuple(enc.image_keys),
        image_latent_dim=int(enc.latent_dim),
        num_spatial_features=int(enc.num_spatial_features),
        widths=None if enc.widths is None else tuple(int(w) for w in enc.widths),
        hidden_dims=tuple(int(h) for h in c.hidden_dims),
        latent_dim=int(c.latent_dim),
        head_hidden_dims=tuple(int(h) for h in c.head_hidden_dims),
        vocab_size=int(c.instruction_vocab_size),
        instruction_dim=int(c.instruction_dim),
    )


def _instruction_batch(instr_ids: Any, batch: int) -> jax.Array:
    ids = np.asarray(instr_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"instruction ids must be integers, got {ids.dtype}")
    if ids.ndim == 1:
        ids = np.broadcast_to(ids[None], (batch, ids.shape[0]))
    if ids.ndim != 2 or ids.shape[0] != batch:
        raise ValueError(f"instruction ids must be (L,) or (B, L) with B={batch}, got {ids.shape}")
    return jnp.asarray(ids, jnp.int32)


class ProxyValue(struct.PyTreeNode):
    """Trained proxy value ``V(o, l)`` in [0, 1] with its optimiser and TD target.

    Fields: ``rng`` (carried key), ``state`` (TrainState, params of :class:`ProxyValueNet`),
    ``target_params`` (TD target, Polyak rate ``config.target_tau``), static ``config``
    (FrozenConfigDict), ``net`` and ``obs_spec``.
    """

    rng: jax.Array
    state: TrainState
    target_params: Any
    config: ml_collections.FrozenConfigDict = struct.field(pytree_node=False)
    net: ProxyValueNet = struct.field(pytree_node=False)
    obs_spec: common.ObsSpec = struct.field(pytree_node=False)

    @classmethod
    def create(cls, rng: Any, obs_example: Mapping[str, Any], config: Optional[Any] = None) -> "ProxyValue":
        """Build from one unbatched observation dict (``"state"`` ``(S,)``, images uint8 ``(H, W, 3)``).

        Args:
          rng: a JAX PRNG key or an int seed.
          obs_example: one observation (keys and shapes define the accepted inputs).
          config: fields of :func:`get_default_config` (missing ones take defaults).

        Raises:
          ValueError / TypeError: bad config or example (e.g. image keys not in the example).
          FileNotFoundError: ``encoder.pretrained_path`` missing.
        """
        c = resolve_config(config)
        common.validate_encoder_config(c.encoder, obs_example)
        obs_spec = common.make_obs_spec(obs_example)
        frozen = ml_collections.FrozenConfigDict(c)
        net = _net_from_config(frozen)
        if isinstance(rng, (int, np.integer)):
            rng = jax.random.PRNGKey(int(rng))
        rng, k_init = jax.random.split(rng)
        params = dict(net.init(k_init, *_init_inputs(obs_example, obs_spec))["params"])
        if frozen.encoder.pretrained_path is not None:
            enc = dict(params["obs_encoder"])
            for key in frozen.encoder.image_keys:
                sub = dict(enc[f"image_{key}"])
                sub["backbone"] = jax.tree.map(
                    jnp.asarray, load_pretrained_encoder(frozen.encoder.pretrained_path, reference=sub["backbone"]))
                enc[f"image_{key}"] = sub
            params["obs_encoder"] = enc
        state = common.make_train_state(params, float(frozen.lr))
        return cls(rng=rng, state=state, target_params=params, config=frozen, net=net, obs_spec=obs_spec)

    # ------------------------------------------------------------ training
    def _update(self, batch: Dict[str, Any]) -> Tuple["ProxyValue", Dict[str, jax.Array]]:
        c = self.config
        rng, aug_key = jax.random.split(self.rng)
        batch = common.augment_batch(aug_key, batch, c.encoder)
        nv1, nv2 = self.net.apply({"params": self.target_params}, batch["next_observations"], batch["instructions"])
        v_next = jnp.minimum(nv1, nv2)

        def loss_fn(params):
            v1, v2 = self.net.apply({"params": params}, batch["observations"], batch["instructions"])
            return proxy_value_loss(
                v1, v2, v_next, batch["rewards"], batch["dones"], batch["progress"], batch["mc_returns"],
                batch["success"], batch["weights"], gamma=float(c.gamma), td_weight=float(c.td_weight),
                label_weight=float(c.label_weight), progress_weight=float(c.progress_weight),
                conservative_weight=float(c.conservative_weight))

        grads, info = jax.grad(loss_fn, has_aux=True)(self.state.params)
        state = self.state.apply_gradients(grads=grads)
        target = optax.incremental_update(state.params, self.target_params, float(c.target_tau))
        info["grad_norm"] = optax.global_norm(grads)
        return self.replace(rng=rng, state=state, target_params=target), info

    def update(self, batch: Mapping[str, Any]) -> Tuple["ProxyValue", Dict[str, jax.Array]]:
        """One jitted gradient step.

        ``batch``: ``observations`` / ``next_observations`` dicts with leading dim B matching
        the example observation, ``instructions`` int ``(B, L)``, float ``(B,)`` ``rewards``,
        ``dones``, ``progress``, ``mc_returns``, ``success`` (0/1), ``weights``
        (:meth:`ValueDataset.sample` makes these). Returns ``(new_model, info)`` with the
        losses of :func:`proxy_value_loss` plus ``grad_norm``.

        Raises ValueError / TypeError naming a missing or misshapen key.
        """
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch must be a dict, got {type(batch).__name__}")
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise ValueError(f"batch is missing keys {missing}")
        n = int(np.shape(batch["rewards"])[0]) if np.ndim(batch["rewards"]) == 1 else -1
        if n < 1:
            raise ValueError(f"batch['rewards'] must have shape (B,), got {np.shape(batch['rewards'])}")
        checked = {
            "observations": common.check_observations(batch["observations"], self.obs_spec, (n,), "batch['observations']"),
            "next_observations": common.check_observations(
                batch["next_observations"], self.obs_spec, (n,), "batch['next_observations']"),
            "instructions": _instruction_batch(batch["instructions"], n),
        }
        for k in BATCH_KEYS[3:]:
            arr = np.asarray(batch[k], np.float32)
            if arr.shape != (n,):
                raise ValueError(f"batch[{k!r}] must have shape ({n},), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"batch[{k!r}] contains NaN or inf")
            checked[k] = jnp.asarray(arr)
        return _update_jit(self, checked)

    # ----------------------------------------------------------- inference
    def _prepare(self, obs: Mapping[str, Any], instr_ids: Any) -> Tuple[Dict[str, jax.Array], jax.Array, bool, int]:
        """Batched inputs padded (by repeating the last row) to the next power of two, so that
        episodes of many lengths share a few compiled shapes; returns the true batch size."""
        obs_b, squeeze = common.policy_observations(obs, self.obs_spec)
        n = int(next(iter(obs_b.values())).shape[0])
        if n < 1:
            raise ValueError("empty observation batch")
        ids = _instruction_batch(instr_ids, n)
        padded = 1 << (n - 1).bit_length()
        if padded != n:
            pad = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], padded - n, axis=0)])  # noqa: E731
            obs_b = {k: pad(v) for k, v in obs_b.items()}
            ids = pad(ids)
        return obs_b, ids, squeeze, n

    def values(self, obs: Mapping[str, Any], instr_ids: Any) -> np.ndarray:
        """``min(V1, V2)`` with the current (not target) params.

        Args:
          obs: one observation (shapes of the example) or a batch ``(B, ...)``.
          instr_ids: int ``(L,)`` (shared by the batch) or ``(B, L)``.

        Returns float32 ``(B,)`` in [0, 1] (``()`` for one unbatched observation).
        Raises ValueError on shape mismatches.
        """
        obs_b, ids, squeeze, n = self._prepare(obs, instr_ids)
        v = np.asarray(_values_jit(self.state.params, self.net, obs_b, ids))[:n]
        return v[0] if squeeze else v

    def encode(self, obs: Mapping[str, Any], instr_ids: Any) -> np.ndarray:
        """Latent ``z`` float32 ``(B, latent_dim)`` (``(latent_dim,)`` unbatched); the default
        frozen target encoder of the intervention model. Inputs as :meth:`values`."""
        obs_b, ids, squeeze, n = self._prepare(obs, instr_ids)
        z = np.asarray(_encode_jit(self.state.params, self.net, obs_b, ids))[:n]
        return z[0] if squeeze else z

    def encode_fn(self):
        """Pure ``(params, obs_batch, ids (B, L)) -> z (B, D)`` for use inside other jitted code,
        with ``params = self.state.params``."""
        net = self.net
        return lambda params, obs, ids: net.apply({"params": params}, obs, ids, method=ProxyValueNet.encode)

    # ----------------------------------------------------------- save/load
    def save(self, directory: str) -> str:
        """Write a self-describing model folder (:mod:`uniintervene_jax.io`); returns it.

        Saved: config (with the observation spec), params and target params. Not saved: the
        Adam moments (a loaded model continues training with a fresh optimiser state).
        """
        cfg = self.config.to_dict()
        cfg["encoder"] = dict(cfg["encoder"], pretrained_path=None)  # weights are in params
        cfg["obs_spec"] = io.obs_spec_to_json(self.obs_spec)
        params = {"params": to_numpy_tree(self.state.params), "target_params": to_numpy_tree(self.target_params)}
        return io.save_model(directory, MODEL_KIND, _jsonable(cfg), params, {"step": int(self.state.step)})

    @classmethod
    def load(cls, directory: str) -> "ProxyValue":
        """Rebuild a model saved by :meth:`save` from its folder alone.

        Raises FileNotFoundError / ValueError (see ``io.load_model``; mismatched params)."""
        cfg, params, _ = io.load_model(directory, MODEL_KIND)
        example = io.example_from_spec(io.obs_spec_from_json(cfg.pop("obs_spec")))
        config = resolve_config(ml_collections.ConfigDict(cfg))
        common.validate_encoder_config(config.encoder, example)
        obs_spec = common.make_obs_spec(example)
        frozen = ml_collections.FrozenConfigDict(config)
        net = _net_from_config(frozen)
        rng, k_init = jax.random.split(jax.random.PRNGKey(int(frozen.seed)))
        # Shapes only (no parameter computation): the reference the saved params must match.
        reference = jax.eval_shape(net.init, k_init, *_init_inputs(example, obs_spec))["params"]
        p = io.params_like(params["params"], reference, "proxy_value params")
        tp = io.params_like(params["target_params"], reference, "proxy_value target_params")
        return cls(rng=rng, state=common.make_train_state(p, float(frozen.lr)), target_params=tp, config=frozen,
                   net=net, obs_spec=obs_spec)


def _init_inputs(obs_example: Mapping[str, Any], obs_spec: common.ObsSpec) -> Tuple[Dict[str, jax.Array], jax.Array]:
    obs_b = common.batch_example(common.check_observations(
        {k: obs_example[k] for k, _, _ in obs_spec}, obs_spec, (), "obs_example"))
    return obs_b, jnp.zeros((1, 16), jnp.int32)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


@jax.jit
def _update_jit(model: ProxyValue, batch: Dict[str, Any]):
    return model._update(batch)


def _values_impl(params, net, obs, ids):
    v1, v2 = net.apply({"params": params}, obs, ids)
    return jnp.minimum(v1, v2)


_values_jit = jax.jit(_values_impl, static_argnums=1)
_encode_jit = jax.jit(
    lambda params, net, obs, ids: net.apply({"params": params}, obs, ids, method=ProxyValueNet.encode),
    static_argnums=1)


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
      config: :func:`get_default_config` fields (missing ones take defaults).
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
