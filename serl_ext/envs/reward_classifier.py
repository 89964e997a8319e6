"""Binary success classifier on camera frames, and the wrapper that makes it the env's reward.

HiL-SERL (``train_reward_classifier.py``) replaces a real robot's success check with a
classifier on the camera images; this module does the same for any env with image
observations:

* :class:`SuccessClassifierNet`: per camera the agent's :class:`ImageEncoder` (backbone ->
  spatial embedding -> Dense -> LayerNorm -> tanh; the backbone frozen when it comes from a
  pretrained weights folder, else a SmallCNN trained from scratch), camera latents
  concatenated, then an MLP (ReLU) and one logit. ``p(success | frames) = sigmoid(logit)``.
* :func:`train_classifier`: binary cross-entropy on balanced batches (half positive frames,
  half negative; HiL-SERL samples its success and failure buffers equally), the agent's random
  crop, Adam; frozen backbone left out of the optimiser.
* :class:`RewardClassifier`: the trained model, saved to and loaded from a folder alone
  (``classifier.json`` + ``params.msgpack``, backbone included).
* :class:`RewardClassifierWrapper`: reward and termination from the classifier, the
  simulator's success kept in ``info["true_success"]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import flax.serialization
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax

from serl_ext.files import atomic_write
from serl_ext.networks.augment import augment_observations
from serl_ext.networks.encoders import ImageEncoder
from serl_ext.networks.params import check_params_match, to_numpy_tree

SPEC_FILE = "classifier.json"
PARAMS_FILE = "params.msgpack"
CLASSIFIER_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """Architecture of a success classifier (stored in ``classifier.json``).

    Attributes:
      image_keys: camera keys read, e.g. ``("pixels",)``; frames uint8 ``(H, W, 3)``.
      image_size: ``(H, W)`` in pixels.
      encoder_type: "small_cnn" or "resnet10".
      widths: backbone widths (None = the class default).
      image_mean, image_std: per-channel normalisation of ``uint8 / 255`` (a pretrained
        backbone's; None = none).
      freeze_backbone: the backbone gets no gradient (pretrained weights).
      latent_dim, num_spatial_features: of each camera's :class:`ImageEncoder`.
      hidden_dims: MLP widths of the head.
      threshold: default decision threshold on ``p(success)``, in (0, 1).
      encoder_weights: the weights folder the backbone came from ("" = trained from scratch;
        informational, the weights are in the classifier's params).
    """

    image_keys: Tuple[str, ...] = ("pixels",)
    image_size: Tuple[int, int] = (64, 64)
    encoder_type: str = "small_cnn"
    widths: Optional[Tuple[int, ...]] = None
    image_mean: Optional[Tuple[float, ...]] = None
    image_std: Optional[Tuple[float, ...]] = None
    freeze_backbone: bool = False
    latent_dim: int = 64
    num_spatial_features: int = 8
    hidden_dims: Tuple[int, ...] = (256,)
    threshold: float = 0.5
    encoder_weights: str = ""

    def to_json(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ClassifierSpec":
        """Raises ValueError for unknown fields or a bad threshold."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise ValueError(f"unknown classifier spec fields {unknown}")
        kw = {}
        for k, v in raw.items():
            kw[k] = tuple(v) if isinstance(v, list) else v
        spec = cls(**kw)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise ValueError for an inconsistent spec."""
        if not self.image_keys:
            raise ValueError("a classifier needs at least one image key")
        if self.encoder_type not in ("small_cnn", "resnet10"):
            raise ValueError(f"encoder_type must be small_cnn or resnet10, got {self.encoder_type!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if len(tuple(self.image_size)) != 2:
            raise ValueError(f"image_size must be (H, W), got {self.image_size}")


class SuccessClassifierNet(nn.Module):
    """Frames -> success logit (module docstring).

    Input: dict with uint8 ``(B, H, W, 3)`` per ``spec.image_keys`` (other keys ignored).
    Output float32 ``(B,)`` logits. Params: ``image_<key>`` (ImageEncoder: ``backbone``,
    ``spatial``, ``proj``, ``proj_norm``), ``head_<i>``, ``logit``.
    Raises ValueError on a missing key.
    """

    spec: ClassifierSpec

    @nn.compact
    def __call__(self, observations: Mapping[str, jax.Array]) -> jax.Array:
        s = self.spec
        parts = []
        for key in s.image_keys:
            if key not in observations:
                raise ValueError(f"classifier needs image key {key!r}; observation keys {sorted(observations)}")
            parts.append(ImageEncoder(s.encoder_type, int(s.latent_dim), int(s.num_spatial_features), s.widths,
                                      image_mean=s.image_mean, image_std=s.image_std,
                                      freeze_backbone=bool(s.freeze_backbone), name=f"image_{key}")(observations[key]))
        x = jnp.concatenate(parts, axis=-1)
        for i, h in enumerate(s.hidden_dims):
            x = nn.relu(nn.Dense(int(h), name=f"head_{i}")(x))
        return nn.Dense(1, name="logit")(x)[:, 0]


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> Dict[str, float]:
    """Accuracy, precision, recall and F1 of ``probs >= threshold`` against ``labels``.

    ``probs`` float (N,), ``labels`` bool (N,). Precision (recall) is 0.0 when nothing was
    predicted (is) positive. Returns also ``tp``, ``fp``, ``tn``, ``fn``, ``n``, ``positives``
    and ``threshold``.
    """
    pred = np.asarray(probs) >= float(threshold)
    y = np.asarray(labels, bool)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    n = max(len(y), 1)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp,
            "tn": tn, "fn": fn, "n": int(len(y)), "positives": int(y.sum()), "threshold": float(threshold)}


def _batched(observations: Mapping[str, Any], keys: Sequence[str], size: Tuple[int, int]) -> Tuple[Dict, bool]:
    out, single = {}, None
    for key in keys:
        if key not in observations:
            raise ValueError(f"the classifier reads image key {key!r}; the observation has keys {sorted(observations)}")
        img = np.asarray(observations[key])
        if img.dtype != np.uint8:
            raise ValueError(f"image {key!r} must be uint8, got {img.dtype}")
        if img.shape[-3:] != (int(size[0]), int(size[1]), 3) or img.ndim not in (3, 4):
            raise ValueError(f"image {key!r}: expected (H, W, 3) = {(int(size[0]), int(size[1]), 3)} or a batch of "
                             f"them, got {img.shape}")
        is_single = img.ndim == 3
        if single is not None and single != is_single:
            raise ValueError("mixed batched and unbatched images")
        single = is_single
        out[key] = img[None] if is_single else img
    return out, bool(single)


class RewardClassifier:
    """A trained success classifier (module docstring): ``spec`` + ``params``.

    Create with :func:`train_classifier` or :meth:`load`; :meth:`save` writes a folder that
    :meth:`load` reads alone.
    """

    def __init__(self, spec: ClassifierSpec, params: Any, metrics: Optional[Dict[str, Any]] = None):
        spec.validate()
        self.spec = spec
        self.net = SuccessClassifierNet(spec)
        self.params = params
        self.metrics = dict(metrics or {})
        self._apply = jax.jit(lambda p, obs: self.net.apply({"params": p}, obs))

    @property
    def image_keys(self) -> Tuple[str, ...]:
        return tuple(self.spec.image_keys)

    @property
    def threshold(self) -> float:
        return float(self.spec.threshold)

    def logits(self, observations: Mapping[str, Any], batch_size: int = 256) -> np.ndarray:
        """Success logits, float32: ``()`` for one unbatched observation dict (frames
        ``(H, W, 3)``), ``(B,)`` for a batch. Raises ValueError for missing keys or wrong
        frame shape / dtype."""
        obs, single = _batched(observations, self.spec.image_keys, self.spec.image_size)
        n = next(iter(obs.values())).shape[0]
        out = []
        for start in range(0, n, batch_size):
            chunk = {k: jnp.asarray(v[start:start + batch_size]) for k, v in obs.items()}
            out.append(np.asarray(self._apply(self.params, chunk), np.float32))
        logits = np.concatenate(out) if out else np.zeros((0,), np.float32)
        return logits[0] if single else logits

    def predict_proba(self, observations: Mapping[str, Any], batch_size: int = 256):
        """``p(success)`` in [0, 1]: a float for one observation, float32 ``(B,)`` for a batch."""
        logits = self.logits(observations, batch_size)
        probs = (0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, np.float64)))).astype(np.float32)  # sigmoid
        return float(probs) if probs.ndim == 0 else probs

    def save(self, directory: str) -> str:
        """Write ``classifier.json`` (spec, metrics) and ``params.msgpack``; returns ``directory``."""
        os.makedirs(directory, exist_ok=True)
        atomic_write(os.path.join(directory, PARAMS_FILE),
                     flax.serialization.msgpack_serialize(to_numpy_tree(self.params)))
        doc = {"format": CLASSIFIER_FORMAT, "spec": self.spec.to_json(), "metrics": self.metrics}
        atomic_write(os.path.join(directory, SPEC_FILE), (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
        return directory

    @classmethod
    def load(cls, directory: str) -> "RewardClassifier":
        """Read a folder written by :meth:`save`.

        Raises FileNotFoundError (no folder / files), ValueError (another format, bad spec,
        params not matching the spec, NaN / inf)."""
        spec_path = os.path.join(directory, SPEC_FILE)
        params_path = os.path.join(directory, PARAMS_FILE)
        for p in (spec_path, params_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"reward classifier file missing: {p!r} "
                                        "(train one with launchers/train_reward_classifier.py)")
        with open(spec_path, "r", encoding="utf-8") as f:
            try:
                doc = json.load(f)
            except ValueError as e:
                raise ValueError(f"could not read {spec_path}: {e}") from e
        if doc.get("format") != CLASSIFIER_FORMAT:
            raise ValueError(f"{spec_path}: format {doc.get('format')!r}, this code reads {CLASSIFIER_FORMAT}")
        if not isinstance(doc.get("spec"), dict):
            raise ValueError(f"{spec_path}: no 'spec' object")
        spec = ClassifierSpec.from_json(doc["spec"])
        with open(params_path, "rb") as f:
            params = to_numpy_tree(flax.serialization.msgpack_restore(f.read()))
        reference = init_params(spec, jax.random.PRNGKey(0), abstract=True)
        check_params_match(reference, params, name="reward_classifier")
        for leaf in jax.tree_util.tree_leaves(params):
            if not np.all(np.isfinite(leaf)):
                raise ValueError(f"{params_path}: NaN or inf in the classifier params")
        params = jax.tree_util.tree_map(jnp.asarray, params)
        return cls(spec, params, doc.get("metrics"))


def _example(spec: ClassifierSpec) -> Dict[str, jax.Array]:
    h, w = (int(s) for s in spec.image_size)
    return {k: jnp.zeros((1, h, w, 3), jnp.uint8) for k in spec.image_keys}


def init_params(spec: ClassifierSpec, key: jax.Array, abstract: bool = False) -> Any:
    """Fresh params of :class:`SuccessClassifierNet` (``jax.ShapeDtypeStruct`` leaves when
    ``abstract``)."""
    net = SuccessClassifierNet(spec)
    if abstract:
        return jax.eval_shape(lambda: net.init(key, _example(spec)))["params"]
    return net.init(key, _example(spec))["params"]


def _bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def train_classifier(
    spec: ClassifierSpec,
    train_frames: Mapping[str, np.ndarray],
    train_labels: np.ndarray,
    *,
    backbone: Optional[Any] = None,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    crop_pad: int = 4,
    seed: int = 0,
    log_every: int = 0,
) -> Tuple[RewardClassifier, Dict[str, Any]]:
    """Train a classifier on labelled frames.

    Args:
      spec: the architecture; ``spec.freeze_backbone`` needs ``backbone``.
      train_frames: ``{key: uint8 (N, H, W, 3)}`` for every ``spec.image_keys``.
      train_labels: bool ``(N,)``, True = success frame; both classes needed.
      backbone: backbone params loaded into every camera (e.g. from
        :func:`serl_ext.networks.pretrained.load_encoder_weights`), None = random init.
      steps, batch_size, learning_rate: Adam steps on balanced batches (half positive).
      crop_pad: random-crop padding in pixels (0: none).
      seed: init, batches and crops.
      log_every: print the loss every this many steps (0: never).

    Returns ``(classifier, history)``; ``history``: ``train_loss`` (mean of the last 10% of
    steps), ``steps``, ``seconds``.
    Raises ValueError for a missing key, inconsistent lengths, a single class, or a frozen
    backbone without weights.
    """
    spec.validate()
    labels = np.asarray(train_labels, bool)
    for key in spec.image_keys:
        if key not in train_frames:
            raise ValueError(f"train_frames has no image key {key!r}")
        if len(train_frames[key]) != len(labels):
            raise ValueError(f"train_frames[{key!r}] has {len(train_frames[key])} frames for {len(labels)} labels")
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need success and failure frames, got {len(pos)} positive / {len(neg)} negative")
    if spec.freeze_backbone and backbone is None:
        raise ValueError("spec.freeze_backbone=True needs backbone weights")
    t0 = time.time()
    key = jax.random.PRNGKey(seed)
    key, k_init = jax.random.split(key)
    params = dict(init_params(spec, k_init))
    if backbone is not None:
        for k in spec.image_keys:
            sub = dict(params[f"image_{k}"])
            check_params_match(sub["backbone"], backbone, name="backbone")
            sub["backbone"] = jax.tree_util.tree_map(jnp.asarray, backbone)
            params[f"image_{k}"] = sub
    from serl_ext.agents.common import make_train_state

    frozen = tuple((f"image_{k}", "backbone") for k in spec.image_keys) if spec.freeze_backbone else ()
    state = make_train_state(params, learning_rate, frozen)
    net = SuccessClassifierNet(spec)
    keys = tuple(spec.image_keys)
    pad = int(crop_pad)

    @jax.jit
    def step(state, frames, y, k_aug):
        if pad > 0:
            frames = augment_observations(k_aug, frames, keys, pad)

        def loss_fn(p):
            return _bce(net.apply({"params": p}, frames), y)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    rng = np.random.default_rng(seed)
    half = max(1, batch_size // 2)
    losses = []
    for i in range(int(steps)):
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, half)])
        frames = {k: jnp.asarray(train_frames[k][idx]) for k in keys}
        key, k_aug = jax.random.split(key)
        state, loss = step(state, frames, jnp.asarray(labels[idx], jnp.float32), k_aug)
        losses.append(float(loss))
        if log_every and (i + 1) % log_every == 0:
            print(f"[classifier] step {i + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    tail = losses[-max(1, len(losses) // 10):]
    history = {"train_loss": float(np.mean(tail)), "steps": int(steps), "seconds": float(time.time() - t0)}
    return RewardClassifier(spec, state.params), history


class RewardClassifierWrapper(gym.Wrapper):
    """Reward and termination from a success classifier (HiL-SERL's classifier reward).

    Each step the classifier reads the new observation's frames: ``p = p(success)``; the step
    is a classifier success when ``p >= threshold``. Reward: 1.0 on the first classifier
    success of the episode, else 0.0 (sparse, like ``SparseReward``); with
    ``terminate_on_success`` that step ends the episode (``terminated=True``). A termination of
    the inner env passes through (build it with ``terminate_on_success=False`` so that the
    simulator's own success does not end the episode).

    ``info`` gains ``true_success`` (bool, the inner env's ``info["success"]``: the simulator's
    flag, for evaluation only), ``classifier_prob`` (float), ``classifier_success`` (bool) and
    ``env_reward`` (float, the inner reward). ``info["success"]`` is left as the inner env's,
    so success-rate logs stay the true ones.

    Args:
      env: an env whose dict observations have every ``classifier.image_keys`` frame.
      classifier: a :class:`RewardClassifier`, or anything with ``image_keys`` and
        ``predict_proba(obs) -> float`` (and optionally ``image_size``).
      threshold: decision threshold in (0, 1); None = the classifier's own.
      terminate_on_success: end the episode on the first classifier success.

    Raises:
      ValueError: the env's observation space is not a Dict, lacks an image key the
        classifier needs (the message names it and suggests ``env.image_obs=True``), or its
        frames have another size than the classifier's; a threshold outside (0, 1).
    """

    def __init__(self, env: gym.Env, classifier: Any, threshold: Optional[float] = None,
                 terminate_on_success: bool = True):
        super().__init__(env)
        keys = tuple(classifier.image_keys)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError(f"RewardClassifierWrapper needs dict observations with image keys {list(keys)}, "
                             f"the env has {type(space).__name__}")
        missing = [k for k in keys if k not in space.spaces]
        if missing:
            raise ValueError(f"the reward classifier reads image key(s) {missing} but the env's observations have "
                             f"{sorted(space.spaces)}; build the env with image observations "
                             "(--config.env.image_obs=True) at the classifier's image size")
        spec = getattr(classifier, "spec", None)
        if spec is not None:
            want = (int(spec.image_size[0]), int(spec.image_size[1]), 3)
            for k in keys:
                if tuple(space.spaces[k].shape) != want:
                    raise ValueError(f"env image {k!r} has shape {tuple(space.spaces[k].shape)}, the classifier was "
                                     f"trained on {want} (set --config.env.image_size={want[0]})")
        threshold = float(classifier.threshold if threshold is None else threshold)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.classifier = classifier
        self.threshold = threshold
        self.terminate_on_success = bool(terminate_on_success)
        self._succeeded = False

    def reset(self, **kwargs):
        self._succeeded = False
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, inner_reward, terminated, truncated, info = self.env.step(action)
        prob = float(self.classifier.predict_proba(obs))
        hit = prob >= self.threshold
        info["true_success"] = bool(info.get("success", False))
        info["classifier_prob"] = prob
        info["classifier_success"] = bool(hit)
        info["env_reward"] = float(inner_reward)
        reward = 0.0
        if hit and not self._succeeded:
            self._succeeded = True
            reward = 1.0
            if self.terminate_on_success:
                terminated = True
        return obs, reward, terminated, truncated, info
