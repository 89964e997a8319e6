"""Training of the intervention model: config, model state, dataset, training loop.

* :func:`get_default_config` -- every field documented.
* :class:`InterventionModel` -- immutable ``flax.struct.PyTreeNode`` (one TrainState + the
  static network definition and config); ``update(batch) -> (new_model, info)`` is jitted;
  ``predict`` returns numpy; ``save`` / ``load`` go through :mod:`uniintervene_jax.io` so a
  model reloads from its folder without the training code.
* :class:`InterventionDataset` -- per-step arrays (N, ...) with optional balanced sampling.
* :func:`build_dataset` -- assembles a dataset from episodes plus per-episode proxy values,
  stagnation labels and TVR targets (computed elsewhere: ``value/``, ``intervention/mining``,
  ``intervention/tvr``) and a frozen target encoder.
* :func:`train_intervention_model` -- the loop.

Value history convention (here and in :func:`build_dataset`): row t is
``[V_{t-K}, ..., V_{t-1}, V_t]`` (oldest first, ``K = config.history_len``), indices below 0
padded with ``V_0``; the K deltas ``dV`` are computed inside the network
(:class:`~uniintervene_jax.intervention.model.ValueHistoryEncoder`), so the dataset stores
only the ``(N, K+1)`` values.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import flax.struct as struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from serl_ext.agents.common import ObsSpec, check_observations, make_obs_spec
from uniintervene_jax import io as model_io
from uniintervene_jax.instructions import instruction_for, tokenize_instruction
from uniintervene_jax.intervention.losses import intervention_loss
from uniintervene_jax.intervention.model import BACKBONES, InterventionNet

MODEL_KIND = "intervention_model"


# ------------------------------------------------------------------ config
def get_default_config() -> ml_collections.ConfigDict:
    """Default config of the intervention model (DESIGN section 4 numbers where they exist)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    m = ml_collections.ConfigDict()
    # "mlp": obs["state"] vectors; "cnn": uint8 images of model.image_keys through a small CNN
    # (plus obs["state"] when present). Both train from scratch.
    m.backbone = "mlp"
    # Backbone MLP widths; H = hidden_dims[-1] (the future head is H -> 4H -> D).
    m.hidden_dims = (256, 256)
    # Camera keys for the "cnn" backbone, e.g. ("pixels",).
    m.image_keys = ()
    # Per-camera latent width and channel widths of the small CNN (stride 2 each).
    m.cnn_latent_dim = 64
    m.cnn_widths = (16, 32, 32)
    m.num_spatial_features = 8
    # InstructionEncoder sizes (ids from uniintervene_jax.instructions.tokenize_instruction).
    m.instr_vocab_size = 512
    m.instr_dim = 32
    # Hidden widths of the Q, current-value and risk heads.
    m.head_hidden_dims = (256,)
    # Value-history encoder: MLP over [V_{t-K..t}, delta_scale * dV] -> history_dim (32, DESIGN).
    m.history_hidden_dims = (64,)
    m.history_dim = 32
    m.history_delta_scale = 10.0
    m.use_layer_norm = True
    c.model = m
    # K: value-history window (TVR uses K = 8, DESIGN section 4); value_history is (N, K+1).
    c.history_len = 8
    # Ablations (paper table): no future prediction / no value prediction / no TVR regression.
    c.use_future = True
    c.use_value = True
    c.use_tvr = True
    # Carried for the recovery side (memory-goal ablation); unused by this model.
    c.use_memory_goal = True
    # With use_tvr=False the trigger is a plain value threshold: fire when the predicted
    # value (min Q with use_value, else the last history value V_t) is below this.
    c.value_threshold = 0.3
    # Trigger when sigmoid(risk) >= tau_int (DESIGN section 4).
    c.tau_int = 0.5
    # Loss weights (all 1, DESIGN section 4) and loss parameters.
    c.future_weight = 1.0
    c.q_weight = 1.0
    c.value_weight = 1.0
    c.tvr_weight = 1.0
    c.focal_weight = 1.0
    c.focal_alpha = 0.75
    c.focal_gamma = 2.0
    c.smooth_l1_beta = 1.0
    # Optimiser: Adam, global-norm gradient clipping (<= 0 disables).
    c.learning_rate = 3e-4
    c.grad_clip = 1.0
    # Training batches; balanced: positive_fraction of each batch from positive labels when
    # the dataset has any (the rest from negatives), else uniform.
    c.batch_size = 256
    c.balanced_sampling = True
    c.positive_fraction = 0.5
    # Log (and keep in the returned history) every log_every steps.
    c.log_every = 100
    return c


