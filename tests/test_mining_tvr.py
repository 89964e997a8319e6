"""Stagnation mining rules and temporal value-risk targets against hand-built curves and
plain-loop references (DESIGN.md section 4)."""

import numpy as np
import pytest

from uniintervene_jax.labels import (
    abrupt_labels,
    decline_labels,
    get_mining_config,
    guide_trigger_labels,
    mine_stagnation,
    normalize_curve,
    plateau_labels,
    tvr_targets,
    value_deltas,
    value_history,
)


def steps(labels):
    return set(np.flatnonzero(labels).tolist())


# ----------------------------------------------------------------- mining
def test_rising_curve_has_no_labels():
    v = np.linspace(0.0, 1.0, 20)  # du = 1/19 > 0.03 everywhere
    assert steps(mine_stagnation(v)) == set()
    assert steps(mine_stagnation(v, {"rule": "guide"})) == set()


def test_flat_stretch_gives_plateau_exactly_where_expected():
    # 0.0, 0.1, ..., 1.0 (steps 0..10), then flat at 1.0 for steps 11..20.
    v = np.concatenate([np.arange(11) * 0.1, np.ones(10)])
    # Window ending t has deltas j = t-6..t; flat ones are j >= 11, need >= 5 of 7 -> t >= 15;
    # amplitude 1 - u[t-7] <= 0.12 needs u[t-7] >= 0.88 -> t - 7 >= 9 -> t >= 16.
    assert steps(plateau_labels(v)) == set(range(16, 21))
    assert steps(decline_labels(v)) == set()
    assert steps(abrupt_labels(v)) == set()
    assert steps(mine_stagnation(v)) == set(range(16, 21))


def test_decline_labels_after_a_peak():
    # Rise 0.1 per step to 1.0 at step 10, then fall 0.1 per step to 0.0 at step 20.
    v = np.concatenate([np.arange(11) * 0.1, 1.0 - np.arange(1, 11) * 0.1])
    # >= 70% of 7 steps falling needs falling deltas j = t-6..t with j >= 11 to number >= 5
    # -> t >= 15; slope of window u[8..15] = [.8 .9 1 .9 .8 .7 .6 .5] is -2.3/42 < -0.01.
    window = v[8:16]
    assert np.polyfit(np.arange(8), window, 1)[0] == pytest.approx(-2.3 / 42)
    assert steps(decline_labels(v)) == set(range(15, 21))
    assert steps(plateau_labels(v)) == set()
    assert steps(abrupt_labels(v)) == set()
    assert steps(mine_stagnation(v)) == set(range(15, 21))


def test_steady_decline_is_labelled_from_the_first_full_window():
    v = np.linspace(1.0, 0.0, 20)
    assert steps(decline_labels(v)) == set(range(7, 20))
    assert steps(mine_stagnation(v)) == set(range(7, 20))


def test_decline_drop_modes_differ_on_a_rise_then_fall_window():
    # Window: up then down so that first - last is small but max - last is large.
    w = np.array([0.50, 0.60, 0.45, 0.35, 0.30, 0.25, 0.20, 0.48])
    # deltas: +.1 -.15 -.1 -.05 -.05 -.05 +.28 -> 5 of 7 falling; slope check below.
    slope = np.polyfit(np.arange(8), w, 1)[0]
    assert slope <= -0.01
    assert w[0] - w[-1] < 0.05 and w.max() - w[-1] >= 0.05
    assert steps(decline_labels(w, normalize=False, drop_mode="first_last")) == set()
    assert steps(decline_labels(w, normalize=False, drop_mode="max_last")) == {7}


def test_cliff_without_recovery_is_abrupt():
    v = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    # normalised: [0 .2 .4 .6 .8 1 .2 .2 ...]; drop 0.8 at s=6, never back to 0.2 + 0.4.
    assert steps(abrupt_labels(v)) == {6, 7, 8, 9}
    assert steps(plateau_labels(v)) == set()  # amplitude of the windows stays 0.8
    assert steps(decline_labels(v)) == set()  # only 1 of 7 steps going down
    assert steps(mine_stagnation(v)) == {6, 7, 8, 9}


def test_cliff_recovered_within_three_steps_is_not_abrupt():
    v = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert steps(abrupt_labels(v)) == set()  # 0.7 >= 0.2 + 0.8 / 2 at s + 2
    late = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.2, 0.2, 0.2, 0.2, 0.7])
    assert steps(abrupt_labels(late)) == {6, 7, 8, 9}  # recovery at s + 4 is too late
    # Drop at the last step: nothing left to recover on, labelled.
    assert steps(abrupt_labels(np.array([0.0, 0.5, 1.0, 0.0]))) == {3}


def test_constant_curve_is_plateau_everywhere_after_first_window():
    v = np.full(12, 0.37)
    np.testing.assert_array_equal(normalize_curve(v), np.zeros(12))
    assert steps(mine_stagnation(v)) == set(range(7, 12))
    assert steps(mine_stagnation(np.full(5, 0.4))) == set()  # shorter than the window


def test_design_rule_is_invariant_to_affine_rescaling():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = np.cumsum(rng.normal(0.0, 0.05, size=40))
        np.testing.assert_array_equal(mine_stagnation(v), mine_stagnation(3.0 * v + 0.2))


