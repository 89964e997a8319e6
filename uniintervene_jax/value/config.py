"""Config of the proxy value function: :func:`get_default_config` (every field commented) and
:func:`resolve_config` (defaults overridden, validated). DESIGN.md section 4, the official
offline code's numbers."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import ml_collections

from serl_ext.agents import common


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
