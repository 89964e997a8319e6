"""Networks of the goal-conditioned recovery policy: (observation, retrieved goal, instruction) -> action chunk.

DESIGN section 4 "Recovery policy" (guide "Step 6: Train the Recovery Policy"): the policy does
not replay the memory's actions; it learns to reach the retrieved goal. Input: the current
observation ``o_t``, the goal observation ``g`` (from :class:`~uniintervene_jax.memory.RecoveryMemory`)
and the instruction ids ``l`` (:mod:`uniintervene_jax.instructions`); output: a chunk of
``H = 8`` actions in ``[-1, 1]``.

Conditioning (both heads): one shared observation encoder (``serl_ext`` :class:`ObservationEncoder`:
state, small CNN or ResNet-10) embeds ``o_t`` and ``g``; with the instruction embedding the
vector ``[z_o, z_g, z_g - z_o, z_l]`` goes through an MLP (LayerNorm, ReLU) -> ``c``.

Heads (``config.head``):

* ``"token"`` (the official recovery head): FAST tokens (:mod:`.fast`) predicted by a small
  causal transformer decoder (pre-LN blocks, GELU MLP, learned positions). The sequence is
  ``[prefix_1..prefix_P, BOS, t_1, ..., t_n]`` where the P prefix vectors are a linear map of ``c``;
  the output at ``BOS, t_1, ...`` predicts ``t_1, ..., t_n, EOS``. Ids: the BPE ids
  ``[0, V)``, then ``PAD = V``, ``EOS = V + 1``, ``BOS = V + 2``. Loss: cross-entropy with PAD
  targets masked. Inference: greedy decoding for ``max_tokens`` steps (PAD and BOS never
  chosen), cut at the first EOS, FAST-decode to ``(H, A)``; **when no EOS is produced or the tokens
  do not decode to (H, A), the chunk is all zeros and ``decode_failed`` is True** (the gate can
  then fall back to the base policy or the human).
* ``"continuous"``: an MLP on ``c`` regressing the flattened chunk, ``tanh``-bounded, MSE loss.

Training targets must lie in ``[-1, 1]`` (normalised actions); ValueError otherwise. Losses:
:mod:`.losses`; the policy (update, decoding, save/load): :mod:`.model`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from serl_ext.agents.common import make_encoder_def
from serl_ext.networks.encoders import ObservationEncoder
from serl_ext.networks.mlp import MLP
from uniintervene_jax.instructions import InstructionEncoder


class ConditionEncoder(nn.Module):
    """``(obs, goal dicts of (B, ...), instruction ids (B, L) int32) -> float32 (B, cond_dim)``."""

    encoder: ObservationEncoder
    instruction_vocab_size: int
    instruction_dim: int
    hidden_dims: Tuple[int, ...]

    @nn.compact
    def __call__(self, obs, goal, instr):
        zo = self.encoder(obs)
        zg = self.encoder(goal)  # same module: shared parameters
        zl = InstructionEncoder(self.instruction_vocab_size, self.instruction_dim)(instr)
        x = jnp.concatenate([zo, zg, zg - zo, zl], axis=-1)
        return MLP(self.hidden_dims, use_layer_norm=True, activate_final=True)(x)


class DecoderBlock(nn.Module):
    """Pre-LN transformer block: causal self-attention + GELU MLP, residual."""

    dim: int
    num_heads: int
    mlp_ratio: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True):
        h = nn.LayerNorm()(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, qkv_features=self.dim, dropout_rate=self.dropout_rate,
            deterministic=deterministic)(h, h, mask=mask)
        x = x + h
        h = nn.LayerNorm()(x)
        h = nn.gelu(nn.Dense(self.dim * self.mlp_ratio)(h))
        h = nn.Dense(self.dim)(h)
        if self.dropout_rate > 0:
            h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return x + h


class TokenRecoveryNet(nn.Module):
    """Prefix-conditioned causal decoder over FAST tokens (module docstring).

    ``__call__(obs, goal, instr, tokens_in (B, L) int32) -> logits float32 (B, L, vocab)``;
    ``condition`` -> prefix ``(B, P, dim)``; ``decode(prefix, tokens_in)`` -> logits.
    """

    cond: ConditionEncoder
    vocab: int
    dim: int
    num_layers: int
    num_heads: int
    mlp_ratio: int
    num_prefix_tokens: int
    max_tokens: int
    dropout_rate: float = 0.0

    def setup(self):
        self.prefix_proj = nn.Dense(self.num_prefix_tokens * self.dim)
        self.token_embed = nn.Embed(self.vocab, self.dim)
        self.pos_embed = self.param("pos_embed", nn.initializers.normal(0.02),
                                    (self.num_prefix_tokens + self.max_tokens, self.dim))
        self.blocks = [DecoderBlock(self.dim, self.num_heads, self.mlp_ratio, self.dropout_rate)
                       for _ in range(self.num_layers)]
        self.final_norm = nn.LayerNorm()
        self.head = nn.Dense(self.vocab)

    def condition(self, obs, goal, instr):
        c = self.cond(obs, goal, instr)
        return self.prefix_proj(c).reshape(c.shape[0], self.num_prefix_tokens, self.dim)

    def decode(self, prefix, tokens_in, deterministic: bool = True):
        B, L = tokens_in.shape
        x = jnp.concatenate([prefix, self.token_embed(tokens_in)], axis=1)
        x = x + self.pos_embed[None, : self.num_prefix_tokens + L]
        mask = nn.make_causal_mask(jnp.ones((B, self.num_prefix_tokens + L), jnp.int32))
        for block in self.blocks:
            x = block(x, mask, deterministic)
        x = self.final_norm(x[:, self.num_prefix_tokens:])
        return self.head(x)

    def __call__(self, obs, goal, instr, tokens_in, deterministic: bool = True):
        return self.decode(self.condition(obs, goal, instr), tokens_in, deterministic)


class ChunkRecoveryNet(nn.Module):
    """``(obs, goal, instr) -> tanh(MLP(c)) reshaped to (B, H, A)`` float32 in (-1, 1)."""

    cond: ConditionEncoder
    horizon: int
    action_dim: int
    hidden_dims: Tuple[int, ...]

    @nn.compact
    def __call__(self, obs, goal, instr, deterministic: bool = True):
        c = self.cond(obs, goal, instr)
        out = MLP(tuple(self.hidden_dims) + (self.horizon * self.action_dim,), use_layer_norm=True)(c)
        return jnp.tanh(out).reshape(c.shape[0], self.horizon, self.action_dim)


def build_network(c: ml_collections.ConfigDict, action_dim: int, num_bpe: Optional[int]) -> nn.Module:
    cond = ConditionEncoder(
        encoder=make_encoder_def(c.encoder),
        instruction_vocab_size=int(c.instruction_vocab_size),
        instruction_dim=int(c.instruction_dim),
        hidden_dims=tuple(int(h) for h in c.cond_hidden_dims),
    )
    if c.head == "continuous":
        return ChunkRecoveryNet(cond, int(c.horizon), int(action_dim), tuple(int(h) for h in c.chunk_hidden_dims))
    return TokenRecoveryNet(
        cond=cond, vocab=int(num_bpe) + 3, dim=int(c.embed_dim), num_layers=int(c.num_layers),
        num_heads=int(c.num_heads), mlp_ratio=int(c.mlp_ratio), num_prefix_tokens=int(c.num_prefix_tokens),
        max_tokens=int(c.max_tokens), dropout_rate=float(c.dropout_rate),
    )
