"""The intervention network: backbone over (o_t, l, a_t) and the future / Q / value / risk heads.

DESIGN.md section 4 ("Intervention model"); the paper's backbone is Qwen3-VL-2B + LoRA with a
frozen V-JEPA 2 future target. Here the backbone is pluggable and trains from scratch on CPU:

* :class:`MLPBackbone` (state vectors) or :class:`CNNBackbone` (uint8 images through
  ``serl_ext`` ``ObservationEncoder("small_cnn")``, plus the state when present). Both
  concatenate the :class:`~uniintervene_jax.instructions.InstructionEncoder` output and the
  candidate action, then an MLP (LayerNorm + GELU) gives ``h_t`` of width H.
* future head: ``Dense(4H) -> GELU -> Dense(D)`` predicts ``z_pred``, the target encoder's
  latent of o_{t+1};
* twin Q head (two independent MLPs, ``nn.vmap`` ensemble) on ``z_pred`` -> ``q1, q2``,
  ``q = min(q1, q2)``; both regress the proxy value V(t+1);
* current-value head on ``h_t`` -> ``v_now`` (regresses V_t);
* current-value head on ``h_t`` -> ``v_now`` (regresses V_t; ``tvr_history`` only, the
  official ``VCurrHead``);
* trigger head, by ``head_type`` (official ``--intervention_head_type``):

  - ``"tvr_history"`` (the paper's, configs/vq1/full_tvr_history.yaml): value-history encoder,
    MLP over ``[V_{t-K..t}, delta_scale * dV]`` -> 32-d embedding, ``dV_i = V_{t-K+i} -
    V_{t-K+i-1}`` (K values) computed here from the ``(B, K+1)`` history; risk head on
    ``[z, history embedding, stop_gradient(q)]`` -> one scalar ``risk``, regressed to the TVR
    target and used as the focal logit of the trigger (DESIGN section 4). The official risk
    head reads ``[z, history]``; the detached Q input is ours (kept so that the
    ``use_value_cond`` ablation changes this mode too);
  - ``"binary"`` (the official argparse default, ``InterventionHead``): a separate focal head
    ``Dense(4 F) -> GELU -> Dense(1)`` over ``[z, stop_gradient(q)]`` (F = width of z); no
    value history, no TVR target.

  ``z`` is not detached, so the trigger losses also shape the backbone; ``risk`` is the trigger
  logit in both modes (probability ``sigmoid(risk)``).

Ablations (config, official ``VARIANT_SPEC``): ``use_future=False`` (``no_future``) -> no future
head, Q and trigger heads read ``h_t``; ``use_value_cond=False`` (``no_value_cond``) -> the trigger
head gets no Q input (the Q head is still trained). The w/o-TVR ablation is ``head_type="binary"``.
"""

from __future__ import annotations

import functools
from typing import Dict, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from serl_ext.networks.encoders import ObservationEncoder, flatten_state
from serl_ext.networks.ensemble import Ensemble
from serl_ext.networks.mlp import MLP, default_init
from uniintervene_jax.instructions import InstructionEncoder

BACKBONES = ("mlp", "cnn")
# Trigger head modes of the official code (research_impl/vq1_heads.py, hil_vlm_train.py
# --intervention_head_type): "tvr_history" (the paper's configuration) and "binary".
HEAD_TYPES = ("tvr_history", "binary")


def _check_inputs(observations, instr_ids, actions, value_history=None) -> int:
    if not isinstance(observations, Mapping) or not observations:
        raise ValueError("observations must be a non-empty dict of batched arrays")
    if instr_ids.ndim != 2:
        raise ValueError(f"instr_ids must be (B, L) int, got shape {tuple(instr_ids.shape)}")
    b = instr_ids.shape[0]
    if actions.ndim != 2 or actions.shape[0] != b:
        raise ValueError(f"actions must be (B={b}, A), got shape {tuple(actions.shape)}")
    if value_history is not None and (value_history.ndim != 2 or value_history.shape[0] != b
                                      or value_history.shape[1] < 2):
        raise ValueError(f"value_history must be (B={b}, K+1) with K >= 1, got {tuple(value_history.shape)}")
    for k, v in observations.items():
        if v.shape[0] != b:
            raise ValueError(f"observations[{k!r}] has batch {v.shape[0]}, expected {b}")
    return b


def _fuse(backbone: nn.Module, features, instr_ids, actions):
    """``[features, instr_emb, action] -> MLP (GELU) -> h_t``, the shared tail of both backbones;
    called inside their compact ``__call__``, so the submodules ``instruction`` and ``mlp``
    belong to ``backbone``."""
    instr = InstructionEncoder(backbone.instr_vocab_size, backbone.instr_dim, name="instruction")(instr_ids)
    x = jnp.concatenate([features, instr, jnp.asarray(actions, jnp.float32)], axis=-1)
    return MLP(tuple(backbone.hidden_dims), activations=nn.gelu, use_layer_norm=backbone.use_layer_norm,
               activate_final=True, name="mlp")(x)


