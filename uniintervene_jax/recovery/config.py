"""Config of the goal-conditioned recovery policy: :func:`get_default_config` (every field
documented inline) and :func:`resolve_config` (defaults overridden, typo guard, validated).
``horizon`` (H, the chunk length) is its one home: the gate's chunks, the training pairs and the
FAST tokenizer all read it from here. DESIGN section 4 "Recovery policy", "FAST tokenizer".
"""

from __future__ import annotations

from typing import Any

import ml_collections

from serl_ext.agents.common import encoder_config

HEADS = ("token", "continuous")


def get_default_config() -> ml_collections.ConfigDict:
    """Default recovery-policy config (every field documented inline)."""
    c = ml_collections.ConfigDict()
    # "token" (FAST tokens + transformer decoder, the official head) or "continuous" (MLP chunk).
    c.head = "token"
    # Chunk length H (paper 8).
    c.horizon = 8
    # Observation encoder shared by the current and the goal observation (serl_ext encoder config).
    c.encoder = encoder_config()
    c.encoder.augmentation = "none"
    # Instruction token vocabulary (must match tokenize_instruction's) and embedding width.
    c.instruction_vocab_size = 512
    c.instruction_dim = 32
    # Conditioning MLP on [z_obs, z_goal, z_goal - z_obs, z_instruction]; its last width is c's.
    c.cond_hidden_dims = (256, 256)
    # Token head: transformer width, depth, heads, MLP expansion, number of prefix vectors,
    # maximum target length (tokens + EOS; longer chunks raise ValueError at training).
    c.embed_dim = 256
    c.num_layers = 4
    c.num_heads = 4
    c.mlp_ratio = 4
    c.num_prefix_tokens = 4
    c.max_tokens = 64
    c.dropout_rate = 0.0
    # FAST tokenizer (fitted on the training chunks by train_recovery_policy).
    c.fast = ml_collections.ConfigDict({"scale": 10.0, "vocab_size": 1024, "min_frequency": 2})
    # Continuous head: hidden widths of the chunk MLP.
    c.chunk_hidden_dims = (256, 256)
    # Optimiser: Adam with global-norm gradient clipping.
    c.learning_rate = 3e-4
    c.grad_clip_norm = 1.0
    return c


def resolve_config(config: Any = None) -> ml_collections.ConfigDict:
    """:func:`get_default_config` overridden by ``config`` (ConfigDict or dict; nested ``encoder`` /
    ``fast`` merged field by field), validated.

    Raises ValueError for an unknown field, an unknown head or an out-of-range number.
    """
    c = _merge(config)
    _validate_config(c)
    return c


def _merge(config: Any) -> ml_collections.ConfigDict:
    defaults = get_default_config().to_dict()
    given = {} if config is None else (config.to_dict() if hasattr(config, "to_dict") else dict(config))

    from serl_ext.config_merge import merge_nested

    return ml_collections.ConfigDict(merge_nested(defaults, given, unknown="error", name="recovery-policy config"))


def _validate_config(c: ml_collections.ConfigDict) -> None:
    if c.head not in HEADS:
        raise ValueError(f"config.head must be one of {HEADS}, got {c.head!r}")
    for name in ("horizon", "embed_dim", "num_layers", "num_heads", "mlp_ratio", "num_prefix_tokens",
                 "max_tokens", "instruction_vocab_size", "instruction_dim"):
        if int(c[name]) < 1:
            raise ValueError(f"config.{name} must be >= 1, got {c[name]}")
    if int(c.embed_dim) % int(c.num_heads) != 0:
        raise ValueError(f"config.embed_dim {c.embed_dim} must be divisible by num_heads {c.num_heads}")
    if len(c.cond_hidden_dims) < 1:
        raise ValueError("config.cond_hidden_dims must have at least one width")
