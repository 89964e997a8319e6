"""The trainable proxy value ``V(o, l)``: state (params, optimiser, TD target), one jitted update
step, inference (values, latents, whole-episode value curves) and a self-describing model folder
(:mod:`uniintervene_jax.io`). Network: :mod:`.network`; loss: :mod:`.losses`; config:
:mod:`.config`; data: :mod:`.dataset`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

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
from uniintervene_jax.value.config import resolve_config
from uniintervene_jax.value.dataset import BATCH_KEYS
from uniintervene_jax.value.losses import proxy_value_loss
from uniintervene_jax.value.network import ProxyValueNet

MODEL_KIND = "proxy_value"


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


def _instruction_batch(instr_ids: Any, batch: int) -> np.ndarray:
    ids = np.asarray(instr_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"instruction ids must be integers, got {ids.dtype}")
    if ids.ndim == 1:
        ids = np.broadcast_to(ids[None], (batch, ids.shape[0]))
    if ids.ndim != 2 or ids.shape[0] != batch:
        raise ValueError(f"instruction ids must be (L,) or (B, L) with B={batch}, got {ids.shape}")
    return np.ascontiguousarray(ids, np.int32)  # host array: jitted calls take it as it is


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
          config: fields of :func:`~.config.get_default_config` (missing ones take defaults).

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
        obs_b, squeeze = common.policy_observations(obs, self.obs_spec, host=True)
        n = int(next(iter(obs_b.values())).shape[0])
        if n < 1:
            raise ValueError("empty observation batch")
        ids = _instruction_batch(instr_ids, n)
        padded = 1 << (n - 1).bit_length()
        if padded != n:
            # On the host, like the checks above: eager jnp ops (about 0.1 ms per dispatch on
            # this CPU) were most of the time of a gate's value call and of value_curves.
            def pad(x):
                return np.concatenate([x, np.repeat(x[-1:], padded - n, axis=0)])

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

    def values_and_embeddings(self, obs: Mapping[str, Any], instr_ids: Any) -> Tuple[np.ndarray, np.ndarray]:
        """``(values, z)`` from one forward pass: :meth:`values` and :meth:`encode` of the same
        inputs at the cost of one call (the gate needs both for an observation it triggers on).

        Returns float32 ``(B,)`` and ``(B, latent_dim)`` (``()`` and ``(latent_dim,)`` for one
        unbatched observation). Inputs and errors as :meth:`values`."""
        obs_b, ids, squeeze, n = self._prepare(obs, instr_ids)
        v, z = _values_and_encode_jit(self.state.params, self.net, obs_b, ids)
        v, z = np.asarray(v)[:n], np.asarray(z)[:n]
        return (v[0], z[0]) if squeeze else (v, z)

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


def _values_and_encode_impl(params, net, obs, ids):
    v1, v2, z = net.apply({"params": params}, obs, ids, method=ProxyValueNet.values_and_latent)
    return jnp.minimum(v1, v2), z


_values_and_encode_jit = jax.jit(_values_and_encode_impl, static_argnums=1)
_encode_jit = jax.jit(
    lambda params, net, obs, ids: net.apply({"params": params}, obs, ids, method=ProxyValueNet.encode),
    static_argnums=1)


# Observation bytes per batched call of value_curves (64 MiB).
VALUE_CURVE_BYTES = 64 << 20


def value_curves(model: Any, episodes: Sequence[Mapping[str, Any]], task: Optional[str] = None) -> List[np.ndarray]:
    """Proxy value of every observation of every episode.

    Args:
      model: a :class:`ProxyValue` (anything with
        ``values(obs_batch, instr_ids)``).
      episodes: episode dicts; observations ``(T+1, ...)``.
      task: instruction task for all episodes (None = each ``metadata["task"]``).

    Returns:
      list of float32 ``(T+1,)`` arrays, ``min(V1, V2)`` of ``o_0 .. o_T``.

    Episodes of one task go through ``model.values`` together, in calls of at most
    ``VALUE_CURVE_BYTES`` of observations (an episode larger than that alone): one call per
    episode was mostly dispatch overhead (a live learner's refresh of 200 episodes).

    Raises ValueError when an episode has no task, or when episodes batched together differ in
    observation keys or per-step shapes (and as ``model.values`` does for bad observations).
    """
    names = []
    for i, ep in enumerate(episodes):
        name = task if task is not None else (ep.get("metadata") or {}).get("task")
        if name is None:
            raise ValueError(f"episode {i}: no task given and metadata has no 'task'")
        names.append(name)
    obs = [{k: np.asarray(v) for k, v in ep["observations"].items()} for ep in episodes]
    curves: List[Optional[np.ndarray]] = [None] * len(episodes)
    for name in dict.fromkeys(names):
        ids = tokenize_instruction(instruction_for(name))
        calls: List[List[int]] = []
        size = 0
        for i in (i for i, n in enumerate(names) if n == name):
            nbytes = sum(v.nbytes for v in obs[i].values())
            if not calls or size + nbytes > VALUE_CURVE_BYTES:
                calls.append([])
                size = 0
            calls[-1].append(i)
            size += nbytes
        for take in calls:
            values = np.asarray(model.values(_stack_episodes([obs[i] for i in take], take), ids), np.float32)
            lengths = [len(next(iter(obs[i].values()))) for i in take]
            for i, part in zip(take, np.split(values, np.cumsum(lengths)[:-1])):
                curves[i] = part
    return curves


def _stack_episodes(observations: Sequence[Dict[str, np.ndarray]], index: Sequence[int]) -> Dict[str, np.ndarray]:
    """The episodes' ``(T_i+1, ...)`` observations concatenated along time, key by key.
    Raises ValueError naming the episode (``index``) whose keys or per-step shapes differ."""
    if len(observations) == 1:
        return observations[0]
    first = observations[0]
    for obs, i in zip(observations[1:], index[1:]):
        if sorted(obs) != sorted(first) or any(obs[k].shape[1:] != first[k].shape[1:] for k in first):
            raise ValueError(f"episode {i}: observation keys/shapes {({k: v.shape for k, v in obs.items()})} differ "
                             f"from episode {index[0]}'s {({k: v.shape for k, v in first.items()})}")
    return {k: np.concatenate([obs[k] for obs in observations]) for k in first}

