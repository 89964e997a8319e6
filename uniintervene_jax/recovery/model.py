"""The goal-conditioned recovery policy: state, jitted update, chunk prediction (greedy FAST
decoding for the token head) and the model folder (:mod:`uniintervene_jax.io`, plus the FAST
tokenizer in ``fast/``). DESIGN section 4 "Recovery policy" (guide "Step 6"): input the current
observation ``o_t``, the goal observation ``g`` (from :class:`~uniintervene_jax.memory.RecoveryMemory`)
and the instruction ids ``l``; output a chunk of ``H = 8`` actions in ``[-1, 1]``; **when the
token head produces no EOS or tokens that do not decode to (H, A), the chunk is all zeros and
``decode_failed`` is True**. Networks: :mod:`.network`; losses: :mod:`.losses`; config:
:mod:`.config`.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from serl_ext.agents.common import (
    check_observations,
    make_obs_spec,
    policy_observations,
    validate_encoder_config,
)
from uniintervene_jax import io
from uniintervene_jax.recovery.config import resolve_config
from uniintervene_jax.recovery.fast import FASTDecodeError, FASTTokenizer
from uniintervene_jax.recovery.losses import chunk_loss, token_loss
from uniintervene_jax.recovery.network import TokenRecoveryNet, build_network

KIND = "recovery_policy"
FAST_SUBDIR = "fast"


def _make_fns(network: nn.Module, head: str, pad: int, bos: int, max_tokens: int):
    """Pure jitted update / predict functions for one network (shared by policy copies)."""

    def loss_fn(params, batch, key):
        if head == "continuous":
            pred = network.apply({"params": params}, batch["observations"], batch["goal_observations"],
                                 batch["instructions"], deterministic=False, rngs={"dropout": key})
            return chunk_loss(pred, batch["actions"])
        targets = batch["target_tokens"]
        tokens_in = jnp.concatenate([jnp.full_like(targets[:, :1], bos), targets[:, :-1]], axis=1)
        logits = network.apply({"params": params}, batch["observations"], batch["goal_observations"],
                               batch["instructions"], tokens_in, deterministic=False, rngs={"dropout": key})
        return token_loss(logits, targets, pad)

    @jax.jit
    def update(state, batch, key):
        (_, info), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        info["train/grad_norm"] = optax.global_norm(grads)
        return state.apply_gradients(grads=grads), info

    @jax.jit
    def predict_continuous(params, obs, goal, instr):
        return network.apply({"params": params}, obs, goal, instr)

    @jax.jit
    def greedy_tokens(params, obs, goal, instr):
        B = instr.shape[0]
        prefix = network.apply({"params": params}, obs, goal, instr, method=TokenRecoveryNet.condition)
        tokens = jnp.full((B, max_tokens + 1), pad, jnp.int32).at[:, 0].set(bos)

        def body(i, tokens):
            logits = network.apply({"params": params}, prefix, tokens[:, :max_tokens],
                                   method=TokenRecoveryNet.decode)
            step = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
            step = step.at[:, pad].set(-jnp.inf).at[:, bos].set(-jnp.inf)
            nxt = jnp.argmax(step, axis=-1).astype(jnp.int32)
            return jax.lax.dynamic_update_index_in_dim(tokens, nxt, i + 1, axis=1)

        tokens = jax.lax.fori_loop(0, max_tokens, body, tokens)
        return tokens[:, 1:]

    return update, predict_continuous, greedy_tokens


def _make_tx(c: ml_collections.ConfigDict) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(float(c.grad_clip_norm)), optax.adam(float(c.learning_rate)))


class RecoveryPolicy:
    """Goal-conditioned recovery policy (module docstring). Immutable: :meth:`update` returns a new
    policy. Build with :meth:`create` or :meth:`load`.

    Attributes:
      config: resolved ConfigDict; action_dim: A; horizon: H; state: flax TrainState;
      tokenizer: the fitted :class:`FASTTokenizer` (token head) or None; obs_spec: observation spec.
    """

    def __init__(self, config, network, state, rng, obs_spec, action_dim, tokenizer, fns):
        self.config = config
        self.network = network
        self.state = state
        self.rng = rng
        self.obs_spec = obs_spec
        self.action_dim = int(action_dim)
        self.horizon = int(config.horizon)
        self.tokenizer = tokenizer
        self._fns = fns

    # ------------------------------------------------------------ construction
    @classmethod
    def create(cls, rng: jax.Array, obs_example: Mapping[str, Any], action_dim: int, config: Any = None,
               fast_tokenizer: Optional[FASTTokenizer] = None) -> "RecoveryPolicy":
        """New policy with freshly initialised parameters.

        Args:
          rng: PRNG key.
          obs_example: one unbatched observation dict (the goal has the same spec).
          action_dim: A.
          config: overrides of :func:`~uniintervene_jax.recovery.config.get_default_config` (ConfigDict or dict; unknown fields raise).
          fast_tokenizer: a fitted :class:`FASTTokenizer` for ``(H, A)`` chunks (token head only;
            :func:`uniintervene_jax.recovery.train.train_recovery_policy` fits one).
        Raises:
          ValueError: bad config, observation example, action_dim, or a missing/mismatched tokenizer.
        """
        c = resolve_config(config)
        if int(action_dim) < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        validate_encoder_config(c.encoder, obs_example)
        spec = make_obs_spec(obs_example)
        num_bpe = None
        if c.head == "token":
            if fast_tokenizer is None or not fast_tokenizer.fitted:
                raise ValueError("the token head needs a fitted FASTTokenizer (fit it on the training chunks)")
            if (fast_tokenizer.time_horizon, fast_tokenizer.action_dim) != (int(c.horizon), int(action_dim)):
                raise ValueError(
                    f"FAST tokenizer fitted on ({fast_tokenizer.time_horizon}, {fast_tokenizer.action_dim}) chunks, "
                    f"policy needs ({c.horizon}, {action_dim})")
            num_bpe = fast_tokenizer.actual_vocab_size
        else:
            fast_tokenizer = None
        network = build_network(c, action_dim, num_bpe)
        params = cls._init_params(network, c, spec, rng)
        return cls._assemble(c, network, params, jax.random.fold_in(rng, 1), spec, action_dim, fast_tokenizer)

    @staticmethod
    def _init_params(network, c, spec, rng):
        ex = {k: jnp.asarray(v)[None] for k, v in io.example_from_spec(spec).items()}
        instr = jnp.zeros((1, 16), jnp.int32)
        if c.head == "continuous":
            return network.init(rng, ex, ex, instr)["params"]
        return network.init(rng, ex, ex, instr, jnp.zeros((1, int(c.max_tokens)), jnp.int32))["params"]

    @classmethod
    def _assemble(cls, c, network, params, rng, spec, action_dim, tokenizer):
        state = train_state.TrainState.create(apply_fn=None, params=params, tx=_make_tx(c))
        state = state.replace(step=jnp.zeros((), jnp.int32))
        n = tokenizer.actual_vocab_size if tokenizer is not None else 0
        fns = _make_fns(network, c.head, pad=n, bos=n + 2, max_tokens=int(c.max_tokens))
        return cls(c, network, state, rng, spec, action_dim, tokenizer, fns)

    # ------------------------------------------------------------ token ids
    @property
    def pad_id(self) -> int:
        """PAD id (= number of BPE ids); EOS = PAD + 1, BOS = PAD + 2 (token head only)."""
        if self.tokenizer is None:
            raise AttributeError("the continuous head has no token ids")
        return self.tokenizer.actual_vocab_size

    @property
    def eos_id(self) -> int:
        return self.pad_id + 1

    @property
    def bos_id(self) -> int:
        return self.pad_id + 2

    def encode_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """Action chunks float ``(N, H, A)`` -> target ids int32 ``(N, max_tokens)``: FAST tokens, EOS,
        then PAD. Raises ValueError when a chunk needs more than ``max_tokens - 1`` tokens."""
        token_lists = self.tokenizer.encode_batch(np.asarray(chunks))
        L = int(self.config.max_tokens)
        out = np.full((len(token_lists), L), self.pad_id, np.int32)
        for i, toks in enumerate(token_lists):
            if len(toks) + 1 > L:
                raise ValueError(f"chunk {i} needs {len(toks)} FAST tokens + EOS > max_tokens={L}; raise config.max_tokens")
            out[i, : len(toks)] = toks
            out[i, len(toks)] = self.eos_id
        return out

    # ------------------------------------------------------------ checks
    def _instructions(self, instr: Any, n: Optional[int]) -> np.ndarray:
        ids = np.asarray(instr)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or (n is not None and ids.shape[0] != n):
            raise ValueError(f"instruction ids must be (L,) or (B, L) with B={n}, got {np.shape(instr)}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"instruction ids must be integers, got {ids.dtype}")
        if ids.min() < 0 or ids.max() >= int(self.config.instruction_vocab_size):
            raise ValueError(f"instruction ids must lie in [0, {self.config.instruction_vocab_size})")
        return np.ascontiguousarray(ids, np.int32)  # host array: jitted calls take it as it is

    def _check_batch(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch must be a dict, got {type(batch).__name__}")
        for key in ("observations", "goal_observations", "instructions", "actions"):
            if key not in batch:
                raise ValueError(f"batch has no key {key!r}; keys: {sorted(batch)}")
        actions = np.asarray(batch["actions"], np.float32)
        if actions.ndim != 3 or actions.shape[1:] != (self.horizon, self.action_dim) or actions.shape[0] < 1:
            raise ValueError(f"batch['actions'] must be (B, {self.horizon}, {self.action_dim}), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("batch['actions'] contains NaN or inf")
        if np.abs(actions).max() > 1.0 + 1e-4:
            raise ValueError("batch['actions'] must be normalised to [-1, 1]")
        n = actions.shape[0]
        out = {
            "observations": check_observations(batch["observations"], self.obs_spec, (n,), "batch['observations']"),
            "goal_observations": check_observations(batch["goal_observations"], self.obs_spec, (n,),
                                                    "batch['goal_observations']"),
            "instructions": self._instructions(batch["instructions"], n),
        }
        if self.config.head == "continuous":
            out["actions"] = jnp.asarray(np.clip(actions, -1.0, 1.0))
        elif "target_tokens" in batch:
            tt = np.asarray(batch["target_tokens"])
            if tt.shape != (n, int(self.config.max_tokens)):
                raise ValueError(f"batch['target_tokens'] must be ({n}, {self.config.max_tokens}), got {tt.shape}")
            out["target_tokens"] = jnp.asarray(tt, jnp.int32)
        else:
            out["target_tokens"] = jnp.asarray(self.encode_chunks(actions))
        return out

    # ------------------------------------------------------------ training / inference
    def update(self, batch: Mapping[str, Any]) -> Tuple["RecoveryPolicy", Dict[str, float]]:
        """One jitted gradient step.

        Args:
          batch: ``observations`` and ``goal_observations`` (dicts of ``(B, ...)``), ``instructions``
            int ``(B, 16)``, ``actions`` float ``(B, H, A)`` in [-1, 1]; optionally ``target_tokens``
            int ``(B, max_tokens)`` from :meth:`encode_chunks` (token head; computed when absent).
        Returns:
          ``(new_policy, info)`` with ``train/loss``, ``train/grad_norm`` and ``train/mse`` (continuous)
          or ``train/token_accuracy`` (token).
        Raises ValueError/TypeError on a malformed batch.
        """
        checked = self._check_batch(batch)
        rng, key = jax.random.split(self.rng)
        state, info = self._fns[0](self.state, checked, key)
        new = RecoveryPolicy(self.config, self.network, state, rng, self.obs_spec, self.action_dim,
                             self.tokenizer, self._fns)
        return new, {k: float(v) for k, v in info.items()}

    def predict_chunk(self, observations: Mapping[str, Any], goal_observations: Mapping[str, Any],
                      instruction_ids: Any, return_info: bool = False):
        """Recovery chunk for a batch (or one unbatched example, returned with B = 1).

        Args:
          observations / goal_observations: dicts of ``(B, ...)`` (or unbatched) arrays.
          instruction_ids: int ``(B, L)`` or ``(L,)``.
          return_info: also return ``{"decode_failed": bool (B,)}`` (always False for continuous).
        Returns:
          float32 numpy ``(B, H, A)`` in [-1, 1] (and the info dict when asked).
        Raises ValueError on malformed inputs.
        """
        obs, _ = policy_observations(observations, self.obs_spec, host=True)
        goal, _ = policy_observations(goal_observations, self.obs_spec, host=True)
        B = next(iter(obs.values())).shape[0]
        if next(iter(goal.values())).shape[0] != B:
            raise ValueError("observations and goal_observations have different batch sizes")
        instr = self._instructions(instruction_ids, None)
        if instr.shape[0] == 1 and B > 1:
            instr = np.repeat(instr, B, axis=0)
        if instr.shape[0] != B:
            raise ValueError(f"instruction ids have batch {instr.shape[0]}, observations {B}")
        failed = np.zeros((B,), bool)
        if self.config.head == "continuous":
            chunk = np.asarray(self._fns[1](self.state.params, obs, goal, instr), np.float32)
        else:
            tokens = np.asarray(self._fns[2](self.state.params, obs, goal, instr))
            chunk = np.zeros((B, self.horizon, self.action_dim), np.float32)
            for i in range(B):
                chunk[i], failed[i] = self._decode_row(tokens[i])
        chunk = np.clip(chunk, -1.0, 1.0)
        return (chunk, {"decode_failed": failed}) if return_info else chunk

    def _decode_row(self, row: np.ndarray) -> Tuple[np.ndarray, bool]:
        eos = np.flatnonzero(row == self.eos_id)
        zero = np.zeros((self.horizon, self.action_dim), np.float32)
        if eos.size == 0:
            return zero, True
        try:
            return self.tokenizer.decode(row[: eos[0]], self.horizon, self.action_dim), False
        except FASTDecodeError:
            return zero, True

    # ------------------------------------------------------------ persistence
    def save(self, directory: str) -> str:
        """Writes the model folder (``uniintervene_jax.io``) and, for the token head, the FAST
        tokenizer into ``{directory}/fast``. Optimiser state is not saved."""
        extra = {"action_dim": self.action_dim, "obs_spec": io.obs_spec_to_json(self.obs_spec),
                 "fast_dir": FAST_SUBDIR if self.tokenizer is not None else None,
                 "step": int(self.state.step)}
        if self.tokenizer is not None:
            self.tokenizer.save(os.path.join(directory, FAST_SUBDIR))
        return io.save_model(directory, KIND, self.config.to_dict(), self.state.params, extra)

    @classmethod
    def load(cls, directory: str, seed: int = 0) -> "RecoveryPolicy":
        """Rebuilds a policy from its folder alone (fresh Adam state, PRNG from ``seed``).

        Raises FileNotFoundError / ValueError (``io.load_model``, tokenizer, parameter mismatch).
        """
        config, params, extra = io.load_model(directory, KIND)
        c = resolve_config(config)
        spec = io.obs_spec_from_json(extra["obs_spec"])
        action_dim = int(extra["action_dim"])
        tokenizer = None
        if c.head == "token":
            tokenizer = FASTTokenizer.load(os.path.join(directory, extra.get("fast_dir") or FAST_SUBDIR))
        network = build_network(c, action_dim, tokenizer.actual_vocab_size if tokenizer else None)
        key = jax.random.PRNGKey(seed)
        reference = cls._init_params(network, c, spec, key)
        params = io.params_like(params, jax.tree_util.tree_map(np.asarray, reference), "recovery policy params")
        return cls._assemble(c, network, params, jax.random.fold_in(key, 1), spec, action_dim, tokenizer)
