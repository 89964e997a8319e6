"""The trainable intervention model: state, jitted update, inference and the model folder.

:class:`InterventionModel` -- immutable ``flax.struct.PyTreeNode`` (one TrainState + the static
network definition and config); ``update(batch) -> (new_model, info)`` is jitted; ``predict``
returns the network outputs and ``sigmoid(risk)`` as numpy (whether that fires is the gate's
trigger rule, :func:`uniintervene_jax.gate.trigger_rule`); ``save`` / ``load`` go through
:mod:`uniintervene_jax.io` so a model reloads from its folder without the training code.
Network: :mod:`.network`; losses: :mod:`.losses`; config: :mod:`.config`.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from serl_ext.agents.common import ObsSpec, check_observations, make_obs_spec
from uniintervene_jax import io as model_io
from uniintervene_jax.intervention.config import LEGACY_FIELDS, _to_tuples, resolve_config
from uniintervene_jax.intervention.dataset import check_finite
from uniintervene_jax.intervention.losses import intervention_loss
from uniintervene_jax.intervention.network import InterventionNet

MODEL_KIND = "intervention_model"


def make_network(config: ml_collections.ConfigDict, target_dim: int) -> InterventionNet:
    """:class:`InterventionNet` for a resolved config and target latent width D."""
    m = config.model
    return InterventionNet(
        backbone=m.backbone, hidden_dims=tuple(m.hidden_dims), image_keys=tuple(m.image_keys),
        cnn_latent_dim=int(m.cnn_latent_dim),
        cnn_widths=None if m.cnn_widths is None else tuple(int(w) for w in m.cnn_widths),
        num_spatial_features=int(m.num_spatial_features), instr_vocab_size=int(m.instr_vocab_size),
        instr_dim=int(m.instr_dim), target_dim=int(target_dim), head_hidden_dims=tuple(m.head_hidden_dims),
        history_hidden_dims=tuple(m.history_hidden_dims), history_dim=int(m.history_dim),
        history_delta_scale=float(m.history_delta_scale), use_future=bool(config.use_future),
        use_value_cond=bool(config.use_value_cond), head_type=str(config.head_type),
        use_layer_norm=bool(m.use_layer_norm))


def _make_tx(config) -> optax.GradientTransformation:
    clip = 0.0 if config.grad_clip is None else float(config.grad_clip)
    return _cached_tx(float(config.learning_rate), clip)


@functools.lru_cache(maxsize=None)
def _cached_tx(learning_rate: float, grad_clip: float) -> optax.GradientTransformation:
    # One optimiser object per (lr, clip): the optimiser is static pytree metadata of the
    # TrainState, so a fresh object per model would recompile the jitted update every time.
    adam = optax.adam(learning_rate)
    if grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip), adam)
    return adam


@functools.partial(jax.jit, static_argnums=0)
def _init_params(net: InterventionNet, rng, observations, instr_ids, actions, value_history):
    # jitted (one compile per network definition, cached across models) instead of the much
    # slower op-by-op initialisation.
    return net.init(rng, observations, instr_ids, actions, value_history)["params"]


@functools.partial(jax.jit, static_argnums=0)
def _forward(net: InterventionNet, params, observations, instr_ids, actions, value_history):
    return net.apply({"params": params}, observations, instr_ids, actions, value_history)


@functools.partial(jax.jit, static_argnums=0)
def _risk_only(net: InterventionNet, params, observations, instr_ids, actions, value_history):
    # Only the trigger logit leaves the jitted call: XLA drops what risk does not read (the
    # value head with tvr_history) and one array, not every head, comes back to the host.
    return net.apply({"params": params}, observations, instr_ids, actions, value_history)["risk"]


@functools.lru_cache(maxsize=64)
def _history_len(config_json: str) -> int:
    # K of a resolved config, parsed once per config string (the gate scores every decision).
    return int(json.loads(config_json)["history_len"])


def _sigmoid(risk: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(risk, np.float64)))).astype(np.float32)


@jax.jit
def _update_step(model: "InterventionModel", batch):
    cfg = model.config

    def loss_fn(params):
        out = model.net.apply({"params": params}, batch["observations"], batch["instr_ids"],
                              batch["actions"], batch["value_history"])
        return intervention_loss(out, batch, cfg)

    (_, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(model.state.params)
    info = dict(info)
    info["grad_norm"] = optax.global_norm(grads)
    return model.replace(state=model.state.apply_gradients(grads=grads)), info


class InterventionModel(struct.PyTreeNode):
    """Trained or training intervention model (immutable; methods return new models).

    Fields: ``state`` (TrainState: params + Adam state + step); static ``net``
    (:class:`InterventionNet`), ``config_json`` (resolved config), ``obs_spec`` (per-sample
    observation keys/shapes/dtypes), ``action_dim``, ``target_dim`` (D), ``instr_len`` (L).
    """

    state: train_state.TrainState
    net: InterventionNet = struct.field(pytree_node=False)
    config_json: str = struct.field(pytree_node=False)
    obs_spec: ObsSpec = struct.field(pytree_node=False)
    action_dim: int = struct.field(pytree_node=False)
    target_dim: int = struct.field(pytree_node=False)
    instr_len: int = struct.field(pytree_node=False)

    # -------------------------------------------------------------- construction
    @classmethod
    def create(cls, rng: jax.Array, obs_example: Mapping[str, Any], action_dim: int, target_dim: int,
               config: Any = None, instr_len: int = 16) -> "InterventionModel":
        """New model with freshly initialised parameters.

        Args:
          rng: PRNG key (consumed by the initialisation).
          obs_example: one **unbatched** observation dict (``"state"`` (S,) float, images
            (H, W, C) uint8); fixes the observation spec.
          action_dim: A >= 1. target_dim: D >= 1 (target encoder width; with
            ``use_future=False`` only recorded). config: overrides of
            :func:`~.config.get_default_config`. instr_len: L of the instruction ids.
        Raises: ValueError / TypeError for a bad config or example.
        """
        cfg = resolve_config(config)
        if int(action_dim) < 1 or int(target_dim) < 1 or int(instr_len) < 1:
            raise ValueError(f"action_dim, target_dim, instr_len must be >= 1, got {action_dim}, {target_dim}, {instr_len}")
        spec = make_obs_spec(obs_example)
        if cfg.model.backbone == "mlp" and "state" not in dict((s[0], s) for s in spec):
            raise ValueError("backbone 'mlp' needs a 'state' key in the observation")
        for key in cfg.model.image_keys:
            shapes = {s[0]: s for s in spec}
            if key not in shapes or len(shapes[key][1]) != 3 or shapes[key][2] != "uint8":
                raise ValueError(f"image key {key!r} must be an unbatched uint8 (H, W, C) frame in obs_example")
        net = make_network(cfg, int(target_dim))
        obs = {k: jnp.zeros((1,) + shape, dtype) for k, shape, dtype in spec}
        params = _init_params(net, rng, obs, jnp.zeros((1, int(instr_len)), jnp.int32),
                              jnp.zeros((1, int(action_dim)), jnp.float32),
                              jnp.zeros((1, int(cfg.history_len) + 1), jnp.float32))
        state = train_state.TrainState.create(apply_fn=None, params=params, tx=_make_tx(cfg))
        state = state.replace(step=jnp.zeros((), jnp.int32))
        return cls(state=state, net=net, config_json=json.dumps(cfg.to_dict(), sort_keys=True), obs_spec=spec,
                   action_dim=int(action_dim), target_dim=int(target_dim), instr_len=int(instr_len))

    @property
    def config(self) -> ml_collections.ConfigDict:
        """The resolved config (a fresh copy)."""
        return ml_collections.ConfigDict(_to_tuples(json.loads(self.config_json)))

    @property
    def params(self) -> Any:
        return self.state.params

    # -------------------------------------------------------------- inputs
    def _inputs(self, observations, instr_ids, actions, value_history) -> Tuple[Dict, Any, Any, Any, int]:
        if not isinstance(observations, Mapping):
            raise TypeError(f"observations must be a dict of batched arrays, got {type(observations).__name__}")
        key0, shape0, _ = self.obs_spec[0]
        if key0 not in observations:
            raise ValueError(f"observations have no key {key0!r}; expected {[s[0] for s in self.obs_spec]}")
        b = int(np.shape(observations[key0])[0]) if np.ndim(observations[key0]) == len(shape0) + 1 else -1
        if b < 1:
            raise ValueError(f"observations[{key0!r}] must be batched (B, *{shape0}) with B >= 1, "
                             f"got {np.shape(observations[key0])}")
        obs = check_observations(observations, self.obs_spec, (b,), "observations", host=True)
        for k, v in obs.items():
            check_finite(f"observations[{k!r}]", v)
        ids = np.asarray(instr_ids)
        if ids.ndim == 1:
            ids = np.broadcast_to(ids, (b, ids.shape[0]))
        if ids.shape != (b, self.instr_len) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"instr_ids must be int (B={b}, L={self.instr_len}) or (L,), got {ids.dtype} {ids.shape}")
        act = np.asarray(actions, np.float32)
        if act.shape != (b, self.action_dim):
            raise ValueError(f"actions must be (B={b}, A={self.action_dim}), got {act.shape}")
        check_finite("actions", act)
        k1 = _history_len(self.config_json) + 1
        vh = np.asarray(value_history, np.float32)
        if vh.shape != (b, k1):
            raise ValueError(f"value_history must be (B={b}, K+1={k1}), got {vh.shape}")
        check_finite("value_history", vh)
        # Host arrays: the jitted forward / update takes them as they are (no eager dispatches).
        return obs, np.ascontiguousarray(ids, np.int32), act, vh, b

    def _check_batch(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch must be a dict, got {type(batch).__name__}")
        for key in ("observations", "instr_ids", "actions", "value_history", "labels"):
            if key not in batch:
                raise ValueError(f"batch has no key {key!r}; keys: {sorted(batch)}")
        obs, ids, act, vh, b = self._inputs(batch["observations"], batch["instr_ids"], batch["actions"],
                                            batch["value_history"])
        out = {"observations": obs, "instr_ids": ids, "actions": act, "value_history": vh}
        cfg = json.loads(self.config_json)
        scalars = ["labels", "values_next"]
        if cfg["head_type"] == "tvr_history":
            scalars += ["values_now", "tvr"]
        for key in scalars:
            if key not in batch:
                raise ValueError(f"batch has no key {key!r} (needed by this config); keys: {sorted(batch)}")
            arr = np.asarray(batch[key], np.float32)
            if arr.shape != (b,):
                raise ValueError(f"batch[{key!r}] must be ({b},), got {arr.shape}")
            check_finite(f"batch[{key!r}]", arr)
            out[key] = jnp.asarray(arr)
        if cfg["use_future"]:
            if "target_latents_next" not in batch:
                raise ValueError("batch has no key 'target_latents_next' (needed with use_future)")
            z = np.asarray(batch["target_latents_next"], np.float32)
            if z.shape != (b, self.target_dim):
                raise ValueError(f"batch['target_latents_next'] must be ({b}, {self.target_dim}), got {z.shape}")
            check_finite("batch['target_latents_next']", z)
            out["target_latents_next"] = jnp.asarray(z)
        return out

    # -------------------------------------------------------------- training / inference
    def update(self, batch: Mapping[str, Any]) -> Tuple["InterventionModel", Dict[str, jax.Array]]:
        """One Adam step on :func:`~uniintervene_jax.intervention.losses.intervention_loss`.

        ``batch``: ``observations`` dict (B, ...), ``instr_ids`` (B, L) int, ``actions``
        (B, A), ``value_history`` (B, K+1), ``labels`` (B,) bool, ``values_next`` (B,), plus
        ``values_now`` and ``tvr`` (``tvr_history``), ``target_latents_next`` (B, D)
        (use_future); extra keys are ignored. Validated in Python, then a jitted step.
        Returns ``(new_model, info)`` with float32 scalars (``loss``, each term,
        ``grad_norm``). Raises ValueError/TypeError for missing keys, shapes, NaN.
        """
        return _update_step(self, self._check_batch(batch))

    def predict(self, observations: Mapping[str, Any], instr_ids: Any, actions: Any,
                value_history: Any) -> Dict[str, np.ndarray]:
        """Scores a batch of (o_t, l, a_t, value history); numpy outputs.

        Args: ``observations`` dict (B, ...); ``instr_ids`` (B, L) or one (L,) broadcast;
          ``actions`` (B, A); ``value_history`` (B, K+1) (oldest first, V_t last).
        Returns dict of numpy arrays: network outputs (``h``, ``risk``, ``q1``, ``q2``, ``q``,
          and ``z_pred`` / ``v_now`` when their heads exist) and ``trigger_prob`` =
          sigmoid(risk) (B,) float32. Whether a row fires is the gate's rule
          (:func:`uniintervene_jax.gate.trigger_rule`, with tau from the learner's message).
        Raises: ValueError / TypeError for bad inputs.
        """
        obs, ids, act, vh, _ = self._inputs(observations, instr_ids, actions, value_history)
        out = {k: np.asarray(v) for k, v in _forward(self.net, self.state.params, obs, ids, act, vh).items()}
        out["trigger_prob"] = _sigmoid(out["risk"])
        return out

    def trigger_probs(self, observations: Mapping[str, Any], instr_ids: Any, actions: Any,
                      value_history: Any) -> np.ndarray:
        """``sigmoid(risk)`` float32 ``(B,)`` alone: :meth:`predict`'s ``trigger_prob`` without
        the other heads (the gate's per-decision call). Inputs and errors as :meth:`predict`."""
        obs, ids, act, vh, _ = self._inputs(observations, instr_ids, actions, value_history)
        return _sigmoid(_risk_only(self.net, self.state.params, obs, ids, act, vh))

    # -------------------------------------------------------------- persistence
    def save(self, directory: str, extra: Optional[Dict[str, Any]] = None) -> str:
        """Writes the model folder (``model.json`` + ``params.msgpack``, kind
        ``"intervention_model"``); the optimiser state is not saved. Returns the folder."""
        cfg = {
            "config": json.loads(self.config_json),
            "obs_spec": model_io.obs_spec_to_json(self.obs_spec),
            "action_dim": self.action_dim,
            "target_dim": self.target_dim,
            "instr_len": self.instr_len,
        }
        extra = dict(extra or {})
        extra.setdefault("train_steps", int(self.state.step))
        return model_io.save_model(directory, MODEL_KIND, cfg, self.state.params, extra)

    @staticmethod
    def saved_trigger_threshold(directory: str) -> Optional[float]:
        """The calibrated trigger threshold stored in the folder's ``model.json`` extra
        ``trigger_threshold`` (the offline pipeline's held-out best-F1 threshold,
        :func:`uniintervene_jax.gate.threshold_sweep`), or None when the folder has none.
        Raises FileNotFoundError / ValueError as ``io.load_model``, ValueError for a stored
        value outside (0, 1)."""
        with open(os.path.join(directory, "model.json")) as f:
            extra = json.load(f).get("extra", {})
        tau = extra.get("trigger_threshold")
        if tau is None:
            return None
        if not 0.0 < float(tau) < 1.0:
            raise ValueError(f"{directory}: trigger_threshold {tau} outside (0, 1)")
        return float(tau)

    @classmethod
    def load(cls, directory: str) -> "InterventionModel":
        """Rebuilds the network from the folder's config and loads its parameters (fresh Adam
        state, step restored). Folders written before the trigger moved to the gate carry
        ``LEGACY_FIELDS`` in their config; they are ignored. Raises FileNotFoundError / ValueError (see ``io.load_model``),
        ValueError when the params do not fit the rebuilt network."""
        saved, params, extra = model_io.load_model(directory, MODEL_KIND)
        example = model_io.example_from_spec(model_io.obs_spec_from_json(saved["obs_spec"]))
        config = {k: v for k, v in saved["config"].items() if k not in LEGACY_FIELDS}
        model = cls.create(jax.random.PRNGKey(0), example, saved["action_dim"], saved["target_dim"],
                           config, saved["instr_len"])
        # The saved params must fit the network rebuilt from the folder's config.
        params = model_io.params_like(params, model.state.params, f"{directory} params")
        state = train_state.TrainState.create(apply_fn=None, params=params, tx=_make_tx(model.config))
        state = state.replace(step=jnp.asarray(int(extra.get("train_steps", 0)), jnp.int32))
        return model.replace(state=state)
