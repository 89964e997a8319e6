"""Issue 17 item 3: the success classifier, its metrics, the reward wrapper and the training
launcher at tiny settings."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import jax
import numpy as np
import pytest

from serl_ext.envs.frames import frames_from_episodes, stratified_holdout
from serl_ext.envs.reward_classifier import (
    ClassifierSpec,
    RewardClassifier,
    RewardClassifierWrapper,
    binary_metrics,
    train_classifier,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = 16


def _synthetic(num_episodes=16, per_episode=8, seed=0):
    """Noise frames; success frames carry a bright square top-left (separable)."""
    r = np.random.default_rng(seed)
    n = num_episodes * per_episode
    frames = r.integers(0, 90, (n, S, S, 3), dtype=np.uint8)
    labels = np.zeros(n, bool)
    labels[np.arange(n) % per_episode >= per_episode // 2] = True
    labels[np.arange(n) // per_episode % 4 == 0] = False  # some episodes never succeed
    frames[labels, 2:8, 2:8, :] = 255
    return frames, labels, np.repeat(np.arange(num_episodes), per_episode)


def _spec(**kw):
    return ClassifierSpec(image_keys=("pixels",), image_size=(S, S), widths=(4, 8), latent_dim=8, hidden_dims=(16,),
                          **kw)


def test_classifier_learns_a_separable_set_and_round_trips(tmp_path):
    frames, labels, episode = _synthetic()
    train, held = stratified_holdout(episode, labels, 0.25, seed=0)
    assert labels[held].any() and (~labels[held]).any()
    assert not set(episode[train]) & set(episode[held])
    clf, history = train_classifier(_spec(), {"pixels": frames[train]}, labels[train], steps=120, batch_size=16,
                                    learning_rate=3e-3, crop_pad=0)
    probs = clf.predict_proba({"pixels": frames[held]})
    assert probs.shape == (held.sum(),) and probs.dtype == np.float32
    m = binary_metrics(probs, labels[held])
    assert m["accuracy"] >= 0.95 and m["precision"] >= 0.9 and m["recall"] >= 0.9, (m, history)
    assert isinstance(clf.predict_proba({"pixels": frames[0]}), float)

    clf.save(str(tmp_path / "clf"))
    loaded = RewardClassifier.load(str(tmp_path / "clf"))
    np.testing.assert_array_equal(loaded.predict_proba({"pixels": frames[held]}), probs)
    with pytest.raises(ValueError, match="image key 'pixels'"):
        loaded.predict_proba({"state": np.zeros(3)})
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        loaded.predict_proba({"pixels": np.zeros((8, 8, 3), np.uint8)})
    with pytest.raises(FileNotFoundError, match="train_reward_classifier"):
        RewardClassifier.load(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="success and failure"):
        train_classifier(_spec(), {"pixels": frames[:2]}, np.zeros(2, bool), steps=1)

    # A frozen backbone stays exactly the weights given.
    backbone = jax.tree_util.tree_map(np.asarray, clf.params["image_pixels"]["backbone"])
    frozen, _ = train_classifier(_spec(freeze_backbone=True), {"pixels": frames[train]}, labels[train],
                                 backbone=backbone, steps=3, batch_size=8)
    for a, b in zip(jax.tree_util.tree_leaves(backbone), jax.tree_util.tree_leaves(frozen.params["image_pixels"]["backbone"])):
        np.testing.assert_array_equal(a, np.asarray(b))
    with pytest.raises(ValueError, match="needs backbone"):
        train_classifier(_spec(freeze_backbone=True), {"pixels": frames}, labels, steps=1)


def test_binary_metrics_reference_values():
    m = binary_metrics(np.array([0.9, 0.8, 0.2, 0.6, 0.1]), np.array([True, False, True, False, False]), 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 2, 1, 1)
    assert m["accuracy"] == pytest.approx(0.4) and m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(0.5) and m["f1"] == pytest.approx(0.4)
    assert binary_metrics(np.zeros(3), np.zeros(3, bool))["precision"] == 0.0


def test_frames_from_recorded_episodes_use_the_success_labels():
    obs = {"pixels": np.zeros((4, S, S, 3), np.uint8)}
    with_steps = {"observations": obs, "success": np.array([False, True, True])}
    only_meta = {"observations": obs, "metadata": {"success": True}}
    failed = {"observations": obs, "metadata": {"success": False}}
    f = frames_from_episodes([with_steps, only_meta, failed])
    assert f["success"].tolist() == [False, False, True, True, False, False, False, True] + [False] * 4
    assert f["episode"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ValueError, match="image_obs"):
        frames_from_episodes([{"observations": {"state": np.zeros((4, 3))}}])


class _StubEnv(gym.Env):
    """Frames + a scripted success flag; terminates itself at step ``end_at`` (0: never)."""

    def __init__(self, successes, end_at=0, key="pixels"):
        self.observation_space = gym.spaces.Dict({key: gym.spaces.Box(0, 255, (S, S, 3), np.uint8),
                                                  "state": gym.spaces.Box(-1, 1, (3,), np.float32)})
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.successes, self.end_at, self.key, self.t = list(successes), end_at, key, 0

    def _obs(self):
        return {self.key: np.full((S, S, 3), self.t, np.uint8), "state": np.zeros(3, np.float32)}

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.5, self.t == self.end_at, False, {"success": self.successes[self.t - 1]}


class _StubClassifier:
    """p(success) read from the frame's pixel value (the step index)."""

    image_keys = ("pixels",)
    threshold = 0.5

    def __init__(self, probs):
        self.probs = probs

    def predict_proba(self, obs):
        return self.probs[int(obs["pixels"][0, 0, 0]) - 1]