def _to_tuples(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_tuples(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_to_tuples(v) for v in x)
    return x


def resolve_config(config: Any = None) -> ml_collections.ConfigDict:
    """Defaults overridden by ``config`` (ConfigDict or dict, nested ``model``).

    Raises: ValueError for a key the defaults lack (typo guard), an unknown backbone, a cnn
      backbone without image keys, or out-of-range numbers; TypeError for a non-mapping.
    """
    base = get_default_config().to_dict()
    if config is None:
        config = {}
    if isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a ConfigDict or dict, got {type(config).__name__}")

    from serl_ext.config_merge import merge_nested

    cfg = ml_collections.ConfigDict(_to_tuples(merge_nested(base, _to_tuples(dict(config)), unknown="error",
                                                            name="intervention config")))
    if cfg.model.backbone not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {BACKBONES}, got {cfg.model.backbone!r}")
    if cfg.model.backbone == "cnn" and not cfg.model.image_keys:
        raise ValueError("model.backbone='cnn' needs model.image_keys")
    if int(cfg.history_len) < 1:
        raise ValueError(f"history_len must be >= 1, got {cfg.history_len}")
    if not 0.0 < float(cfg.tau_int) < 1.0:
        raise ValueError(f"tau_int must be in (0, 1), got {cfg.tau_int}")
    if not 0.0 <= float(cfg.positive_fraction) <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {cfg.positive_fraction}")
    if int(cfg.batch_size) < 1 or float(cfg.learning_rate) <= 0:
        raise ValueError("batch_size must be >= 1 and learning_rate > 0")
    return cfg


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
        use_value=bool(config.use_value), use_layer_norm=bool(m.use_layer_norm))


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


def _finite(name: str, arr: np.ndarray) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")


# ------------------------------------------------------------------ model
@functools.partial(jax.jit, static_argnums=0)
def _init_params(net: InterventionNet, rng, observations, instr_ids, actions, value_history):
    # jitted (one compile per network definition, cached across models) instead of the much
    # slower op-by-op initialisation.
    return net.init(rng, observations, instr_ids, actions, value_history)["params"]


