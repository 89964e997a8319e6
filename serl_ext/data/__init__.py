"""Replay buffers (shared frame store, RLPD mixing) and episode files."""

from serl_ext.data.episodes import (
    FORMAT_VERSION,
    EpisodeFormatError,
    EpisodeRecorder,
    EpisodeWriter,
    episode_from_transitions,
    episode_to_transitions,
    list_episodes,
    load_episode,
    load_episodes_into_buffer,
    save_episode,
    validate_episode,
)
from serl_ext.data.replay_buffer import (
    ACTION_SOURCE_HUMAN,
    ACTION_SOURCE_POLICY,
    ACTION_SOURCE_RECOVERY,
    ReplayBuffer,
    observation_spec_from_example,
    sample_mixed,
    sample_mixed_many,
)

__all__ = [
    "ACTION_SOURCE_HUMAN",
    "ACTION_SOURCE_POLICY",
    "ACTION_SOURCE_RECOVERY",
    "FORMAT_VERSION",
    "EpisodeFormatError",
    "EpisodeRecorder",
    "EpisodeWriter",
    "ReplayBuffer",
    "episode_from_transitions",
    "episode_to_transitions",
    "list_episodes",
    "load_episode",
    "load_episodes_into_buffer",
    "observation_spec_from_example",
    "sample_mixed",
    "sample_mixed_many",
    "save_episode",
    "validate_episode",
]
