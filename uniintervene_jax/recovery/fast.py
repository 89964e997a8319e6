"""FAST action tokenizer: DCT over time, scale, round, byte-level BPE.

DESIGN section 4 "FAST tokenizer" (Pertsch et al., "FAST: Efficient Action Tokenization for
Vision-Language-Action Models"; the UniIntervene recovery head uses it for its action chunks).

Encoding a chunk ``x`` float ``(T, D)`` (T time steps, D action dims):

1. ``C = dct(x, type=2, norm="ortho", axis=0)``: an orthonormal DCT-II of every action dimension
   over time; ``C[k, d]`` is frequency ``k`` of dimension ``d``.
2. ``Q = round(scale * C)`` (``np.rint``, integers).
3. Flatten ``Q`` row-major over ``(frequency, dim)``: all dims of frequency 0 first, then all dims
   of frequency 1, ...
4. Map every integer ``q`` to the character ``chr(q - min_token)`` where ``min_token`` is the
   smallest integer seen by :meth:`FASTTokenizer.fit`. **Integers outside the fitted range
   ``[min_token, max_token]`` are clamped into it** (so every chunk encodes; such a chunk does not
   meet the round-trip bound; :meth:`FASTTokenizer.in_range` tells whether a chunk fits).
5. Byte-level BPE (``tokenizers``; the characters are UTF-8 encoded and BPE merges are learned
   over the 256 byte symbols) turns the string into token ids in ``[0, vocab_size)``.

Decoding inverts each step and checks that exactly ``T * D`` integers come out; otherwise it
raises :class:`FASTDecodeError` (a ValueError). Round trip: since the DCT is orthonormal,
``||decode(encode(x)) - x||_2 = ||round(scale C) - scale C||_2 / scale <= 0.5 sqrt(T D) / scale``
(Frobenius norm over the chunk) for chunks inside the fitted range.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

import numpy as np
import scipy.fft

FORMAT_VERSION = 1
TOKENIZER_FILE = "fast_tokenizer.json"
META_FILE = "fast.json"


class FASTDecodeError(ValueError):
    """A token sequence does not decode to a ``(T, D)`` chunk (wrong length, bad ids/chars)."""


def _check_chunks(chunks: np.ndarray, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(chunks)
    if arr.ndim != ndim:
        shape = "(T, D)" if ndim == 2 else "(N, T, D)"
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.size == 0 or any(s == 0 for s in arr.shape):
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def dct_coefficients(chunk: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II over time of each dimension: ``(..., T, D) -> float64 (..., T, D)``.

    ``C[k, d] = sqrt(w_k / T) * sum_n x[n, d] cos(pi k (2n + 1) / (2T))`` with ``w_0 = 1`` and
    ``w_k = 2`` otherwise (``scipy.fft.dct(type=2, norm="ortho")`` along the time axis).
    """
    return scipy.fft.dct(np.asarray(chunk, np.float64), type=2, norm="ortho", axis=-2)


