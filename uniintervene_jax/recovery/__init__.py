"""Goal-conditioned recovery policy and the FAST action tokenizer (DESIGN section 4
"Recovery policy", "FAST tokenizer")."""

from uniintervene_jax.recovery.fast import (
    FASTDecodeError,
    FASTTokenizer,
    dct_coefficients,
    fit_fast_tokenizer,
    inverse_dct,
    roundtrip_error_bound,
)
from uniintervene_jax.recovery.model import RecoveryPolicy, get_default_config
from uniintervene_jax.recovery.train import recovery_training_pairs, train_recovery_policy

__all__ = [
    "FASTDecodeError",
    "FASTTokenizer",
    "RecoveryPolicy",
    "dct_coefficients",
    "fit_fast_tokenizer",
    "get_default_config",
    "inverse_dct",
    "recovery_training_pairs",
    "roundtrip_error_bound",
    "train_recovery_policy",
]
