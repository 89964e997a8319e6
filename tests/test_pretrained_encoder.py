"""Issue 17 item 2: the pretrained-weights folder, its errors, and the frozen backbone in the
agents (SAC critic / target, BC), plus the pre-training launcher at tiny settings."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from serl_ext.agents import bc, common, sac
from serl_ext.networks import ImageEncoder, SmallCNN, load_pretrained_encoder, save_params
from serl_ext.networks.pretrained import load_encoder_weights, read_encoder_meta, save_encoder_weights

SIZE = 24
WIDTHS = (4, 8)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _backbone(widths=WIDTHS, seed=42):
    net = SmallCNN(features=widths, strides=(2,) * len(widths))
    return net.init(jax.random.PRNGKey(seed), jnp.ones((1, SIZE, SIZE, 3)))["params"]


def _weights(tmp_path, name="w", widths=WIDTHS):
    return save_encoder_weights(str(tmp_path / name), _backbone(widths), architecture="small_cnn", widths=widths,
                                input_size=(SIZE, SIZE), image_mean=MEAN, image_std=STD, info={"objective": "test"})


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _same(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_weights_folder_round_trip(tmp_path):
    folder = _weights(tmp_path)
    assert sorted(os.listdir(folder)) == ["backbone.msgpack", "encoder.json"]
    for path in (folder, os.path.join(folder, "encoder.json")):
        params, meta = load_encoder_weights(path, architecture="small_cnn", widths=WIDTHS, reference=_backbone())
        assert _same(params, _backbone())
        assert meta.architecture == "small_cnn" and meta.widths == WIDTHS and meta.input_size == (SIZE, SIZE)
        assert meta.image_mean == MEAN and meta.image_std == STD and meta.info["objective"] == "test"
    # The value model's loader reads the folder too; a bare file has no metadata.
    assert _same(load_pretrained_encoder(folder, reference=_backbone()), _backbone())
    save_params(str(tmp_path / "bare.msgpack"), _backbone())
    assert read_encoder_meta(str(tmp_path / "bare.msgpack")) is None
    with pytest.warns(UserWarning, match="trained on"):
        load_encoder_weights(folder, input_size=(32, 32))


def test_weights_errors_are_clear(tmp_path):
    folder = _weights(tmp_path)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_encoder_weights(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        load_encoder_weights(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="small_cnn backbone, the encoder is resnet10"):
        load_encoder_weights(folder, architecture="resnet10", widths=(4, 4, 8, 8))
    with pytest.raises(ValueError, match="widths"):
        load_encoder_weights(folder, architecture="small_cnn", widths=(4, 16))
    with pytest.raises(ValueError, match="pretrained_encoder.*shape"):
        load_encoder_weights(folder, reference=_backbone((4, 16)))
    with pytest.raises(ValueError, match="backbone.*shape"):  # params that are not the architecture named
        save_encoder_weights(str(tmp_path / "bad"), _backbone((4, 16)), architecture="small_cnn", widths=WIDTHS,
                             input_size=(SIZE, SIZE), image_mean=MEAN, image_std=STD)
    nan = jax.tree_util.tree_map(lambda x: np.full(np.shape(x), np.nan, np.float32), _backbone())
    save_params(os.path.join(folder, "backbone.msgpack"), nan)
    with pytest.raises(ValueError, match="NaN"):
        load_encoder_weights(folder)
    meta_path = os.path.join(folder, "encoder.json")
    doc = json.load(open(meta_path))
    json.dump(dict(doc, format=2), open(meta_path, "w"))
    with pytest.raises(ValueError, match="format 2"):
        read_encoder_meta(folder)
    json.dump(dict(doc, image_std=[0.1, 0.0, 0.1]), open(meta_path, "w"))
    with pytest.raises(ValueError, match="image_std"):
        read_encoder_meta(folder)
    open(meta_path, "w").write("{not json")
    with pytest.raises(ValueError, match="could not read"):
        read_encoder_meta(folder)


def test_image_encoder_normalisation_is_the_weights_one():
    images = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    plain = ImageEncoder("small_cnn", 8, 2, WIDTHS)
    normed = ImageEncoder("small_cnn", 8, 2, WIDTHS, image_mean=MEAN, image_std=STD)
    params = plain.init(jax.random.PRNGKey(0), images)
    by_hand = (images.astype(np.float32) / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    np.testing.assert_allclose(normed.apply(params, images), plain.apply(params, jnp.asarray(by_hand)), atol=1e-6)
    with pytest.raises(ValueError, match="both"):
        ImageEncoder("small_cnn", 8, 2, WIDTHS, image_mean=MEAN).init(jax.random.PRNGKey(0), images)


def _image_config(get_config, folder, freeze=True):
    c = get_config()
    c.hidden_dims = (8, 8)
    c.encoder.type = "small_cnn"
    c.encoder.image_keys = ("pixels",)
    c.encoder.latent_dim = 8
    c.encoder.widths = WIDTHS
    c.encoder.num_spatial_features = 2
    c.encoder.pretrained_path = folder
    c.encoder.freeze = freeze
    return c


def _example():
    return {"state": np.zeros(4, np.float32), "pixels": np.zeros((SIZE, SIZE, 3), np.uint8)}


def _batch(n=8, seed=0):
    r = np.random.default_rng(seed)

    def obs():
        return {"state": r.normal(size=(n, 4)).astype(np.float32),
                "pixels": r.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)}

    return {"observations": obs(), "next_observations": obs(), "actions": r.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": np.ones(n, np.float32), "masks": np.ones(n, np.float32)}


def test_frozen_pretrained_sac_backbone_gets_no_update(tmp_path):
    folder = _weights(tmp_path)
    c = _image_config(sac.get_default_config, folder)
    c.update_order = "upstream"  # one critic-only step and one full step: both Polyak call sites
    agent = sac.SACAgent.create(jax.random.PRNGKey(0), _example(), np.zeros(2, np.float32), c)
    enc_def = agent.nets.encoder
    assert enc_def.image_mean == MEAN and enc_def.image_std == STD and enc_def.freeze_backbone
    file_backbone = _backbone()
    before = agent.critic.params["encoder"]["image_pixels"]
    assert _same(before["backbone"], file_backbone)
    # The backbone is out of Adam: no moment state for it (full Adam has 2 moments per leaf).
    n_params = len(_leaves(agent.critic.params))
    n_backbone = len(_leaves(file_backbone))
    n_opt = len(_leaves(agent.critic.opt_state))
    assert n_opt == 2 * (n_params - n_backbone) + 1  # + Adam's step count

    new, info = agent.update(_batch(), utd_ratio=2)
    assert all(np.isfinite(float(v)) for v in info.values())
    after = new.critic.params["encoder"]["image_pixels"]
    assert _same(after["backbone"], file_backbone)
    assert _same(new.target_critic_params["encoder"]["image_pixels"]["backbone"], file_backbone)
    assert not _same(after["proj"], before["proj"])  # the rest of the encoder trains
    assert not _same(new.actor.params, agent.actor.params)
    # No gradient reaches the backbone (stop_gradient), the rest of the encoder gets one.
    grads, _ = jax.grad(agent._critic_loss, has_aux=True)(
        agent.critic.params, common.check_batch(_batch(), agent.obs_spec, 2, 1), jax.random.PRNGKey(1))
    g = grads["encoder"]["image_pixels"]
    assert all(np.all(x == 0) for x in _leaves(g["backbone"]))
    assert any(np.any(x != 0) for x in _leaves(g["proj"]))

    # A checkpoint of the frozen agent restores into a template of the same config.
    from serl_ext.loop.checkpoint import Checkpointer
    from serl_ext.loop.common import make_buffer

    spec = {"state": ((4,), np.float32), "pixels": ((SIZE, SIZE, 3), np.uint8)}
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(1, new, {"replay": make_buffer(spec, 2, 4, seed=0).state_dict()}, {"learner_step": 1})
    restored, _, _ = ckpt.restore(agent)
    ckpt.close()
    assert _same(restored.critic.params, new.critic.params) and _same(restored.critic.opt_state, new.critic.opt_state)


def test_frozen_bc_backbone_and_config_checks(tmp_path):
    folder = _weights(tmp_path)
    c = _image_config(bc.get_default_config, folder)
    agent = bc.BCAgent.create(jax.random.PRNGKey(0), _example(), np.zeros(2, np.float32), c)
    b = _batch()
    new, _ = agent.update({"observations": b["observations"], "actions": b["actions"]})
    enc = new.actor.params["encoder"]["image_pixels"]
    assert _same(enc["backbone"], _backbone())
    assert not _same(enc["proj"], agent.actor.params["encoder"]["image_pixels"]["proj"])

    c = sac.get_default_config()
    c.encoder.freeze = True
    with pytest.raises(ValueError, match="no backbone to freeze"):
        common.validate_encoder_config(c.encoder, {"state": np.zeros(3, np.float32)})
    c = _image_config(sac.get_default_config, folder)
    c.encoder.type = "resnet10"
    with pytest.raises(ValueError, match="holds a small_cnn backbone"):
        common.validate_encoder_config(c.encoder, _example())
    c = _image_config(sac.get_default_config, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        common.validate_encoder_config(c.encoder, _example())


def _launcher(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "launchers", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrain_encoder_script_writes_loadable_weights(tmp_path):
    from serl_ext.envs import check_rendering

    reason = check_rendering()
    if reason is not None:
        pytest.skip(f"headless rendering unavailable: {reason}")
    out = str(tmp_path / "weights")
    report = _launcher("pretrain_encoder").pretrain_encoder(
        "pick-place", out, frames=60, encoder="small_cnn", size=16, widths=WIDTHS, steps=5, batch_size=8,
        episode_steps=9, holdout=0.3)
    assert np.isfinite(report["heldout_loss"]) and np.isfinite(report["heldout_baseline_loss"])
    assert report["frames"] == 60 and report["train_frames"] + report["heldout_frames"] == 60
    assert os.path.isfile(os.path.join(out, "pretrain_report.md"))
    meta = read_encoder_meta(out)
    assert meta.architecture == "small_cnn" and meta.widths == WIDTHS and meta.input_size == (16, 16)
    assert meta.info["objective"] == "privileged_state_regression" and all(s > 0 for s in meta.image_std)
    c = _image_config(sac.get_default_config, out)
    example = {"state": np.zeros(4, np.float32), "pixels": np.zeros((16, 16, 3), np.uint8)}
    agent = sac.SACAgent.create(jax.random.PRNGKey(0), example, np.zeros(2, np.float32), c)
    params, _ = load_encoder_weights(out)
    assert _same(agent.critic.params["encoder"]["image_pixels"]["backbone"], params)


def test_pretrain_encoder_on_the_front_and_the_wrist_camera(tmp_path):
    """--image_keys=front,wrist: the frames come from both cameras (half each, the first takes
    the remainder), and they differ, so the one backbone has seen both views."""
    from serl_ext.envs import check_rendering
    from serl_ext.envs.frames import collect_frames

    reason = check_rendering()
    if reason is not None:
        pytest.skip(f"headless rendering unavailable: {reason}")
    out = str(tmp_path / "weights")
    mod = _launcher("pretrain_encoder")
    report = mod.pretrain_encoder("pick-place", out, frames=41, encoder="small_cnn", size=16, widths=WIDTHS, steps=3,
                                  batch_size=8, episode_steps=9, holdout=0.3, image_keys=["front", "wrist"])
    assert report["frames_per_key"] == {"front": 21, "wrist": 20} and report["frames"] == 41
    assert report["camera"] == "front,wrist" and "cameras: front 21, wrist 20" in open(
        os.path.join(out, "pretrain_report.md")).read()
    front = collect_frames("pick-place", 5, image_size=16, image_key="front", episode_steps=9)["pixels"]
    wrist = collect_frames("pick-place", 5, image_size=16, image_key="wrist", episode_steps=9)["pixels"]
    assert np.abs(front.astype(int) - wrist.astype(int)).mean() > 5  # two different views
    with pytest.raises(ValueError, match="image_keys"):
        mod.pretrain_encoder("pick-place", out, frames=10, image_keys=[])