def _guide_reference(values, k=8, eps=0.005):
    # Transcribed from the guide's "Step 3" pseudo-code.
    labels = [0] * len(values)
    for t in range(k, len(values)):
        window = values[t - k:t + 1]
        deltas = [window[i] - window[i - 1] for i in range(1, len(window))]
        shortfall = sum(max(0.0, eps - d) for d in deltas)
        plateau = max(window) - min(window) < 0.03
        decline = sum(d < 0 for d in deltas) >= k // 2
        if shortfall > 0.04 and (plateau or decline):
            labels[t] = 1
    return labels


def test_guide_rule_matches_its_pseudocode():
    rng = np.random.default_rng(1)
    curves = [np.clip(np.cumsum(rng.normal(0.0, s, 30)) + 0.5, 0, 1) for s in (0.005, 0.02, 0.08)]
    curves.append(np.concatenate([np.linspace(0, 0.6, 10), np.full(10, 0.6), np.linspace(0.6, 0.3, 10)]))
    for v in curves:
        want = np.asarray(_guide_reference(list(v)), bool)
        np.testing.assert_array_equal(guide_trigger_labels(v), want)
        np.testing.assert_array_equal(mine_stagnation(v, {"rule": "guide"}), want)
    assert any(np.any(_guide_reference(list(v))) for v in curves)


def test_mining_rejects_bad_input():
    with pytest.raises(ValueError):
        mine_stagnation(np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError):
        mine_stagnation(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        mine_stagnation(np.array([]))
    with pytest.raises(ValueError):
        mine_stagnation(np.zeros(10), {"windw": 8})
    with pytest.raises(ValueError):
        mine_stagnation(np.zeros(10), {"rule": "magic"})
    with pytest.raises(ValueError):
        decline_labels(np.zeros(10), window=1)
    cfg = get_mining_config()
    cfg.window = 4
    assert steps(mine_stagnation(np.full(6, 0.2), cfg)) == {3, 4, 5}


# -------------------------------------------------------------------- TVR
def _tvr_reference(v, K, eps, gamma_r, clip):
    out = []
    for t in range(len(v)):
        total = 0.0
        for i in range(K):
            a = v[max(t - i, 0)]
            b = v[max(t - i - 1, 0)]
            term = eps - (a - b)
            if clip:
                term = max(0.0, term)
            total += gamma_r ** i * term
        out.append((1.0 - v[t]) * total)
    return np.asarray(out)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("K", [1, 3, 8])
def test_tvr_matches_double_loop(clip, K):
    rng = np.random.default_rng(K + 10 * clip)
    for T in (1, 5, 30):
        v = rng.uniform(0.0, 1.0, T)
        got = tvr_targets(v, K=K, eps=0.005, gamma_r=0.9, clip_negative=clip)
        assert got.dtype == np.float32 and got.shape == (T,)
        np.testing.assert_allclose(got, _tvr_reference(v, K, 0.005, 0.9, clip), rtol=1e-5, atol=1e-6)


def test_tvr_hand_values_and_forms():
    # Constant curve: every dV is 0 -> R = (1 - V) * eps * sum_i 0.9^i.
    r = tvr_targets(np.full(4, 0.5))
    np.testing.assert_allclose(r, 0.5 * 0.005 * (1 - 0.9 ** 8) / 0.1, rtol=1e-6)
    # Steady progress of 0.1 per step: signed form negative once the window is inside the
    # episode; the guide's per-term max(0, .) gives exactly 0 there.
    v = np.linspace(0.0, 0.9, 10)
    signed, clipped = tvr_targets(v), tvr_targets(v, clip_negative=True)
    assert np.all(signed[1:] < 0)
    np.testing.assert_allclose(clipped[8:], 0.0, atol=1e-7)
    assert np.all(clipped >= 0) and np.all(clipped >= signed)
    # t = 1 by hand: terms i=0: eps - 0.1, i>=1: eps (padding) ; times (1 - 0.1).
    want = 0.9 * ((0.005 - 0.1) + sum(0.9 ** i * 0.005 for i in range(1, 8)))
    assert signed[1] == pytest.approx(want, rel=1e-5)
    want_clip = 0.9 * sum(0.9 ** i * 0.005 for i in range(1, 8))
    assert clipped[1] == pytest.approx(want_clip, rel=1e-5)


def test_value_history_and_deltas():
    v = np.array([0.1, 0.2, 0.4])
    np.testing.assert_allclose(
        value_history(v, K=2), [[0.1, 0.1, 0.1], [0.1, 0.1, 0.2], [0.1, 0.2, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(value_deltas(v, K=2), [[0, 0], [0, 0.1], [0.1, 0.2]], atol=1e-6)
    h = value_history(np.random.default_rng(0).uniform(size=20), K=8)
    assert h.shape == (20, 9) and h.dtype == np.float32


def test_tvr_rejects_bad_input():
    with pytest.raises(ValueError):
        tvr_targets(np.array([0.2, 1.5]))
    with pytest.raises(ValueError):
        tvr_targets(np.array([0.2, np.nan]))
    with pytest.raises(ValueError):
        tvr_targets(np.array([]))
    with pytest.raises(ValueError):
        tvr_targets(np.array([0.2]), K=0)
    with pytest.raises(ValueError):
        value_history(np.zeros((2, 2)))