def inverse_dct(coefficients: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dct_coefficients` (orthonormal DCT-III over the time axis)."""
    return scipy.fft.idct(np.asarray(coefficients, np.float64), type=2, norm="ortho", axis=-2)


class FASTTokenizer:
    """FAST tokenizer for action chunks of a fixed shape ``(T, D)``.

    Args:
      scale: multiplier applied to the DCT coefficients before rounding (FAST default 10);
        larger = finer quantisation and longer token sequences.
      vocab_size: BPE vocabulary size (FAST uses 1024-2048; small values work in tests). Must be
        >= 256 + 1 (the 256 byte symbols plus at least one merge). The trained vocabulary can be
        smaller when the data admit fewer merges: :attr:`actual_vocab_size` is the real size.
      min_frequency: a pair must occur this many times to be merged.

    Raises ValueError for a non-positive/non-finite scale or a vocab_size <= 256.
    """

    def __init__(self, scale: float = 10.0, vocab_size: int = 1024, min_frequency: int = 2):
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive finite float, got {scale}")
        if int(vocab_size) <= 256:
            raise ValueError(f"vocab_size must be > 256 (byte alphabet + merges), got {vocab_size}")
        self.scale = scale
        self.vocab_size = int(vocab_size)
        self.min_frequency = int(min_frequency)
        self.min_token: Optional[int] = None
        self.max_token: Optional[int] = None
        self.time_horizon: Optional[int] = None
        self.action_dim: Optional[int] = None
        self._tok = None

    # ------------------------------------------------------------ helpers
    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self._tok is not None

    @property
    def actual_vocab_size(self) -> int:
        """Number of BPE ids; token ids lie in ``[0, actual_vocab_size)``."""
        self._require_fitted()
        return int(self._tok.get_vocab_size())

    def _require_fitted(self) -> None:
        if self._tok is None:
            raise RuntimeError("FASTTokenizer is not fitted: call fit(chunks) or FASTTokenizer.load(dir)")

    def quantize(self, chunks: np.ndarray) -> np.ndarray:
        """``(..., T, D)`` float -> int64 ``(..., T, D)`` = ``rint(scale * DCT(chunks))`` (not clamped)."""
        return np.rint(self.scale * dct_coefficients(chunks)).astype(np.int64)

    def in_range(self, chunk: np.ndarray) -> bool:
        """True when every quantised coefficient of ``chunk (T, D)`` lies in the fitted range
        (so :meth:`encode` does not clamp and the round-trip bound holds)."""
        self._require_fitted()
        q = self.quantize(_check_chunks(chunk, 2, "chunk"))
        return bool(q.min() >= self.min_token and q.max() <= self.max_token)

    def _to_string(self, q: np.ndarray) -> str:
        flat = np.clip(q.reshape(-1), self.min_token, self.max_token) - self.min_token
        return "".join(map(chr, flat.tolist()))

    def _make_tokenizer(self):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.BPE())
        # One pre-token per chunk: no regex splitting, no prefix space.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        return tok

    # ------------------------------------------------------------ fit
    def fit(self, chunks: np.ndarray) -> "FASTTokenizer":
        """Fits the integer range and trains the BPE on ``chunks`` float ``(N, T, D)``.

        Fixes ``T`` and ``D`` for every later call. Returns self.
        Raises ValueError/TypeError on bad shapes, NaN/inf or an empty array.
        """
        from tokenizers import pre_tokenizers, trainers

        arr = _check_chunks(chunks, 3, "chunks")
        _, T, D = arr.shape
        q = self.quantize(arr)
        self.min_token, self.max_token = int(q.min()), int(q.max())
        self.time_horizon, self.action_dim = int(T), int(D)
        if self.max_token - self.min_token > 0x10FFFF - 0x800:
            raise ValueError("quantised coefficient range too wide for unicode characters; lower scale")
        tok = self._make_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size,
            min_frequency=self.min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        strings = [self._to_string(x) for x in q]
        tok.train_from_iterator(strings, trainer, length=len(strings))
        self._tok = tok
        return self

    # ------------------------------------------------------------ encode / decode
    def encode(self, chunk: np.ndarray) -> List[int]:
        """One chunk float ``(T, D)`` -> BPE token ids (list of int in ``[0, actual_vocab_size)``).

        Coefficients outside the fitted range are clamped (module docstring).
        Raises ValueError for a chunk of another shape than the fitted ``(T, D)`` or with NaN.
        """
        self._require_fitted()
        arr = _check_chunks(chunk, 2, "chunk")
        if arr.shape != (self.time_horizon, self.action_dim):
            raise ValueError(f"chunk must have the fitted shape {(self.time_horizon, self.action_dim)}, got {arr.shape}")
        return list(self._tok.encode(self._to_string(self.quantize(arr))).ids)

    def encode_batch(self, chunks: np.ndarray) -> List[List[int]]:
        """``(N, T, D)`` -> list of N token-id lists (see :meth:`encode`)."""
        self._require_fitted()
        arr = _check_chunks(chunks, 3, "chunks")
        if arr.shape[1:] != (self.time_horizon, self.action_dim):
            raise ValueError(
                f"chunks must have shape (N, {self.time_horizon}, {self.action_dim}), got {arr.shape}"
            )
        q = self.quantize(arr)
        return [list(e.ids) for e in self._tok.encode_batch([self._to_string(x) for x in q])]

    def decode(self, tokens: Sequence[int], time_horizon: Optional[int] = None,
               action_dim: Optional[int] = None) -> np.ndarray:
        """Token ids -> chunk float32 ``(T, D)`` (defaults: the fitted T and D).

        Raises:
          FASTDecodeError (a ValueError): an id outside ``[0, actual_vocab_size)``, bytes that are
            not valid UTF-8, a character outside the fitted integer range, or a decoded length
            other than ``T * D``.
        """
        self._require_fitted()
        T = self.time_horizon if time_horizon is None else int(time_horizon)
        D = self.action_dim if action_dim is None else int(action_dim)
        ids = [int(t) for t in np.asarray(tokens, dtype=np.int64).reshape(-1)]
        n_vocab = self.actual_vocab_size
        bad = [t for t in ids if t < 0 or t >= n_vocab]
        if bad:
            raise FASTDecodeError(f"token ids {bad[:5]} outside [0, {n_vocab})")
        text = self._tok.decode(ids)
        if "\ufffd" in text:
            raise FASTDecodeError("tokens do not form valid UTF-8 (corrupted token sequence)")
        values = np.fromiter((ord(c) for c in text), dtype=np.int64, count=len(text))
        if values.size != T * D:
            raise FASTDecodeError(f"tokens decode to {values.size} coefficients, expected T*D = {T}*{D} = {T * D}")
        if values.size and values.max() > self.max_token - self.min_token:
            raise FASTDecodeError("decoded character outside the fitted coefficient range")
        q = (values + self.min_token).reshape(T, D).astype(np.float64)
        return inverse_dct(q / self.scale).astype(np.float32)

    # ------------------------------------------------------------ persistence
    def save(self, directory: str) -> str:
        """Writes ``fast_tokenizer.json`` (the BPE) and ``fast.json`` (scale, range, T, D)."""
        self._require_fitted()
        os.makedirs(directory, exist_ok=True)
        self._tok.save(os.path.join(directory, TOKENIZER_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "scale": self.scale,
            "vocab_size": self.vocab_size,
            "min_frequency": self.min_frequency,
            "min_token": self.min_token,
            "max_token": self.max_token,
            "time_horizon": self.time_horizon,
            "action_dim": self.action_dim,
        }
        with open(os.path.join(directory, META_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        return directory

    @classmethod
    def load(cls, directory: str) -> "FASTTokenizer":
        """Reads a folder written by :meth:`save`.

        Raises FileNotFoundError (missing file) or ValueError (other format version, corrupt JSON).
        """
        from tokenizers import Tokenizer

        meta_path = os.path.join(directory, META_FILE)
        tok_path = os.path.join(directory, TOKENIZER_FILE)
        for path in (meta_path, tok_path):
            if not os.path.exists(path):
                raise FileNotFoundError(f"FAST tokenizer file missing: {path}")
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path}: corrupt JSON ({e})") from e
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
        out = cls(meta["scale"], meta["vocab_size"], meta.get("min_frequency", 2))
        out.min_token, out.max_token = int(meta["min_token"]), int(meta["max_token"])
        out.time_horizon, out.action_dim = int(meta["time_horizon"]), int(meta["action_dim"])
        try:
            out._tok = Tokenizer.from_file(tok_path)
        except Exception as e:  # the Rust side raises a generic Exception on bad JSON
            raise ValueError(f"{tok_path}: unreadable tokenizer ({e})") from e
        return out


def roundtrip_error_bound(scale: float, time_horizon: int, action_dim: int) -> float:
    """Upper bound ``0.5 * sqrt(T * D) / scale`` of ``||decode(encode(x)) - x||_2`` (Frobenius)."""
    return 0.5 * float(np.sqrt(time_horizon * action_dim)) / float(scale)


def fit_fast_tokenizer(chunks: np.ndarray, scale: float = 10.0, vocab_size: int = 1024,
                       min_frequency: int = 2) -> FASTTokenizer:
    """Convenience: ``FASTTokenizer(scale, vocab_size, min_frequency).fit(chunks)``."""
    return FASTTokenizer(scale, vocab_size, min_frequency).fit(chunks)


__all__ = [
    "FASTDecodeError",
    "FASTTokenizer",
    "dct_coefficients",
    "fit_fast_tokenizer",
    "inverse_dct",
    "roundtrip_error_bound",
]
