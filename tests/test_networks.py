"""Tests for serl_ext.networks: MLP, ensembles, tanh-Gaussian, encoders, crop, params I/O."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from serl_ext.networks import (
    MLP,
    Critic,
    Ensemble,
    ObservationEncoder,
    ResNet10,
    SmallCNN,
    SpatialLearnedEmbeddings,
    TanhGaussianPolicy,
    check_params_match,
    load_params,
    load_pretrained_encoder,
    random_crop,
    save_params,
    subsample_ensemble,
    subsample_indices,
    tanh_gaussian_log_prob,
    tanh_gaussian_mode,
    tanh_gaussian_sample,
)

KEY = jax.random.PRNGKey(0)


def test_mlp_shapes_and_final_activation():
    x = jax.random.normal(KEY, (5, 3))
    m = MLP((8, 4), use_layer_norm=True)
    p = m.init(KEY, x)
    assert "LayerNorm_0" in p["params"] and "LayerNorm_1" not in p["params"]
    y = m.apply(p, x)
    assert y.shape == (5, 4)
    assert (y < 0).any()  # no final relu
    m2 = MLP((8, 4), activate_final=True)
    y2 = m2.apply(m2.init(KEY, x), x)
    assert (y2 >= 0).all()
    with pytest.raises(ValueError):
        MLP(()).init(KEY, x)


def test_mlp_dropout_only_in_train():
    x = jnp.ones((4, 3))
    m = MLP((16, 2), dropout_rate=0.5)
    p = m.init(KEY, x)
    a = m.apply(p, x)
    b = m.apply(p, x)
    np.testing.assert_array_equal(a, b)
    c = m.apply(p, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.allclose(a, c)


def test_ensemble_members_differ_and_subsample_matches_take():
    feats, acts = jnp.ones((6, 5)), jnp.zeros((6, 2))
    critic_cls = functools.partial(Critic, hidden_dims=(8, 8))
    ens = Ensemble(critic_cls, num=4)
    params = ens.init(KEY, feats, acts)["params"]
    for leaf in jax.tree_util.tree_leaves(params):
        assert leaf.shape[0] == 4
    qs = ens.apply({"params": params}, feats, acts)
    assert qs.shape == (4, 6)
    assert len(np.unique(np.round(np.asarray(qs[:, 0]), 6))) == 4  # independent init

    k = jax.random.PRNGKey(7)
    idx = np.asarray(subsample_indices(k, 2, 4))
    assert len(set(idx.tolist())) == 2 and idx.min() >= 0 and idx.max() < 4
    sub = subsample_ensemble(k, params, 2, 4)
    sub_qs = Ensemble(critic_cls, num=2).apply({"params": sub}, feats, acts)
    np.testing.assert_allclose(sub_qs, np.asarray(qs)[idx], rtol=1e-6)
    assert subsample_ensemble(k, params, None, 4) is params
    with pytest.raises(ValueError):
        subsample_ensemble(k, params, 5, 4)


def _np_tanh_gauss_logp(a, mean, log_std):
    x = np.arctanh(a)
    std = np.exp(log_std)
    logn = -0.5 * ((x - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return np.sum(logn - np.log(1 - a**2), axis=-1)


def test_tanh_gaussian_log_prob_matches_numpy():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(7, 3)).astype(np.float32)
    log_std = rng.uniform(-1.5, 0.5, size=(7, 3)).astype(np.float32)
    a = rng.uniform(-0.95, 0.95, size=(7, 3)).astype(np.float32)
    ours = np.asarray(tanh_gaussian_log_prob(a, mean, log_std))
    np.testing.assert_allclose(ours, _np_tanh_gauss_logp(a.astype(np.float64), mean, log_std), rtol=1e-4, atol=1e-4)

    key = jax.random.PRNGKey(3)
    acts, logp = tanh_gaussian_sample(key, jnp.asarray(mean), jnp.asarray(log_std))
    eps = np.asarray(jax.random.normal(key, mean.shape))
    x = mean + np.exp(log_std) * eps
    np.testing.assert_allclose(acts, np.tanh(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logp, _np_tanh_gauss_logp(np.tanh(x.astype(np.float64)), mean, log_std), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(tanh_gaussian_mode(jnp.asarray(mean)), np.tanh(mean), rtol=1e-6)


def test_tanh_gaussian_log_prob_finite_when_saturated():
    mean = jnp.full((2, 2), 30.0)
    log_std = jnp.full((2, 2), math.log(1e-5))
    a, logp = tanh_gaussian_sample(KEY, mean, log_std)
    assert np.all(np.isfinite(logp))
    assert np.all(np.abs(a) <= 1.0)


def test_policy_log_std_clipped():
    pol = TanhGaussianPolicy((8,), action_dim=2, std_min=1e-5, std_max=5.0)
    feats = jnp.ones((3, 4))
    params = pol.init(KEY, feats)["params"]
    for bias, expect in ((100.0, math.log(5.0)), (-100.0, math.log(1e-5))):
        p = jax.tree_util.tree_map(lambda x: x, params)
        p["Dense_1"] = {"kernel": jnp.zeros_like(params["Dense_1"]["kernel"]), "bias": jnp.full((2,), bias)}
        _, log_std = pol.apply({"params": p}, feats)
        np.testing.assert_allclose(log_std, expect, rtol=1e-6)
    with pytest.raises(ValueError):
        TanhGaussianPolicy((8,), action_dim=2, std_min=1.0, std_max=0.5).init(KEY, feats)


def test_spatial_learned_embeddings_matches_loop():
    x = jax.random.normal(KEY, (2, 3, 4, 5))
    m = SpatialLearnedEmbeddings(num_features=2)
    p = m.init(KEY, x)
    out = np.asarray(m.apply(p, x))
    k = np.asarray(p["params"]["kernel"])
    xn = np.asarray(x)
    ref = np.zeros((2, 5, 2))
    for b in range(2):
        for c in range(5):
            for f in range(2):
                ref[b, c, f] = sum(xn[b, h, w, c] * k[h, w, c, f] for h in range(3) for w in range(4))
    np.testing.assert_allclose(out, ref.reshape(2, 10), rtol=1e-4, atol=1e-5)


def test_backbones_shapes():
    x = jnp.ones((2, 32, 32, 3))
    r = ResNet10(widths=(4, 8, 8, 16))
    y = r.apply(r.init(KEY, x), x)
    assert y.shape == (2, 1, 1, 16)
    s = SmallCNN(features=(4, 8), strides=(2, 2))
    assert s.apply(s.init(KEY, x), x).shape == (2, 8, 8, 8)


@pytest.mark.parametrize("etype", ["small_cnn", "resnet10"])
def test_observation_encoder_per_camera(etype):
    obs = {
        "front": jax.random.randint(KEY, (3, 32, 32, 3), 0, 256).astype(jnp.uint8),
        "wrist": jax.random.randint(jax.random.PRNGKey(1), (3, 32, 32, 3), 0, 256).astype(jnp.uint8),
        "state": jnp.ones((3, 5)),
    }
    enc = ObservationEncoder(etype, ("front", "wrist"), latent_dim=6, widths=(4, 8, 8, 8))
    p = enc.init(KEY, obs)["params"]
    assert set(p) == {"image_front", "image_wrist"}
    y = enc.apply({"params": p}, obs)
    assert y.shape == (3, 2 * 6 + 5) and y.dtype == jnp.float32
    assert np.all(np.abs(y[:, :12]) <= 1.0)  # tanh latents
    np.testing.assert_array_equal(y[:, 12:], 1.0)  # state appended raw
    # uint8 input is divided by 255 inside
    obs_f = dict(obs, front=obs["front"].astype(jnp.float32) / 255.0, wrist=obs["wrist"].astype(jnp.float32) / 255.0)
    np.testing.assert_allclose(enc.apply({"params": p}, obs_f), y, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        enc.apply({"params": p}, {"state": obs["state"], "front": obs["front"]})


def test_state_encoder_has_no_params_and_flattens():
    enc = ObservationEncoder("state")
    obs = {"state": jnp.arange(12.0).reshape(2, 2, 3)}
    v = enc.init(KEY, obs)
    assert not v.get("params")
    np.testing.assert_array_equal(enc.apply(v, obs), np.arange(12.0).reshape(2, 6))
    with pytest.raises(ValueError):
        ObservationEncoder("state", image_keys=("pixels",)).init(KEY, obs)


def test_random_crop_offsets_and_identity():
    n, h, w = 16, 32, 32
    # pixel value encodes (row, col) so each crop reveals its offset
    rows = np.repeat(np.arange(h)[:, None], w, 1)
    cols = np.repeat(np.arange(w)[None, :], h, 0)
    img = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    images = jnp.asarray(np.broadcast_to(img, (n, h, w, 3)))
    out = np.asarray(jax.jit(lambda k, x: random_crop(k, x, pad=4))(KEY, images))
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="edge")
    offsets = []
    for i in range(n):
        dy = int(out[i, 10, 10, 0]) - 10 + 4  # interior pixel reveals the shift
        dx = int(out[i, 10, 10, 1]) - 10 + 4
        assert 0 <= dy <= 8 and 0 <= dx <= 8
        np.testing.assert_array_equal(out[i], padded[dy : dy + h, dx : dx + w])
        offsets.append((dy, dx))
    assert len(set(offsets)) > 4  # per-sample offsets
    np.testing.assert_array_equal(random_crop(KEY, images, pad=0), images)
    # extra leading dims are cropped independently
    out5 = random_crop(KEY, images.reshape(4, 4, h, w, 3), pad=2)
    assert out5.shape == (4, 4, h, w, 3)
    with pytest.raises(ValueError):
        random_crop(KEY, images[0], pad=4)
    with pytest.raises(ValueError):
        random_crop(KEY, images, pad=-1)


@pytest.mark.parametrize("ext", [".msgpack", ".npz"])
def test_pretrained_round_trip(tmp_path, ext):
    x = jnp.ones((1, 16, 16, 3))
    net = ResNet10(widths=(4, 8, 8, 8))
    params = net.init(KEY, x)["params"]
    path = str(tmp_path / f"enc{ext}")
    save_params(path, params)
    loaded = load_pretrained_encoder(path, reference=params)
    check_params_match(params, loaded)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(net.apply({"params": loaded}, x), net.apply({"params": params}, x), rtol=1e-6)
    other = ResNet10(widths=(4, 8, 8, 16)).init(KEY, x)["params"]
    with pytest.raises(ValueError, match="stage3"):
        load_pretrained_encoder(path, reference=other)
    with pytest.raises(FileNotFoundError):
        load_pretrained_encoder(str(tmp_path / f"missing{ext}"))


def test_params_io_errors(tmp_path):
    with pytest.raises(ValueError):
        save_params(str(tmp_path / "x.pt"), {"a": np.zeros(2)})
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError):
        load_params(str(bad))
    with pytest.raises(ValueError, match="dtype"):
        check_params_match({"a": np.zeros(2, np.float32)}, {"a": np.zeros(2, np.float64)})
    with pytest.raises(ValueError, match="missing"):
        check_params_match({"a": np.zeros(2), "b": np.zeros(1)}, {"a": np.zeros(2)})


def test_critic_activation_option_matches_a_hand_forward_pass():
    """Critic(activation=...) = Dense -> LayerNorm -> act per hidden layer -> Dense(1),
    recomputed in numpy from the initialised parameters; unknown names are refused."""
    import jax
    import jax.numpy as jnp

    from serl_ext.networks.heads import Critic

    feats = jnp.asarray(np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3))
    acts = jnp.asarray(np.array([[0.5, -0.25], [0.1, 0.9]], np.float32))
    acts_fn = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}
    outputs = {}
    for name, fn in acts_fn.items():
        critic = Critic((5, 4), use_layer_norm=True, activation=name)
        params = critic.init(jax.random.PRNGKey(0), feats, acts)["params"]
        got = np.asarray(critic.apply({"params": params}, feats, acts))
        x = np.concatenate([np.asarray(feats), np.asarray(acts)], axis=-1).astype(np.float64)
        mlp = params["MLP_0"]
        for i in range(2):
            dense, ln = mlp[f"Dense_{i}"], mlp[f"LayerNorm_{i}"]
            x = x @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
            x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
            x = fn(x * np.asarray(ln["scale"]) + np.asarray(ln["bias"]))
        want = (x @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(params["Dense_0"]["bias"]))[:, 0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        outputs[name] = got
    assert not np.allclose(outputs["tanh"], outputs["relu"])
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        Critic((4,), activation="sigmoid").init(jax.random.PRNGKey(0), feats, acts)


def test_sac_agent_builds_with_tanh_and_rejects_an_unknown_activation():
    import jax

    from serl_ext.agents.sac import SACAgent, get_default_config

    obs = {"state": np.zeros(3, np.float32)}
    config = get_default_config()
    config.hidden_dims = (8, 8)
    config.activation = "tanh"
    agent = SACAgent.create(jax.random.PRNGKey(0), obs, np.zeros(2, np.float32), config)
    assert agent.config.activation == "tanh"
    config.activation = "sigmoid"
    with pytest.raises(ValueError, match="unknown activation"):
        SACAgent.create(jax.random.PRNGKey(0), obs, np.zeros(2, np.float32), config)