@functools.partial(jax.jit, static_argnums=0)
def _forward(net: InterventionNet, params, observations, instr_ids, actions, value_history):
    return net.apply({"params": params}, observations, instr_ids, actions, value_history)


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
            :func:`get_default_config`. instr_len: L of the instruction ids.
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
        obs = check_observations(observations, self.obs_spec, (b,), "observations")
        for k, v in obs.items():
            _finite(f"observations[{k!r}]", np.asarray(v))
        ids = np.asarray(instr_ids)
        if ids.ndim == 1:
            ids = np.broadcast_to(ids, (b, ids.shape[0]))
        if ids.shape != (b, self.instr_len) or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"instr_ids must be int (B={b}, L={self.instr_len}) or (L,), got {ids.dtype} {ids.shape}")
        act = np.asarray(actions, np.float32)
        if act.shape != (b, self.action_dim):
            raise ValueError(f"actions must be (B={b}, A={self.action_dim}), got {act.shape}")
        _finite("actions", act)
        k1 = int(json.loads(self.config_json)["history_len"]) + 1
        vh = np.asarray(value_history, np.float32)
        if vh.shape != (b, k1):
            raise ValueError(f"value_history must be (B={b}, K+1={k1}), got {vh.shape}")
        _finite("value_history", vh)
        return obs, jnp.asarray(ids, jnp.int32), jnp.asarray(act), jnp.asarray(vh), b

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
        scalars = ["labels"]
        if cfg["use_value"]:
            scalars += ["values_now", "values_next"]
        if cfg["use_tvr"]:
            scalars.append("tvr")
        for key in scalars:
            if key not in batch:
                raise ValueError(f"batch has no key {key!r} (needed by this config); keys: {sorted(batch)}")
            arr = np.asarray(batch[key], np.float32)
            if arr.shape != (b,):
                raise ValueError(f"batch[{key!r}] must be ({b},), got {arr.shape}")
            _finite(f"batch[{key!r}]", arr)
            out[key] = jnp.asarray(arr)
        if cfg["use_future"]:
            if "target_latents_next" not in batch:
                raise ValueError("batch has no key 'target_latents_next' (needed with use_future)")
            z = np.asarray(batch["target_latents_next"], np.float32)
            if z.shape != (b, self.target_dim):
                raise ValueError(f"batch['target_latents_next'] must be ({b}, {self.target_dim}), got {z.shape}")
            _finite("batch['target_latents_next']", z)
            out["target_latents_next"] = jnp.asarray(z)
        return out

    # -------------------------------------------------------------- training / inference
    def update(self, batch: Mapping[str, Any]) -> Tuple["InterventionModel", Dict[str, jax.Array]]:
        """One Adam step on :func:`~uniintervene_jax.intervention.losses.intervention_loss`.

        ``batch``: ``observations`` dict (B, ...), ``instr_ids`` (B, L) int, ``actions``
        (B, A), ``value_history`` (B, K+1), ``labels`` (B,) bool, plus ``values_now``,
        ``values_next`` (use_value), ``tvr`` (use_tvr), ``target_latents_next`` (B, D)
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
        Returns dict of numpy arrays: network outputs (``h``, ``risk``, and ``z_pred`` /
          ``q1``, ``q2``, ``q``, ``v_now`` when their heads exist), ``trigger_prob`` =
          sigmoid(risk) (B,) float32, ``risk_trigger`` = trigger_prob >= tau_int (B,) bool,
          ``value_trigger`` = (q if use_value else V_t) < value_threshold (B,) bool, and
          ``trigger`` = risk_trigger, or value_trigger when ``use_tvr=False`` (the plain
          value-threshold gate of the w/o-TVR ablation).
        Raises: ValueError / TypeError for bad inputs.
        """
        obs, ids, act, vh, _ = self._inputs(observations, instr_ids, actions, value_history)
        out = {k: np.asarray(v) for k, v in _forward(self.net, self.state.params, obs, ids, act, vh).items()}
        cfg = json.loads(self.config_json)
        prob = (1.0 / (1.0 + np.exp(-out["risk"].astype(np.float64)))).astype(np.float32)
        out["trigger_prob"] = prob
        out["risk_trigger"] = prob >= float(cfg["tau_int"])
        value = out["q"] if "q" in out else np.asarray(vh)[:, -1]
        out["value_trigger"] = value < float(cfg["value_threshold"])
        out["trigger"] = out["risk_trigger"] if cfg["use_tvr"] else out["value_trigger"]
        return out

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

    @classmethod
    def load(cls, directory: str) -> "InterventionModel":
        """Rebuilds the network from the folder's config and loads its parameters (fresh Adam
        state, step restored). Raises FileNotFoundError / ValueError (see ``io.load_model``),
        ValueError when the params do not fit the rebuilt network."""
        saved, params, extra = model_io.load_model(directory, MODEL_KIND)
        example = model_io.example_from_spec(model_io.obs_spec_from_json(saved["obs_spec"]))
        model = cls.create(jax.random.PRNGKey(0), example, saved["action_dim"], saved["target_dim"],
                           saved["config"], saved["instr_len"])
        # The saved params must fit the network rebuilt from the folder's config.
        params = model_io.params_like(params, model.state.params, f"{directory} params")
        state = train_state.TrainState.create(apply_fn=None, params=params, tx=_make_tx(model.config))
        state = state.replace(step=jnp.asarray(int(extra.get("train_steps", 0)), jnp.int32))
        return model.replace(state=state)


