"""The proxy value network ``V(o, l)`` of UniIntervene (DESIGN.md section 4).

``obs -> ObservationEncoder`` (flattened state, or SmallCNN / ResNet-10 per camera plus the
state) and ``instruction ids -> InstructionEncoder``; the two features are concatenated and
an MLP maps them to the latent ``z`` (width ``latent_dim``, followed by LayerNorm). Two
independent heads (MLP -> 1) read ``z``; a **sigmoid** is applied to each head output, so
``V1, V2`` lie in ``(0, 1)``, the range of the NTTG progress labels and of the 0/1 success
reward the TD target is built from. The paper's encoder is SigLIP + Gemma-3-270M; here it
trains from scratch.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from serl_ext.networks.encoders import ObservationEncoder
from serl_ext.networks.mlp import MLP
from uniintervene_jax.instructions import InstructionEncoder


class ProxyValueNet(nn.Module):
    """Twin-head proxy value network.

    Attributes:
      encoder_type: "state" (flattened ``obs["state"]``), "small_cnn" or "resnet10".
      image_keys: camera keys (empty for "state").
      image_latent_dim: per-camera latent width of the image encoder.
      num_spatial_features: SpatialLearnedEmbeddings features per channel.
      widths: optional image-backbone widths (None = class default).
      hidden_dims: trunk MLP widths before the latent layer.
      latent_dim: width D of ``z``.
      head_hidden_dims: hidden widths of each value head (then a Dense(1)).
      vocab_size, instruction_dim: :class:`InstructionEncoder` size.

    Inputs: ``obs`` dict of batched arrays (``"state"`` float ``(B, S)``, images uint8
    ``(B, H, W, 3)``), ``instr_ids`` int32 ``(B, L)``.
    """

    encoder_type: str = "state"
    image_keys: Sequence[str] = ()
    image_latent_dim: int = 128
    num_spatial_features: int = 8
    widths: Optional[Sequence[int]] = None
    hidden_dims: Sequence[int] = (256, 256)
    latent_dim: int = 128
    head_hidden_dims: Sequence[int] = (256,)
    vocab_size: int = 512
    instruction_dim: int = 32

    def setup(self):
        self.obs_encoder = ObservationEncoder(
            encoder_type=self.encoder_type,
            image_keys=tuple(self.image_keys),
            latent_dim=self.image_latent_dim,
            num_spatial_features=self.num_spatial_features,
            widths=None if self.widths is None else tuple(self.widths),
        )
        self.instruction_encoder = InstructionEncoder(self.vocab_size, self.instruction_dim)
        self.trunk = MLP(tuple(self.hidden_dims) + (self.latent_dim,), use_layer_norm=True)
        self.latent_norm = nn.LayerNorm()
        self.head1 = MLP(tuple(self.head_hidden_dims) + (1,), use_layer_norm=True)
        self.head2 = MLP(tuple(self.head_hidden_dims) + (1,), use_layer_norm=True)

    def encode(self, obs: Dict[str, jax.Array], instr_ids: jax.Array) -> jax.Array:
        """Latent ``z``: float32 ``(B, latent_dim)`` (LayerNorm output).

        Raises ValueError when ``instr_ids`` is not ``(B, L)`` with the batch of ``obs``.
        """
        feats = self.obs_encoder(obs)
        if instr_ids.ndim != 2 or instr_ids.shape[0] != feats.shape[0]:
            raise ValueError(f"instr_ids must be (B, L) with B={feats.shape[0]}, got {instr_ids.shape}")
        instr = self.instruction_encoder(instr_ids)
        return self.latent_norm(self.trunk(jnp.concatenate([feats, instr], axis=-1)))

    def logits(self, obs: Dict[str, jax.Array], instr_ids: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """Pre-sigmoid head outputs, two float32 ``(B,)`` arrays."""
        z = self.encode(obs, instr_ids)
        return self.head1(z)[..., 0], self.head2(z)[..., 0]

    def __call__(self, obs: Dict[str, jax.Array], instr_ids: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """``(V1, V2)``: two float32 ``(B,)`` arrays in ``(0, 1)`` (sigmoid of each head)."""
        l1, l2 = self.logits(obs, instr_ids)
        return jax.nn.sigmoid(l1), jax.nn.sigmoid(l2)

    def values_and_latent(self, obs: Dict[str, jax.Array], instr_ids: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
        """``(V1, V2, z)`` from one pass: :meth:`__call__`'s two values and :meth:`encode`'s
        latent ``(B, latent_dim)``, which the heads read (same parameters, same numbers)."""
        z = self.encode(obs, instr_ids)
        return jax.nn.sigmoid(self.head1(z)[..., 0]), jax.nn.sigmoid(self.head2(z)[..., 0]), z