class MLPBackbone(nn.Module):
    """State backbone: ``[flatten(obs["state"]), instr_emb, action] -> MLP -> h_t``.

    Inputs: ``observations`` dict with ``"state"`` float ``(B, S...)``; ``instr_ids`` int32
    ``(B, L)``; ``actions`` float ``(B, A)``. Output float32 ``(B, hidden_dims[-1])``.
    Raises ValueError when ``"state"`` is missing.
    """

    hidden_dims: Sequence[int] = (256, 256)
    instr_vocab_size: int = 512
    instr_dim: int = 32
    use_layer_norm: bool = True

    @nn.compact
    def __call__(self, observations, instr_ids, actions):
        if "state" not in observations:
            raise ValueError(f"MLPBackbone needs observations['state']; keys: {sorted(observations)}")
        return _fuse(self, flatten_state(observations), instr_ids, actions)


class CNNBackbone(nn.Module):
    """Image backbone: small CNN per camera (``ObservationEncoder("small_cnn")``, HiL-SERL
    image head, trained from scratch) + state when present, then
    ``[features, instr_emb, action] -> MLP -> h_t``.

    Inputs: ``observations`` with uint8 ``(B, H, W, C)`` for each of ``image_keys`` (and
    optionally ``"state"``); ``instr_ids`` ``(B, L)``; ``actions`` ``(B, A)``.
    Output float32 ``(B, hidden_dims[-1])``. Raises ValueError for a missing image key.
    """

    image_keys: Sequence[str] = ("pixels",)
    hidden_dims: Sequence[int] = (256, 256)
    latent_dim: int = 64
    widths: Optional[Sequence[int]] = (16, 32, 32)
    num_spatial_features: int = 8
    instr_vocab_size: int = 512
    instr_dim: int = 32
    use_layer_norm: bool = True

    @nn.compact
    def __call__(self, observations, instr_ids, actions):
        enc = ObservationEncoder(
            encoder_type="small_cnn", image_keys=tuple(self.image_keys), latent_dim=self.latent_dim,
            num_spatial_features=self.num_spatial_features,
            widths=None if self.widths is None else tuple(self.widths), name="encoder")
        return _fuse(self, enc(observations), instr_ids, actions)


class ScalarHead(nn.Module):
    """MLP (LayerNorm + GELU) -> Dense(1): ``(B, F) -> (B,)`` float32."""

    hidden_dims: Sequence[int] = (256,)
    use_layer_norm: bool = True

    @nn.compact
    def __call__(self, x):
        x = MLP(tuple(self.hidden_dims), activations=nn.gelu, use_layer_norm=self.use_layer_norm,
                activate_final=True)(x)
        return nn.Dense(1, kernel_init=default_init())(x)[..., 0]


class FutureHead(nn.Module):
    """Latent future head: ``Dense(4H) -> GELU -> Dense(D)`` (DESIGN section 4).

    Input ``h`` float ``(B, H)``; output ``z_pred`` float32 ``(B, target_dim)``.
    """

    target_dim: int

    @nn.compact
    def __call__(self, h):
        x = nn.Dense(4 * h.shape[-1], kernel_init=default_init())(h)
        x = nn.gelu(x)
        return nn.Dense(self.target_dim, kernel_init=default_init())(x)


class ValueHistoryEncoder(nn.Module):
    """MLP over ``[V_{t-K..t}, delta_scale * dV]`` -> ``(B, out_dim)`` (GELU, final GELU).

    Input ``value_history`` float ``(B, K+1)`` (oldest first, V_t last). ``dV`` has K
    entries (consecutive differences); ``delta_scale`` (default 10) brings the small
    per-step changes (~0.01) to the scale of the values.
    """

    hidden_dims: Sequence[int] = (64,)
    out_dim: int = 32
    delta_scale: float = 10.0

    @nn.compact
    def __call__(self, value_history):
        v = jnp.asarray(value_history, jnp.float32)
        dv = v[:, 1:] - v[:, :-1]
        x = jnp.concatenate([v, self.delta_scale * dv], axis=-1)
        return MLP(tuple(self.hidden_dims) + (self.out_dim,), activations=nn.gelu, activate_final=True)(x)