# ------------------------------------------------------------------ dataset
@dataclasses.dataclass
class InterventionDataset:
    """Per-step training arrays, N samples (row i = step ``t[i]`` of episode ``episode_index[i]``).

    Fields: ``observations`` dict key -> (N, ...) (o_t); ``next_observations`` dict (N, ...)
    (o_{t+1}) or None; ``instr_ids`` int32 (N, L); ``actions`` float32 (N, A) (a_t, the
    executed action); ``values_now`` float32 (N,) proxy V_t; ``values_next`` (N,) V(t+1);
    ``value_history`` float32 (N, K+1) ``[V_{t-K}, ..., V_t]`` (module docstring);
    ``tvr`` (N,) TVR target; ``labels`` bool (N,) stagnation label;
    ``target_latents_next`` float32 (N, D) frozen-encoder latent of o_{t+1};
    ``episode_index`` int (N,); ``t`` int (N,); ``interventions`` bool (N,) (operator acted
    at t; zeros when unknown); ``episode_success`` bool (N,) or None (unknown).

    Raises ValueError on construction for N = 0, inconsistent lengths, NaN/inf.
    """

    observations: Dict[str, np.ndarray]
    instr_ids: np.ndarray
    actions: np.ndarray
    values_now: np.ndarray
    values_next: np.ndarray
    value_history: np.ndarray
    tvr: np.ndarray
    labels: np.ndarray
    target_latents_next: np.ndarray
    episode_index: np.ndarray
    t: np.ndarray
    next_observations: Optional[Dict[str, np.ndarray]] = None
    interventions: Optional[np.ndarray] = None
    episode_success: Optional[np.ndarray] = None

    def __post_init__(self):
        if not isinstance(self.observations, Mapping) or not self.observations:
            raise ValueError("observations must be a non-empty dict of (N, ...) arrays")
        self.observations = {k: np.asarray(v) for k, v in self.observations.items()}
        n = len(next(iter(self.observations.values())))
        if n == 0:
            raise ValueError("InterventionDataset is empty")
        self.instr_ids = np.asarray(self.instr_ids, np.int32)
        self.actions = np.asarray(self.actions, np.float32)
        self.value_history = np.asarray(self.value_history, np.float32)
        self.target_latents_next = np.asarray(self.target_latents_next, np.float32)
        for name in ("values_now", "values_next", "tvr"):
            setattr(self, name, np.asarray(getattr(self, name), np.float32))
        self.labels = np.asarray(self.labels).astype(bool)
        self.episode_index = np.asarray(self.episode_index, np.int64)
        self.t = np.asarray(self.t, np.int64)
        self.interventions = (np.zeros(n, bool) if self.interventions is None
                              else np.asarray(self.interventions).astype(bool))
        if self.episode_success is not None:
            self.episode_success = np.asarray(self.episode_success).astype(bool)
        for k, v in self.observations.items():
            if len(v) != n:
                raise ValueError(f"observations[{k!r}] has {len(v)} rows, expected {n}")
            _finite(f"observations[{k!r}]", v)
        if self.next_observations is not None:
            self.next_observations = {k: np.asarray(v) for k, v in self.next_observations.items()}
            if set(self.next_observations) != set(self.observations):
                raise ValueError("next_observations must have the keys of observations")
            for k, v in self.next_observations.items():
                if v.shape != self.observations[k].shape:
                    raise ValueError(f"next_observations[{k!r}] shape {v.shape} != {self.observations[k].shape}")
        for name, ndim in (("instr_ids", 2), ("actions", 2), ("value_history", 2), ("target_latents_next", 2),
                           ("values_now", 1), ("values_next", 1), ("tvr", 1), ("labels", 1),
                           ("episode_index", 1), ("t", 1), ("interventions", 1), ("episode_success", 1)):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.ndim != ndim or len(arr) != n:
                raise ValueError(f"{name} must have {ndim} dims and {n} rows, got shape {arr.shape}")
            _finite(name, arr)
        if self.value_history.shape[1] < 2:
            raise ValueError(f"value_history must be (N, K+1) with K >= 1, got {self.value_history.shape}")

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def history_len(self) -> int:
        """K (the value history holds K+1 values)."""
        return int(self.value_history.shape[1] - 1)

    @property
    def num_episodes(self) -> int:
        return int(len(np.unique(self.episode_index)))

    def subset(self, indices: Any) -> "InterventionDataset":
        """New dataset with rows ``indices`` (int array or bool mask). Raises ValueError if empty."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        if idx.size == 0:
            raise ValueError("subset is empty")
        kw = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                kw[f.name] = None
            elif isinstance(v, dict):
                kw[f.name] = {k: a[idx] for k, a in v.items()}
            else:
                kw[f.name] = v[idx]
        return InterventionDataset(**kw)

    def split_episodes(self, holdout_fraction: float = 0.2, seed: int = 0
                       ) -> Tuple["InterventionDataset", "InterventionDataset"]:
        """Splits by whole episodes: ``(train, held_out)``; at least one episode each.
        Raises ValueError with fewer than 2 episodes or a fraction outside (0, 1)."""
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        eps = np.unique(self.episode_index)
        if len(eps) < 2:
            raise ValueError("need at least 2 episodes to split")
        perm = np.random.default_rng(seed).permutation(eps)
        n_hold = min(max(1, int(round(holdout_fraction * len(eps)))), len(eps) - 1)
        held = np.isin(self.episode_index, perm[:n_hold])
        return self.subset(~held), self.subset(held)

    def batch(self, indices: Any) -> Dict[str, Any]:
        """Training batch dict for rows ``indices`` (keys of ``InterventionModel.update``)."""
        idx = np.asarray(indices)
        return {
            "observations": {k: v[idx] for k, v in self.observations.items()},
            "instr_ids": self.instr_ids[idx],
            "actions": self.actions[idx],
            "value_history": self.value_history[idx],
            "values_now": self.values_now[idx],
            "values_next": self.values_next[idx],
            "tvr": self.tvr[idx],
            "labels": self.labels[idx],
            "target_latents_next": self.target_latents_next[idx],
        }

    def sample_indices(self, rng: np.random.Generator, batch_size: int, balanced: bool = True,
                       positive_fraction: float = 0.5) -> np.ndarray:
        """``batch_size`` row indices drawn with replacement. ``balanced``: round(
        positive_fraction * batch_size) from positive labels and the rest from negatives when
        both classes exist; otherwise uniform over all rows."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pos = np.nonzero(self.labels)[0]
        neg = np.nonzero(~self.labels)[0]
        if balanced and len(pos) > 0 and len(neg) > 0:
            n_pos = int(round(positive_fraction * batch_size))
            idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, batch_size - n_pos)])
            return rng.permutation(idx)
        return rng.integers(0, len(self), batch_size)

    def sample(self, rng: np.random.Generator, batch_size: int, balanced: bool = True,
               positive_fraction: float = 0.5) -> Dict[str, Any]:
        """A training batch (see :meth:`sample_indices`, :meth:`batch`)."""
        return self.batch(self.sample_indices(rng, batch_size, balanced, positive_fraction))


