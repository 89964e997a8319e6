"""Goal-conditioned recovery policy and the FAST action tokenizer (DESIGN section 4
"Recovery policy", "FAST tokenizer").

Modules: ``network`` (condition encoder, token decoder, chunk head), ``losses`` (token
cross-entropy, chunk MSE), ``model`` (:class:`RecoveryPolicy`: update, predict_chunk,
save/load), ``dataset`` (training pairs, batches, online pairs, retrieved goals), ``config``
(defaults, resolve), ``train`` (the loop), ``fast`` (the FAST tokenizer).
"""

from uniintervene_jax.recovery.config import get_default_config, resolve_config
from uniintervene_jax.recovery.dataset import (
    online_recovery_pairs,
    recovery_batch_indices,
    recovery_training_pairs,
    retrieved_goals,
    take_pairs,
)
from uniintervene_jax.recovery.fast import (
    FASTDecodeError,
    FASTTokenizer,
    dct_coefficients,
    fit_fast_tokenizer,
    inverse_dct,
    roundtrip_error_bound,
)
from uniintervene_jax.recovery.losses import chunk_loss, token_loss
from uniintervene_jax.recovery.model import RecoveryPolicy
from uniintervene_jax.recovery.train import train_recovery_policy

__all__ = [
    "FASTDecodeError",
    "FASTTokenizer",
    "RecoveryPolicy",
    "chunk_loss",
    "dct_coefficients",
    "fit_fast_tokenizer",
    "get_default_config",
    "inverse_dct",
    "online_recovery_pairs",
    "recovery_batch_indices",
    "recovery_training_pairs",
    "resolve_config",
    "retrieved_goals",
    "roundtrip_error_bound",
    "take_pairs",
    "token_loss",
    "train_recovery_policy",
]