class InterventionNet(nn.Module):
    """Backbone + future / twin-Q / value / history / risk heads (DESIGN section 4).

    Attributes:
      backbone: "mlp" (state vectors) or "cnn" (images).
      hidden_dims: backbone MLP widths; ``H = hidden_dims[-1]``.
      image_keys, cnn_latent_dim, cnn_widths, num_spatial_features: CNN backbone options.
      instr_vocab_size, instr_dim: :class:`InstructionEncoder` sizes.
      target_dim: D, width of the target encoder's latent.
      head_hidden_dims: hidden widths of the Q, value and risk heads.
      history_hidden_dims, history_dim, history_delta_scale: value-history encoder.
      use_future: future head on (else Q and the trigger head read ``h_t``).
      use_value_cond: the trigger head also reads ``stop_gradient(q)``.
      head_type: ``"tvr_history"`` or ``"binary"`` (module docstring).

    ``__call__(observations, instr_ids, actions, value_history)``: observations dict of
    batched arrays ``(B, ...)``, ``instr_ids`` int32 ``(B, L)``, ``actions`` float ``(B, A)``,
    ``value_history`` float ``(B, K+1)``. Returns a dict of float32 arrays: ``h`` (B, H),
    ``risk`` (B,) (the trigger logit: probability ``sigmoid(risk)``; with ``tvr_history`` also
    the TVR regression), ``q1``, ``q2``, ``q`` (= min) (B,), ``z_pred`` (B, D) when
    ``use_future``, ``v_now`` (B,) with ``tvr_history``. ``value_history`` is read only by
    ``tvr_history`` (its shape is checked in both modes).
    Raises ValueError on inconsistent batch sizes / ranks, an unknown backbone or head type.
    """

    backbone: str = "mlp"
    hidden_dims: Sequence[int] = (256, 256)
    image_keys: Sequence[str] = ()
    cnn_latent_dim: int = 64
    cnn_widths: Optional[Sequence[int]] = (16, 32, 32)
    num_spatial_features: int = 8
    instr_vocab_size: int = 512
    instr_dim: int = 32
    target_dim: int = 64
    head_hidden_dims: Sequence[int] = (256,)
    history_hidden_dims: Sequence[int] = (64,)
    history_dim: int = 32
    history_delta_scale: float = 10.0
    use_future: bool = True
    use_value_cond: bool = True
    head_type: str = "tvr_history"
    use_layer_norm: bool = True

    def setup(self):
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        if self.backbone == "mlp":
            self.encoder = MLPBackbone(tuple(self.hidden_dims), self.instr_vocab_size, self.instr_dim,
                                       self.use_layer_norm)
        elif self.backbone == "cnn":
            self.encoder = CNNBackbone(tuple(self.image_keys), tuple(self.hidden_dims), self.cnn_latent_dim,
                                       None if self.cnn_widths is None else tuple(self.cnn_widths),
                                       self.num_spatial_features, self.instr_vocab_size, self.instr_dim,
                                       self.use_layer_norm)
        else:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.use_future:
            self.future_head = FutureHead(self.target_dim)
        head = functools.partial(ScalarHead, tuple(self.head_hidden_dims), self.use_layer_norm)
        self.q_head = Ensemble(head, num=2)
        if self.head_type == "tvr_history":
            self.value_head = ScalarHead(tuple(self.head_hidden_dims), self.use_layer_norm)
            self.history_encoder = ValueHistoryEncoder(tuple(self.history_hidden_dims), self.history_dim,
                                                       self.history_delta_scale)
            self.risk_head = ScalarHead(tuple(self.head_hidden_dims), self.use_layer_norm)
        else:  # binary: official InterventionHead, in -> 4 in -> 1 (no LayerNorm)
            z_dim = self.target_dim if self.use_future else int(self.hidden_dims[-1])
            self.trigger_head = ScalarHead((4 * z_dim,), use_layer_norm=False)

    def __call__(self, observations, instr_ids, actions, value_history) -> Dict[str, jax.Array]:
        instr_ids = jnp.asarray(instr_ids)
        actions = jnp.asarray(actions, jnp.float32)
        value_history = jnp.asarray(value_history, jnp.float32)
        _check_inputs(observations, instr_ids, actions, value_history)
        h = self.encoder(observations, instr_ids, actions)
        out = {"h": h}
        if self.use_future:
            z = self.future_head(h)
            out["z_pred"] = z
        else:
            z = h
        qs = self.q_head(z)  # (2, B)
        out["q1"], out["q2"] = qs[0], qs[1]
        out["q"] = jnp.minimum(qs[0], qs[1])
        q_in = [jax.lax.stop_gradient(out["q"])[:, None]] if self.use_value_cond else []
        if self.head_type == "tvr_history":
            out["v_now"] = self.value_head(h)
            x = jnp.concatenate([z, self.history_encoder(value_history)] + q_in, axis=-1)
            out["risk"] = self.risk_head(x)
        else:
            out["risk"] = self.trigger_head(jnp.concatenate([z] + q_in, axis=-1))
        return out
