"""Tests for uniintervene_jax.recovery.fast (FAST action tokenizer)."""

import json
import math
import os

import numpy as np
import pytest

from uniintervene_jax.recovery.fast import (
    FASTDecodeError,
    FASTTokenizer,
    dct_coefficients,
    inverse_dct,
    roundtrip_error_bound,
)

T, D = 8, 3


def smooth_chunks(n, seed=0, t=T, d=D):
    """Random smooth chunks in [-1, 1]: low-frequency sinusoids plus an offset."""
    rng = np.random.default_rng(seed)
    time = np.linspace(0.0, 1.0, t)[None, :, None]
    amp = rng.uniform(-0.5, 0.5, size=(n, 1, d))
    freq = rng.uniform(0.2, 1.5, size=(n, 1, d))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, d))
    off = rng.uniform(-0.4, 0.4, size=(n, 1, d))
    return (off + amp * np.sin(2 * np.pi * freq * time + phase)).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return FASTTokenizer(scale=10.0, vocab_size=300).fit(smooth_chunks(300, seed=0))


def test_dct_matches_cosine_sum_loop():
    x = np.random.default_rng(1).normal(size=(T, D))
    ref = np.zeros((T, D))
    for d in range(D):
        for k in range(T):
            w = 1.0 if k == 0 else 2.0
            s = 0.0
            for n in range(T):
                s += x[n, d] * math.cos(math.pi * k * (2 * n + 1) / (2 * T))
            ref[k, d] = math.sqrt(w / T) * s
    np.testing.assert_allclose(dct_coefficients(x), ref, atol=1e-12)
    np.testing.assert_allclose(inverse_dct(ref), x, atol=1e-12)


def test_quantize_and_row_major_order(tokenizer):
    # A constant chunk has only frequency-0 energy: the first D integers of the string.
    x = np.zeros((T, D))
    x[:, 0], x[:, 1], x[:, 2] = 0.1, -0.2, 0.3
    q = tokenizer.quantize(x)
    np.testing.assert_array_equal(q[0], np.rint(10 * np.sqrt(T) * np.array([0.1, -0.2, 0.3])))
    np.testing.assert_array_equal(q[1:], 0)
    s = tokenizer._to_string(q)
    assert len(s) == T * D
    assert [ord(c) + tokenizer.min_token for c in s[:D]] == q[0].tolist()


def test_roundtrip_within_bound(tokenizer):
    chunks = smooth_chunks(50, seed=7)
    bound = roundtrip_error_bound(10.0, T, D)
    assert bound == pytest.approx(0.5 / 10.0 * math.sqrt(T * D))
    token_lists = tokenizer.encode_batch(chunks)
    for x, toks in zip(chunks, token_lists):
        assert toks == tokenizer.encode(x)
        assert all(0 <= t < tokenizer.actual_vocab_size for t in toks)
        y = tokenizer.decode(toks)
        assert y.shape == (T, D) and y.dtype == np.float32
        if tokenizer.in_range(x):
            assert np.linalg.norm(y - x) <= bound + 1e-5
    # BPE actually compresses: fewer tokens than coefficients on average.
    assert np.mean([len(t) for t in token_lists]) < T * D


def test_out_of_range_is_clamped(tokenizer):
    x = np.full((T, D), 50.0)
    assert not tokenizer.in_range(x)
    y = tokenizer.decode(tokenizer.encode(x))
    assert y.shape == (T, D)
    assert np.all(np.isfinite(y)) and np.abs(y).max() < 50.0


def test_decode_checks_shape_and_corruption(tokenizer):
    x = smooth_chunks(1, seed=3)[0]
    toks = tokenizer.encode(x)
    with pytest.raises(FASTDecodeError, match="expected T\\*D"):
        tokenizer.decode(toks, time_horizon=T + 1)
    with pytest.raises(FASTDecodeError):
        tokenizer.decode(toks[:-1] if len(toks) > 1 else [])
    with pytest.raises(FASTDecodeError):
        tokenizer.decode(toks + toks)
    with pytest.raises(FASTDecodeError, match="outside"):
        tokenizer.decode(toks[:-1] + [tokenizer.actual_vocab_size + 5])
    with pytest.raises(FASTDecodeError):
        tokenizer.decode([])
    assert issubclass(FASTDecodeError, ValueError)


def test_bad_inputs(tokenizer):
    with pytest.raises(ValueError):
        tokenizer.encode(np.zeros((T + 1, D)))
    with pytest.raises(ValueError):
        tokenizer.encode(np.full((T, D), np.nan))
    with pytest.raises(ValueError):
        FASTTokenizer().fit(np.zeros((0, T, D)))
    with pytest.raises(ValueError):
        FASTTokenizer().fit(np.zeros((T, D)))
    with pytest.raises(ValueError):
        FASTTokenizer(scale=0.0)
    with pytest.raises(ValueError):
        FASTTokenizer(vocab_size=100)
    with pytest.raises(RuntimeError):
        FASTTokenizer().encode(np.zeros((T, D)))


def test_save_load_roundtrip(tokenizer, tmp_path):
    tokenizer.save(str(tmp_path))
    loaded = FASTTokenizer.load(str(tmp_path))
    assert (loaded.scale, loaded.min_token, loaded.max_token) == (10.0, tokenizer.min_token, tokenizer.max_token)
    assert (loaded.time_horizon, loaded.action_dim) == (T, D)
    for x in smooth_chunks(10, seed=9):
        toks = tokenizer.encode(x)
        assert loaded.encode(x) == toks
        np.testing.assert_array_equal(loaded.decode(toks), tokenizer.decode(toks))
    meta_path = os.path.join(str(tmp_path), "fast.json")
    meta = json.load(open(meta_path))
    meta["format_version"] = 99
    json.dump(meta, open(meta_path, "w"))
    with pytest.raises(ValueError, match="format_version"):
        FASTTokenizer.load(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        FASTTokenizer.load(str(tmp_path / "nowhere"))
