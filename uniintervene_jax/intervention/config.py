"""Config of the intervention model: :func:`get_default_config` (every field documented, DESIGN
section 4 numbers where they exist) and :func:`resolve_config` (defaults overridden, typo guard,
validated). ``history_len`` (K) is the one home of the value-history window: the gate, the
value-history rows of the dataset and the TVR window all read it from here.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from uniintervene_jax.intervention.network import BACKBONES

# Fields older model folders (model.json) still carry; the trigger threshold and the value
# threshold moved to the gate (gate.get_trigger_config), use_memory_goal to config.uniintervene.
LEGACY_FIELDS = ("tau_int", "value_threshold", "use_memory_goal")


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
    # The trigger rule and its threshold tau (and the w/o-TVR ablation's value threshold) are
    # the gate's (uniintervene_jax/gate.py: get_trigger_config, trigger_rule), not the model's.
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
    if not 0.0 <= float(cfg.positive_fraction) <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {cfg.positive_fraction}")
    if int(cfg.batch_size) < 1 or float(cfg.learning_rate) <= 0:
        raise ValueError("batch_size must be >= 1 and learning_rate > 0")
    return cfg