def history_windows(values: np.ndarray, history_len: int) -> np.ndarray:
    """``(T,)`` values -> ``(T, K+1)`` rows ``[V_{t-K}, ..., V_t]``, indices < 0 padded with V_0.

    Raises ValueError for an empty or non-1-D input or ``history_len < 1``.
    """
    v = np.asarray(values, np.float32)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty (T,) array, got shape {v.shape}")
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    idx = np.arange(v.size)[:, None] + np.arange(-history_len, 1)[None, :]
    return v[np.clip(idx, 0, None)]


def build_dataset(episodes: Sequence[Any], values_per_episode: Sequence[Any], labels_per_episode: Sequence[Any],
                  tvr_per_episode: Sequence[Any], target_encoder: Any, instr_ids: Any = None,
                  history_len: int = 8, keep_next_observations: bool = True) -> InterventionDataset:
    """Assembles an :class:`InterventionDataset` from episodes and per-episode curves.

    Args:
      episodes: episode dicts (``serl_ext.data.episodes`` layout) or paths to episode files.
      values_per_episode: ``values_per_episode[i]`` (T_i+1,) proxy value of o_0..o_{T_i}.
      labels_per_episode: (T_i,) bool stagnation labels (e.g. ``mining.mine_stagnation``).
      tvr_per_episode: (T_i,) TVR targets (e.g. ``tvr.tvr_targets(values[:-1])``, same
        V_0-padding convention as :func:`history_windows`).
      target_encoder: a :class:`~.target_encoders.TargetEncoder`; encodes o_1..o_{T_i}.
      instr_ids: None (from each episode's ``metadata["task"]``), one (L,) array for all, or
        a sequence of (L,) arrays (one per episode).
      history_len: K (see :func:`history_windows` over V_0..V_{T_i-1}).
      keep_next_observations: also store o_{t+1} (doubles observation memory).
    Per-episode success: ``metadata["success"]`` when present, else the ``success`` extra
    at the last step, else unknown (``episode_success`` None when unknown for any episode).
    Raises ValueError: empty input, mismatched lengths/shapes, NaN, latents of wrong shape;
      KeyError: no task in the metadata with ``instr_ids=None``.
    """
    from serl_ext.data.episodes import load_episode  # local: keeps import time low

    n_ep = len(episodes)
    if n_ep == 0:
        raise ValueError("build_dataset: no episodes")
    for name, seq in (("values_per_episode", values_per_episode), ("labels_per_episode", labels_per_episode),
                      ("tvr_per_episode", tvr_per_episode)):
        if len(seq) != n_ep:
            raise ValueError(f"{name} has {len(seq)} entries for {n_ep} episodes")
    shared_ids = None
    if instr_ids is not None and np.ndim(instr_ids) == 1:
        shared_ids = np.asarray(instr_ids, np.int32)
    elif instr_ids is not None and len(instr_ids) != n_ep:
        raise ValueError(f"instr_ids has {len(instr_ids)} entries for {n_ep} episodes")

    cols: Dict[str, List[Any]] = {k: [] for k in ("instr_ids", "actions", "values_now", "values_next",
                                                  "value_history", "tvr", "labels", "target", "episode_index",
                                                  "t", "interventions", "success")}
    obs_cols: Dict[str, List[np.ndarray]] = {}
    next_cols: Dict[str, List[np.ndarray]] = {}
    success_known = True
    for i, ep in enumerate(episodes):
        if not isinstance(ep, Mapping):
            ep = load_episode(ep)
        actions = np.asarray(ep["actions"], np.float32)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"episode {i}: actions must be (T>=1, A), got {actions.shape}")
        T = len(actions)
        values = np.asarray(values_per_episode[i], np.float32)
        if values.shape != (T + 1,):
            raise ValueError(f"episode {i}: values must be (T+1={T + 1},), got {values.shape}")
        _finite(f"episode {i} values", values)
        labels = np.asarray(labels_per_episode[i])
        tvr = np.asarray(tvr_per_episode[i], np.float32)
        if labels.shape != (T,) or tvr.shape != (T,):
            raise ValueError(f"episode {i}: labels and tvr must be (T={T},), got {labels.shape}, {tvr.shape}")
        _finite(f"episode {i} tvr", tvr)
        obs = {k: np.asarray(v) for k, v in ep["observations"].items()}
        for k, v in obs.items():
            if len(v) != T + 1:
                raise ValueError(f"episode {i}: observations[{k!r}] has {len(v)} rows, expected T+1={T + 1}")
        if obs_cols and set(obs) != set(obs_cols):
            raise ValueError(f"episode {i}: observation keys {sorted(obs)} differ from {sorted(obs_cols)}")
        if shared_ids is not None:
            ids = shared_ids
        elif instr_ids is not None:
            ids = np.asarray(instr_ids[i], np.int32)
        else:
            task = (ep.get("metadata") or {}).get("task")
            if task is None:
                raise KeyError(f"episode {i}: metadata has no 'task'; pass instr_ids")
            ids = tokenize_instruction(instruction_for(task))
        ids_b = np.broadcast_to(ids, (T, ids.shape[-1]))
        nxt = {k: v[1:] for k, v in obs.items()}
        z = np.asarray(target_encoder.encode(nxt, ids_b), np.float32)
        if z.ndim != 2 or z.shape[0] != T:
            raise ValueError(f"episode {i}: target encoder returned shape {z.shape}, expected (T={T}, D)")
        for k, v in obs.items():
            obs_cols.setdefault(k, []).append(v[:-1])
            if keep_next_observations:
                next_cols.setdefault(k, []).append(v[1:])
        cols["instr_ids"].append(np.array(ids_b))
        cols["actions"].append(actions)
        cols["values_now"].append(values[:-1])
        cols["values_next"].append(values[1:])
        cols["value_history"].append(history_windows(values[:-1], history_len))
        cols["tvr"].append(tvr)
        cols["labels"].append(labels.astype(bool))
        cols["target"].append(z)
        cols["episode_index"].append(np.full(T, i, np.int64))
        cols["t"].append(np.arange(T, dtype=np.int64))
        cols["interventions"].append(np.asarray(ep.get("interventions", np.zeros(T, bool))).astype(bool))
        meta = ep.get("metadata") or {}
        if "success" in meta:
            succ = bool(meta["success"])
        elif "success" in ep:
            succ = bool(np.asarray(ep["success"])[-1])
        else:
            succ, success_known = False, False
        cols["success"].append(np.full(T, succ))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return InterventionDataset(
        observations={k: np.concatenate(v) for k, v in obs_cols.items()},
        next_observations={k: np.concatenate(v) for k, v in next_cols.items()} if keep_next_observations else None,
        instr_ids=cat["instr_ids"], actions=cat["actions"], values_now=cat["values_now"],
        values_next=cat["values_next"], value_history=cat["value_history"], tvr=cat["tvr"],
        labels=cat["labels"], target_latents_next=cat["target"], episode_index=cat["episode_index"],
        t=cat["t"], interventions=cat["interventions"],
        episode_success=cat["success"] if success_known else None)


# ------------------------------------------------------------------ training loop
def train_intervention_model(dataset: InterventionDataset, config: Any = None, steps: int = 1000,
                             progress_bar: bool = True, model: Optional[InterventionModel] = None
                             ) -> Tuple[InterventionModel, List[Dict[str, float]]]:
    """Trains (or continues training ``model``) for ``steps`` Adam steps.

    Batches of ``config.batch_size`` are sampled with replacement from ``dataset``
    (balanced per ``config.balanced_sampling`` / ``positive_fraction``; numpy generator
    seeded with ``config.seed``). A new model is created from ``dataset``'s first row (the
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
        batch = dataset.sample(rng, int(cfg.batch_size), bool(cfg.balanced_sampling), float(cfg.positive_fraction))
        model, info = model.update(batch)
        if step % log_every == 0 or step == steps:
            row = {"step": step, **{k: float(v) for k, v in info.items()}}
            history.append(row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}")
    return model, history
