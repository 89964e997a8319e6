"""Self-supervised pre-training of an image backbone on the project's own rendered frames.

Objective (stated, issue 17 item 2): **privileged-state regression**. From one camera frame
the network predicts the simulator state the frame shows: hand xyz, gripper opening and
object xyz (7 numbers, each standardised to zero mean / unit variance on the training
frames). Loss: mean squared error over the 7 standardised targets. The labels cost nothing
in simulation and name exactly what a manipulation policy has to see (where the hand and the
object are); the frames come from scripted-expert and random-action episodes
(:mod:`serl_ext.envs.frames`).

Network: ``(uint8 / 255 - mean) / std -> backbone (SmallCNN or ResNet10) ->
SpatialLearnedEmbeddings(8) -> Dense(256) -> LayerNorm -> ReLU -> Dense(7)``, with the agent's
random-crop augmentation (edge pad ``crop_pad``) on every training batch. ``mean`` / ``std``
are the per-channel statistics of the training frames; they are saved with the backbone
(:func:`serl_ext.networks.pretrained.save_encoder_weights`) so the agent normalises the same
way. Only the backbone is kept; the head is discarded.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from serl_ext.networks.augment import random_crop
from serl_ext.networks.encoders import SpatialLearnedEmbeddings, images_to_float, make_backbone, normalize_images

OBJECTIVE = "privileged_state_regression"
TARGET_NAMES = ("hand_x", "hand_y", "hand_z", "gripper", "obj_x", "obj_y", "obj_z")


class StateRegressor(nn.Module):
    """Backbone + regression head (module docstring).

    Input uint8 ``(B, H, W, 3)``; output float32 ``(B, num_outputs)``. Params: ``backbone``
    (what is saved), ``spatial``, ``hidden``, ``hidden_norm``, ``out``.
    """

    encoder_type: str
    widths: Optional[Sequence[int]]
    image_mean: Sequence[float]
    image_std: Sequence[float]
    num_outputs: int = len(TARGET_NAMES)
    hidden_dim: int = 256

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = normalize_images(images_to_float(images), self.image_mean, self.image_std)
        x = make_backbone(self.encoder_type, self.widths, name="backbone")(x)
        x = SpatialLearnedEmbeddings(8, name="spatial")(x)
        x = nn.Dense(self.hidden_dim, name="hidden")(x)
        x = nn.relu(nn.LayerNorm(name="hidden_norm")(x))
        return nn.Dense(self.num_outputs, name="out")(x)


def channel_stats(frames: np.ndarray, max_frames: int = 4096) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of ``uint8 / 255`` frames ``(N, H, W, C)`` (std floored at
    1e-3), from an evenly spaced subset of at most ``max_frames`` frames."""
    idx = np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).astype(int)
    x = frames[idx].astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 1, 2))
    std = np.maximum(x.std(axis=(0, 1, 2)), 1e-3)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _loss(net: StateRegressor, params: Any, images: jax.Array, targets: jax.Array) -> jax.Array:
    pred = net.apply({"params": params}, images)
    return jnp.mean((pred - targets) ** 2)


