"""Config of the intervention model: :func:`get_default_config` (every field documented, DESIGN
section 4 numbers where they exist) and :func:`resolve_config` (defaults overridden, typo guard,
validated). ``history_len`` (K) is the one home of the value-history window: the gate, the
value-history rows of the dataset and the TVR window all read it from here.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from uniintervene_jax.intervention.network import BACKBONES, HEAD_TYPES

# Fields older model folders (model.json) still carry; the trigger threshold and the value
# threshold moved to the gate (gate.get_trigger_config), use_memory_goal to config.uniintervene;
# use_value / use_tvr were replaced by use_value_cond / head_type (issue 13), balanced
# sampling / positive_fraction by natural-frequency batches.
LEGACY_FIELDS = ("tau_int", "value_threshold", "use_memory_goal", "use_value", "use_tvr", "balanced_sampling",
                 "positive_fraction")


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
    # Trigger head (official head_type, DESIGN section 4):
    #   "tvr_history" (default, the paper's configuration, configs/vq1/full_tvr_history.yaml):
    #     value-history encoder over [V_{t-K..t}, dV] + one risk scalar on [z, history
    #     embedding (, stop_grad(Q_min))], regressed to the TVR target (smooth-L1) and used as
    #     the focal logit of the stagnation label; a current-value head on h_t (smooth-L1 to V_t).
    #   "binary" (the official argparse default): a separate focal head, MLP in -> 4 in -> 1, on
    #     [z (, stop_grad(Q_min))]; no TVR target, no value history, no current-value head.
    #     This is also the paper's w/o-temporal-value-risk ablation (a learned trigger head
    #     without the TVR target and the value history).
    c.head_type = "tvr_history"
    # Ablations (paper table): use_future=False -> w/o future prediction (no future head and no
    # future loss; the Q and trigger heads read h_t, official variant "no_future");
    # use_value_cond=False -> w/o value prediction (the trigger head gets no stop_grad(Q_min);
    # the Q head is still trained, official variant "no_value_cond"). The official
    # tvr_history risk head reads [z, history] only; here it also reads Q_min when
    # use_value_cond, so that the value-conditioning ablation changes the paper's
    # configuration too.
    c.use_future = True
    c.use_value_cond = True
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
    # Training batches, drawn uniformly over the decision rows (natural class frequency, as the
    # official code; the focal alpha 0.75 is the only class weighting). Decision rows: steps
    # t >= history_len, whose value history holds K real steps (the gate makes no decision
    # before that, uniintervene_jax/gate.py).
    c.batch_size = 256
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

    Raises: ValueError for a key the defaults lack (typo guard), an unknown backbone or head_type, a cnn
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
    if cfg.head_type not in HEAD_TYPES:
        raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {cfg.head_type!r}")
    if cfg.model.backbone == "cnn" and not cfg.model.image_keys:
        raise ValueError("model.backbone='cnn' needs model.image_keys")
    if int(cfg.history_len) < 1:
        raise ValueError(f"history_len must be >= 1, got {cfg.history_len}")
    if int(cfg.batch_size) < 1 or float(cfg.learning_rate) <= 0:
        raise ValueError("batch_size must be >= 1 and learning_rate > 0")
    return cfg
