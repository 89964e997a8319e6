"""Task instructions and their token ids.

The paper conditions every model on a language instruction ``l``. Meta-World has none, so each
stand-in task gets a fixed English instruction (any other task: the words of its name); it is tokenised by hashing lower-cased words
into ``vocab_size`` buckets (CRC-32, deterministic across processes and machines), so models
can condition on it without a pretrained language model or any download. A learned embedding
of these ids (:class:`InstructionEncoder`) is the instruction part of the encoders.
"""

import re
import zlib
from typing import Dict

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

TASK_INSTRUCTIONS: Dict[str, str] = {
    "pick-place": "pick up the object and place it at the goal",
    "peg-insert-side": "insert the peg into the hole from the side",
    "assembly": "pick up the ring and put it onto the peg",
    "sweep-into": "sweep the puck into the hole",
    "box-close": "pick up the lid and close the box",
}

PAD_ID = 0


def instruction_for(task: str) -> str:
    """The instruction of a task: the stand-in tasks' fixed English sentence, else the words of
    the task's name (``"drawer-open-v3"`` -> ``"drawer open"``, ``"gym:Pendulum-v1"`` ->
    ``"pendulum"``; a ``gym:MODULE:ENV_ID`` kind uses ``ENV_ID``), so any task the loop runs can
    be conditioned on.

    Args:
      task: the config's task name (short, ``-v3`` or a ``gym:`` kind).
    Returns:
      the instruction (str, lower case).
    Raises:
      ValueError: a name with no letters or digits at all (nothing to say).
    """
    name = task[:-3] if task.endswith("-v3") else task
    if name in TASK_INSTRUCTIONS:
        return TASK_INSTRUCTIONS[name]
    env_id = name.split(":")[-1] if name.startswith("gym:") else name
    env_id = re.sub(r"-v\d+$", "", env_id)  # the version is not part of what to do
    words = re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", env_id).lower())
    if not words:
        raise ValueError(f"task name {task!r} has no words to make an instruction from")
    return " ".join(words)


def tokenize_instruction(text: str, vocab_size: int = 512, max_len: int = 16) -> np.ndarray:
    """Hashes the words of ``text`` to ids in ``[1, vocab_size)``; 0 is padding.

    Returns:
      int32 array of shape ``(max_len,)`` (truncated or zero-padded).
    Raises:
      ValueError: ``vocab_size < 2`` or ``max_len < 1``.
    """
    if vocab_size < 2 or max_len < 1:
        raise ValueError(f"need vocab_size >= 2 and max_len >= 1, got {vocab_size}, {max_len}")
    words = re.findall(r"[a-z0-9]+", text.lower())[:max_len]
    ids = np.zeros((max_len,), np.int32)
    for i, word in enumerate(words):
        ids[i] = 1 + zlib.crc32(word.encode("utf-8")) % (vocab_size - 1)
    return ids


class InstructionEncoder(nn.Module):
    """Embeds token ids ``(..., L)`` int32 and mean-pools the non-padding ones -> ``(..., D)``."""

    vocab_size: int = 512
    features: int = 32

    @nn.compact
    def __call__(self, token_ids: jnp.ndarray) -> jnp.ndarray:
        emb = nn.Embed(self.vocab_size, self.features)(token_ids)
        mask = (token_ids != PAD_ID)[..., None].astype(emb.dtype)
        return (emb * mask).sum(-2) / jnp.maximum(mask.sum(-2), 1.0)