def _run(env, steps):
    env.reset()
    out = []
    for _ in range(steps):
        _, r, term, trunc, info = env.step(np.zeros(2, np.float32))
        out.append((r, term, info))
        if term or trunc:
            break
    return out


def test_wrapper_reward_termination_and_info():
    probs = [0.1, 0.55, 0.9, 0.2, 0.95]
    truth = [False, False, True, True, False]
    steps = _run(RewardClassifierWrapper(_StubEnv(truth), _StubClassifier(probs)), 5)
    assert [s[0] for s in steps] == [0.0, 1.0] and [s[1] for s in steps] == [False, True]
    info = steps[1][2]
    assert info["classifier_prob"] == 0.55 and info["classifier_success"] and not info["true_success"]
    assert info["env_reward"] == 0.5 and info["success"] is False  # the simulator's flag is kept

    steps = _run(RewardClassifierWrapper(_StubEnv(truth), _StubClassifier(probs), threshold=0.8), 5)
    assert [s[0] for s in steps] == [0.0, 0.0, 1.0] and steps[-1][1] and steps[-1][2]["true_success"]

    steps = _run(RewardClassifierWrapper(_StubEnv(truth), _StubClassifier(probs), threshold=0.8,
                                         terminate_on_success=False), 5)
    assert [s[0] for s in steps] == [0.0, 0.0, 1.0, 0.0, 0.0] and not any(s[1] for s in steps)

    steps = _run(RewardClassifierWrapper(_StubEnv(truth, end_at=2), _StubClassifier(probs), threshold=0.95), 5)
    assert [(s[0], s[1]) for s in steps] == [(0.0, False), (0.0, True)]  # the inner end passes through

    with pytest.raises(ValueError, match="image_obs=True"):
        RewardClassifierWrapper(_StubEnv(truth, key="front"), _StubClassifier(probs))
    with pytest.raises(ValueError, match="threshold"):
        RewardClassifierWrapper(_StubEnv(truth), _StubClassifier(probs), threshold=1.0)
    sized = RewardClassifier(ClassifierSpec(image_size=(32, 32), widths=(4,), latent_dim=4, hidden_dims=()), None)
    with pytest.raises(ValueError, match="image_size=32"):
        RewardClassifierWrapper(_StubEnv(truth), sized)


def test_train_reward_classifier_script_end_to_end(tmp_path):
    from serl_ext.envs import check_rendering

    reason = check_rendering()
    if reason is not None:
        pytest.skip(f"headless rendering unavailable: {reason}")
    out = str(tmp_path / "clf")
    run = subprocess.run(
        [sys.executable, "launchers/train_reward_classifier.py", "--task=pick-place", f"--out={out}", "--episodes=6",
         "--episode_steps=20", f"--size={S}", "--widths=4,8", "--latent_dim=8", "--hidden_dims=16", "--steps=4",
         "--batch_size=8", "--expert_fraction=1.0", "--expert_noise=0.0,0.0"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("accuracy", "precision", "recall"):
        assert 0.0 <= metrics["heldout"][key] <= 1.0
    assert metrics["heldout_frames"] > 0 and metrics["positive_fraction"] > 0
    assert os.path.isfile(os.path.join(out, "metrics.md"))

    from serl_ext.envs import make_env

    clf = RewardClassifier.load(out)
    env = RewardClassifierWrapper(make_env("pick-place", 0, image_obs=True, image_size=S, terminate_on_success=False),
                                  clf)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(4, np.float32))
    assert reward in (0.0, 1.0) and 0.0 <= info["classifier_prob"] <= 1.0 and "true_success" in info
    with pytest.raises(ValueError, match="image_obs=True"):
        RewardClassifierWrapper(make_env("pick-place", 0), clf)


def test_training_env_takes_the_classifier_reward_and_evaluation_keeps_the_true_one(tmp_path, monkeypatch):
    """config.env.reward_classifier wraps the actor's training env (with_operator=True) only."""
    from configs.train import get_config
    from serl_ext.envs import check_rendering
    from serl_ext.envs import reward_classifier as rc
    from serl_ext.loop import common

    reason = check_rendering()
    if reason is not None:
        pytest.skip(f"headless rendering unavailable: {reason}")
    loaded = []

    class Sure:
        image_keys, threshold = ("pixels",), 0.5

        def predict_proba(self, obs):
            return 1.0

    monkeypatch.setattr(rc.RewardClassifier, "load", classmethod(lambda cls, d: loaded.append(d) or Sure()))
    config = get_config("pick-place,hil_serl_pixels")
    config.env.image_size = 16
    config.env.reward_classifier = str(tmp_path / "clf")
    train_env = common.make_env(config, 0, with_operator=True)
    train_env.reset(seed=0)
    _, reward, terminated, _, info = train_env.step(np.zeros(train_env.action_space.shape, np.float32))
    assert loaded == [str(tmp_path / "clf")]
    assert reward == 1.0 and terminated and info["classifier_prob"] == 1.0 and info["true_success"] is False
    eval_env = common.make_env(config, 0, with_operator=False)
    eval_env.reset(seed=0)
    _, reward, terminated, _, info = eval_env.step(np.zeros(eval_env.action_space.shape, np.float32))
    assert "classifier_prob" not in info and reward == 0.0 and not terminated
    train_env.close()
    eval_env.close()
