"""Recovery memory: mining (value-rise windows of successful episodes), a faiss-indexed store
with cosine retrieval, persistence and an audit. DESIGN section 4 "Recovery memory"."""

from uniintervene_jax.labels import check_value_curve, episode_succeeded  # (their home: uniintervene_jax.labels)
from uniintervene_jax.memory.audit import memory_audit
from uniintervene_jax.memory.memory import (
    MemoryConfig,
    MemoryFormatError,
    RecoveryMemory,
    RetrievedGoal,
    l2_normalize,
)
from uniintervene_jax.memory.mining import (
    DEFAULT_MINING,
    FOLD_TOWEL_MINING,
    MINING_PRESETS,
    Candidate,
    MiningConfig,
    RecoveryItems,
    candidate_windows,
    mine_online_memory,
    mine_recovery_items,
    mining_preset,
    normalize_task,
    select_windows,
)

__all__ = [
    "DEFAULT_MINING",
    "FOLD_TOWEL_MINING",
    "MINING_PRESETS",
    "Candidate",
    "MemoryConfig",
    "MemoryFormatError",
    "MiningConfig",
    "RecoveryItems",
    "RecoveryMemory",
    "RetrievedGoal",
    "candidate_windows",
    "check_value_curve",
    "episode_succeeded",
    "l2_normalize",
    "memory_audit",
    "mine_online_memory",
    "mine_recovery_items",
    "mining_preset",
    "normalize_task",
    "select_windows",
]