def pretrain_backbone(
    train_images: np.ndarray,
    train_targets: np.ndarray,
    eval_images: np.ndarray,
    eval_targets: np.ndarray,
    *,
    encoder_type: str = "resnet10",
    widths: Optional[Sequence[int]] = None,
    steps: int = 3000,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    crop_pad: int = 4,
    seed: int = 0,
    log_every: int = 0,
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Train :class:`StateRegressor` and return the backbone and a report.

    Args:
      train_images, eval_images: uint8 ``(N, H, W, 3)`` frames (held-out: other episodes).
      train_targets, eval_targets: float ``(N, K)`` raw targets (e.g.
        :func:`serl_ext.envs.frames.privileged_targets`); standardised here with the training
        mean / std (std floored at 1e-6).
      encoder_type, widths: the backbone (``make_backbone``).
      steps: Adam steps (batches drawn with replacement); learning_rate: Adam's.
      crop_pad: random-crop padding in pixels (0: no augmentation).
      seed: init and batch order.
      log_every: print the training loss every this many steps (0: never).

    Returns ``(backbone_params, report)``: the backbone's params (nested dict of float32
    ``np.ndarray``) and ``report`` with ``objective``, ``image_mean``, ``image_std``,
    ``train_loss`` (mean of the last 10% of steps), ``heldout_loss`` (MSE on standardised
    targets), ``heldout_baseline_loss`` (predicting the training mean), ``heldout_r2`` per
    target name (1 - MSE / variance of the held-out target), ``steps``, ``seconds``.
    Raises ValueError on inconsistent shapes or no frames.
    """
    if len(train_images) == 0 or len(eval_images) == 0:
        raise ValueError("need training and held-out frames")
    if train_images.shape[1:] != eval_images.shape[1:] or train_images.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 of one shape, got {train_images.shape} {train_images.dtype} and "
                         f"{eval_images.shape}")
    if train_targets.shape[0] != len(train_images) or eval_targets.shape[0] != len(eval_images):
        raise ValueError("one target row per frame is needed")
    t0 = time.time()
    mean, std = channel_stats(train_images)
    t_mean = train_targets.mean(axis=0)
    t_std = np.maximum(train_targets.std(axis=0), 1e-6)
    y_train = ((train_targets - t_mean) / t_std).astype(np.float32)
    y_eval = ((eval_targets - t_mean) / t_std).astype(np.float32)
    k = y_train.shape[1]
    net = StateRegressor(encoder_type, None if widths is None else tuple(int(w) for w in widths), mean, std,
                         num_outputs=k)
    key = jax.random.PRNGKey(seed)
    key, k_init = jax.random.split(key)
    params = net.init(k_init, jnp.asarray(train_images[:1]))["params"]
    tx = optax.adam(learning_rate)
    opt_state = tx.init(params)
    pad = int(crop_pad)

    @jax.jit
    def step(params, opt_state, images, targets, k_aug):
        if pad > 0:
            images = random_crop(k_aug, images, pad)
        loss, grads = jax.value_and_grad(lambda p: _loss(net, p, images, targets))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def eval_sq_err(params, images, targets):
        pred = net.apply({"params": params}, images)
        return jnp.sum((pred - targets) ** 2, axis=0)

    rng = np.random.default_rng(seed)
    losses = []
    for i in range(int(steps)):
        idx = rng.integers(0, len(train_images), min(batch_size, len(train_images)))
        key, k_aug = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, jnp.asarray(train_images[idx]), jnp.asarray(y_train[idx]),
                                       k_aug)
        losses.append(float(loss))
        if log_every and (i + 1) % log_every == 0:
            print(f"[pretrain] step {i + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f}", flush=True)
    sq = np.zeros(k)
    for start in range(0, len(eval_images), 256):
        sl = slice(start, start + 256)
        sq += np.asarray(eval_sq_err(params, jnp.asarray(eval_images[sl]), jnp.asarray(y_eval[sl])))
    mse = sq / len(eval_images)
    var = np.maximum(y_eval.var(axis=0), 1e-12)
    names = TARGET_NAMES if k == len(TARGET_NAMES) else tuple(f"target_{j}" for j in range(k))
    tail = losses[-max(1, len(losses) // 10):]
    report = {
        "objective": OBJECTIVE,
        "targets": list(names),
        "image_mean": list(mean),
        "image_std": list(std),
        "train_loss": float(np.mean(tail)),
        "heldout_loss": float(mse.mean()),
        "heldout_baseline_loss": float(np.mean(y_eval**2)),
        "heldout_r2": {n: float(1.0 - m / v) for n, m, v in zip(names, mse, var)},
        "steps": int(steps),
        "seconds": float(time.time() - t0),
    }
    backbone = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), jax.device_get(params["backbone"]))
    return backbone, report
