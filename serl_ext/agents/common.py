"""Helpers shared by the agents: observation specs, batch checks, train states, encoders.

Nothing here holds state; agents call these from Python (checks, before ``jax.jit``) or
from inside their jitted updates (pure array code).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from serl_ext.networks.augment import augment_observations
from serl_ext.networks.encoders import ENCODER_TYPES, ObservationEncoder
from serl_ext.networks.params import check_params_match
from serl_ext.networks.pretrained import load_encoder_weights, read_encoder_meta

# ((key, shape, dtype name), ...) sorted by key: hashable, so it can be a static field.
ObsSpec = Tuple[Tuple[str, Tuple[int, ...], str], ...]


def f32(x: float) -> jax.Array:
    """Strongly typed float32 scalar (a weak-typed Python float in the agent state would
    recompile the jitted update on its second call; DESIGN section 7)."""
    return jnp.asarray(np.float32(x), dtype=jnp.float32)


def encoder_config() -> ml_collections.ConfigDict:
    """Default observation-encoder config shared by SAC, hybrid SAC and BC."""
    c = ml_collections.ConfigDict()
    # "state": flattened obs["state"] only, no parameters; "small_cnn" / "resnet10": one
    # image encoder per key in image_keys (trained from scratch unless pretrained_path).
    c.type = "state"
    # Image observation keys, e.g. ("pixels",) or ("front", "wrist"); uint8 (H, W, 3).
    c.image_keys = ()
    # Width of each camera latent (Dense + LayerNorm + tanh after the spatial embedding).
    c.latent_dim = 256
    # num_features of SpatialLearnedEmbeddings (HiL-SERL uses 8).
    c.num_spatial_features = 8
    # Backbone channel widths; None = class default (SmallCNN (32, 64, 128, 256),
    # ResNet10 (64, 128, 256, 512)). Small values make fast tests.
    c.widths = ml_collections.config_dict.placeholder(tuple)
    # Backbone weights loaded into every camera's backbone (shapes checked); None = train from
    # scratch. Never downloaded. A weights folder written by launchers/pretrain_encoder.py (or
    # its encoder.json; serl_ext/networks/pretrained.py): its architecture and widths must be
    # type and widths here, and its image normalisation (mean / std) is applied before the
    # backbone. Or a bare .msgpack / .npz params file (no normalisation).
    c.pretrained_path = ml_collections.config_dict.placeholder(str)
    # Freeze the image backbone(s) (SmallCNN / ResNet10 part; the spatial embedding, Dense and
    # LayerNorm still train): stop_gradient on the backbone output, and its params left out
    # of the optimiser (optax.set_to_zero: no Adam state), target copies kept equal. Meant
    # with pretrained_path (HiL-SERL's frozen pretrained ResNet-10).
    c.freeze = False
    # "random_crop" (edge-pad + random shift, applied to image keys of observations and
    # next_observations in each update) or "none".
    c.augmentation = "random_crop"
    # Padding in pixels of the random crop.
    c.crop_pad = 4
    return c


def merge_config(defaults: ml_collections.ConfigDict, config: Any, drop_unknown: bool) -> ml_collections.ConfigDict:
    """``defaults`` overridden by ``config`` (recursively for nested dicts).

    Fields missing from ``config`` take their default; with ``drop_unknown`` fields of
    ``config`` that ``defaults`` lacks are dropped (e.g. SAC-only fields given to BC),
    otherwise kept. Raises TypeError for a non-ConfigDict ``config``.
    """
    if not isinstance(config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        raise TypeError(f"config must be an ml_collections ConfigDict, got {type(config).__name__}")

    from serl_ext.config_merge import merge_nested

    merged = merge_nested(defaults.to_dict(), config.to_dict(), unknown="drop" if drop_unknown else "keep",
                          name="agent config")
    return ml_collections.ConfigDict(merged)


def validate_encoder_config(enc: Any, observations: Mapping[str, Any]) -> None:
    """Raise ValueError for an encoder config inconsistent with the example observation (also:
    a weights folder of another architecture than ``type``, unreadable ``encoder.json``,
    ``freeze`` with ``type="state"``), FileNotFoundError for a ``pretrained_path`` that does not
    exist."""
    if enc.type not in ENCODER_TYPES:
        raise ValueError(f"encoder.type must be one of {ENCODER_TYPES}, got {enc.type!r}")
    image_keys = tuple(enc.image_keys)
    if enc.type == "state":
        if image_keys:
            raise ValueError("encoder.type='state' takes no image_keys; use small_cnn or resnet10")
        if "state" not in observations:
            raise ValueError("encoder.type='state' needs a 'state' key in the observations")
    else:
        if not image_keys:
            raise ValueError(f"encoder.type={enc.type!r} needs encoder.image_keys")
        for key in image_keys:
            if key not in observations:
                raise ValueError(f"encoder.image_keys has {key!r} but the observation keys are {sorted(observations)}")
            img = np.asarray(observations[key])
            if img.ndim != 3 or img.dtype != np.uint8:
                raise ValueError(
                    f"image {key!r} must be one unbatched uint8 (H, W, C) frame, got {img.dtype} {img.shape}"
                )
    if enc.augmentation not in ("random_crop", "none", None):
        raise ValueError(f"encoder.augmentation must be 'random_crop' or 'none', got {enc.augmentation!r}")
    if int(enc.crop_pad) < 0:
        raise ValueError(f"encoder.crop_pad must be >= 0, got {enc.crop_pad}")
    if enc.pretrained_path is not None:
        if not os.path.exists(enc.pretrained_path):
            raise FileNotFoundError(
                f"encoder.pretrained_path {enc.pretrained_path!r} does not exist (weights are never downloaded)"
            )
        meta = read_encoder_meta(enc.pretrained_path)  # a folder: readable metadata, right architecture
        if meta is not None and meta.architecture != enc.type:
            raise ValueError(
                f"encoder.pretrained_path holds a {meta.architecture} backbone but encoder.type={enc.type!r}"
            )
    if bool(enc.get("freeze", False)) and enc.type == "state":
        raise ValueError("encoder.freeze=True but encoder.type='state' has no backbone to freeze")
    if int(enc.latent_dim) < 1:
        raise ValueError(f"encoder.latent_dim must be >= 1, got {enc.latent_dim}")


def make_encoder_def(enc: Any) -> ObservationEncoder:
    """:class:`ObservationEncoder` for an encoder config (see :func:`encoder_config`).

    With ``enc.pretrained_path`` a weights folder, the encoder normalises images with the
    folder's ``image_mean`` / ``image_std``; with ``enc.freeze`` its backbones get no gradient.
    Configs without a ``freeze`` field (written before it existed) read it as False.
    Raises FileNotFoundError / ValueError for a missing or unreadable weights folder.
    """
    widths = None if enc.widths is None else tuple(int(w) for w in enc.widths)
    extra = {}
    meta = None if enc.get("pretrained_path") is None else read_encoder_meta(enc.pretrained_path)
    if meta is not None:
        extra.update(image_mean=tuple(meta.image_mean), image_std=tuple(meta.image_std))
    if bool(enc.get("freeze", False)):
        extra.update(freeze_backbone=True)
    return ObservationEncoder(
        encoder_type=enc.type,
        image_keys=tuple(enc.image_keys),
        latent_dim=int(enc.latent_dim),
        num_spatial_features=int(enc.num_spatial_features),
        widths=widths,
        **extra,
    )


def frozen_param_prefixes(enc: Any) -> Tuple[Tuple[str, ...], ...]:
    """Paths, inside the encoder's params, of the backbones ``enc.freeze`` freezes:
    ``(("image_<key>", "backbone"), ...)``; ``()`` when not frozen."""
    if not bool(enc.get("freeze", False)):
        return ()
    return tuple((f"image_{k}", "backbone") for k in enc.image_keys)


def init_encoder(key: jax.Array, encoder_def: ObservationEncoder, enc: Any, obs_batch: Dict) -> Dict:
    """Initialise encoder params (``{}`` for the state encoder) and load pretrained
    backbones from ``enc.pretrained_path`` into every camera.

    A weights folder is checked against ``enc.type`` / ``enc.widths`` and the initialised
    backbone's shapes (:func:`serl_ext.networks.pretrained.load_encoder_weights`), a bare
    params file against the shapes only; both for NaN / inf. Raises FileNotFoundError /
    ValueError (message prefixed ``pretrained_encoder`` for a shape mismatch)."""
    params = encoder_def.init(key, obs_batch).get("params", {})
    params = dict(params)  # shallow copy; sub-dicts replaced below, never mutated
    if enc.pretrained_path is not None:
        if enc.type == "state":
            raise ValueError("encoder.pretrained_path is set but encoder.type='state' has no weights")
        widths = None if enc.widths is None else tuple(int(w) for w in enc.widths)
        for key_name in enc.image_keys:
            sub = dict(params[f"image_{key_name}"])
            loaded, _ = load_encoder_weights(
                enc.pretrained_path, architecture=enc.type, widths=widths, reference=sub["backbone"],
                input_size=tuple(int(s) for s in np.shape(obs_batch[key_name])[1:3]),
            )
            sub["backbone"] = jax.tree_util.tree_map(jnp.asarray, loaded)
            params[f"image_{key_name}"] = sub
    return params


def make_obs_spec(observations: Mapping[str, Any]) -> ObsSpec:
    """Spec of one unbatched example observation dict. Raises TypeError for a non-dict."""
    if not isinstance(observations, Mapping):
        raise TypeError(f"observations must be a dict of arrays, got {type(observations).__name__}")
    if not observations:
        raise ValueError("observations dict is empty")
    spec = []
    for key in sorted(observations):
        arr = np.asarray(observations[key])
        spec.append((str(key), tuple(int(s) for s in arr.shape), np.dtype(arr.dtype).name))
    return tuple(spec)


def _cast_obs_leaf(key: str, arr: Any, dtype_name: str, host: bool = False) -> jax.Array:
    want = np.dtype(dtype_name)
    have = np.dtype(getattr(arr, "dtype", np.asarray(arr).dtype))
    to = np.asarray if host else jnp.asarray
    if have == want:
        return to(arr)
    if np.issubdtype(have, np.floating) and np.issubdtype(want, np.floating):
        return to(arr, dtype=want)
    if np.issubdtype(want, np.floating) and np.issubdtype(have, np.integer):
        return to(arr, dtype=want)
    raise ValueError(f"observation {key!r}: expected dtype {want}, got {have}")


def check_observations(obs: Any, spec: ObsSpec, lead: Tuple[int, ...], name: str,
                       host: bool = False) -> Dict[str, jax.Array]:
    """Check a batched observation dict against ``spec`` with leading dims ``lead``.

    Returns a dict holding only the spec's keys, cast to the spec dtypes (float->float
    and int->float only): jax arrays, or numpy arrays with ``host=True`` (inputs of a
    jitted call that is made right away: a jitted function takes numpy arrays as they
    are, and each eager ``jnp.asarray`` costs a dispatch, about 0.1 ms on this CPU).
    Raises ValueError naming the key on a missing key, wrong shape or an unsafe dtype change.
    """
    if not isinstance(obs, Mapping):
        raise ValueError(f"{name} must be a dict of arrays, got {type(obs).__name__}")
    out = {}
    for key, shape, dtype_name in spec:
        if key not in obs:
            raise ValueError(f"{name} has no key {key!r}; expected keys {[s[0] for s in spec]}")
        arr = obs[key]
        if tuple(np.shape(arr)) != tuple(lead) + shape:
            raise ValueError(f"{name}[{key!r}]: expected shape {tuple(lead) + shape}, got {tuple(np.shape(arr))}")
        out[key] = _cast_obs_leaf(key, arr, dtype_name, host)
    return out


def policy_observations(obs: Any, spec: ObsSpec, host: bool = False) -> Tuple[Dict[str, jax.Array], bool]:
    """Accept one unbatched observation (shapes == spec) or a batch (B, *spec shape).

    Returns ``(batched dict, was_unbatched)``: jax arrays, numpy arrays with ``host=True``
    (:func:`check_observations`). Raises ValueError on shape mismatch or mixed
    batched/unbatched keys.
    """
    if not isinstance(obs, Mapping):
        raise ValueError(f"observations must be a dict of arrays, got {type(obs).__name__}")
    key0, shape0, _ = spec[0]
    if key0 not in obs:
        raise ValueError(f"observations have no key {key0!r}; expected keys {[s[0] for s in spec]}")
    s0 = tuple(np.shape(obs[key0]))
    if s0 == shape0:
        checked = check_observations(obs, spec, (), "observations", host)
        return {k: v[None] for k, v in checked.items()}, True
    if len(s0) == len(shape0) + 1 and s0[1:] == shape0:
        return check_observations(obs, spec, (s0[0],), "observations", host), False
    raise ValueError(f"observations[{key0!r}]: expected shape {shape0} or (B, *{shape0}), got {s0}")


def check_batch(
    batch: Any,
    spec: ObsSpec,
    action_dim: int,
    utd_ratio: int,
    optional_keys: Sequence[str] = (),
) -> Dict[str, Any]:
    """Validate a training batch and keep only what the update uses.

    Required keys: observations, next_observations (dicts matching ``spec``), actions
    (N, action_dim), rewards (N,), masks (N,); ``optional_keys`` are kept when present
    (shape (N,)). ``N`` must be a positive multiple of ``utd_ratio``. Float leaves are cast
    to float32 (masks may be bool). Raises ValueError/TypeError naming the bad key.
    """
    if not isinstance(utd_ratio, (int, np.integer)) or isinstance(utd_ratio, bool) or utd_ratio < 1:
        raise ValueError(f"utd_ratio must be a positive int, got {utd_ratio!r}")
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a dict, got {type(batch).__name__}")
    for key in ("observations", "next_observations", "actions", "rewards", "masks"):
        if key not in batch:
            raise ValueError(f"batch has no key {key!r}; keys: {sorted(batch)}")
    n = int(np.shape(batch["rewards"])[0]) if np.ndim(batch["rewards"]) == 1 else -1
    if n <= 0:
        raise ValueError(f"batch['rewards'] must have shape (N,), got {np.shape(batch['rewards'])}")
    if n % utd_ratio != 0:
        raise ValueError(f"batch size {n} is not a multiple of utd_ratio={utd_ratio}")
    out = {
        "observations": check_observations(batch["observations"], spec, (n,), "batch['observations']"),
        "next_observations": check_observations(
            batch["next_observations"], spec, (n,), "batch['next_observations']"
        ),
    }
    if tuple(np.shape(batch["actions"])) != (n, action_dim):
        raise ValueError(f"batch['actions']: expected shape {(n, action_dim)}, got {np.shape(batch['actions'])}")
    out["actions"] = jnp.asarray(batch["actions"], jnp.float32)
    for key in ("rewards", "masks") + tuple(k for k in optional_keys if k in batch):
        if tuple(np.shape(batch[key])) != (n,):
            raise ValueError(f"batch[{key!r}]: expected shape {(n,)}, got {np.shape(batch[key])}")
        out[key] = jnp.asarray(batch[key], jnp.float32)
    return out


#: Most minibatches an update's scan unrolls (compile time grows with every unrolled step).
MAX_UNROLL = 8


def unrolls_scan(enc: Any) -> bool:
    """Whether an update's ``lax.scan`` over minibatches is unrolled for this encoder config:
    True when it reads images (``enc.image_keys`` non-empty), whatever ``fused_update`` says.

    Why: on XLA's CPU backend (jax 0.10), convolutions inside a rolled ``while`` loop ran far
    slower than the same convolutions in straight-line code (``pick-place,hil_serl_cameras``,
    two 64 px cameras, batch 32, UTD 2: ``benchmarks/bench_pixel_update.py`` times both scans in
    one run, ``benchmarks/results/pixel_update_scan.md``). The unrolled scan is the same math
    (float rounding aside; tests/test_learner_fused_update.py).
    """
    return bool(enc.get("image_keys"))


def scan_unroll(enc: Any, num_steps: int, fused: bool = False) -> int:
    """``unroll`` argument of an update's ``lax.scan`` over ``num_steps`` minibatches: all of
    them (straight-line code) when ``1 <= num_steps <= MAX_UNROLL`` and either ``fused`` (SAC's
    ``fused_update``) or :func:`unrolls_scan` holds, else 1 (a rolled loop)."""
    if (fused or unrolls_scan(enc)) and 1 <= num_steps <= MAX_UNROLL:
        return int(num_steps)
    return 1


def split_minibatches(batch: Any, num: int) -> Any:
    """Reshape every leaf ``(num * B, ...) -> (num, B, ...)`` (for ``lax.scan``)."""
    return jax.tree_util.tree_map(lambda x: x.reshape((num, x.shape[0] // num) + x.shape[1:]), batch)


def augment_batch(key: jax.Array, batch: Dict, enc: Any) -> Dict:
    """Random-crop the image keys of observations and next_observations (if configured)."""
    if enc.augmentation != "random_crop" or not enc.image_keys or int(enc.crop_pad) == 0:
        return batch
    k1, k2 = jax.random.split(key)
    out = dict(batch)
    out["observations"] = augment_observations(k1, batch["observations"], enc.image_keys, int(enc.crop_pad))
    out["next_observations"] = augment_observations(
        k2, batch["next_observations"], enc.image_keys, int(enc.crop_pad)
    )
    return out


def _has_prefix(path: Tuple[str, ...], prefixes: Sequence[Tuple[str, ...]]) -> bool:
    return any(path[: len(p)] == tuple(p) for p in prefixes)


def _path_names(path) -> Tuple[str, ...]:
    return tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def make_train_state(
    params: Any, learning_rate: float, frozen_prefixes: Sequence[Tuple[str, ...]] = ()
) -> train_state.TrainState:
    """Adam TrainState (one per network) with a strongly typed int32 step counter.

    ``frozen_prefixes``: key paths (tuples of dict keys from the root of ``params``, e.g.
    ``("encoder", "image_pixels", "backbone")``); every leaf under one of them is left out of
    Adam (``optax.multi_transform`` with ``optax.set_to_zero``: zero update, no moment state).
    Empty (default): plain ``optax.adam`` over everything.
    """
    if not frozen_prefixes:
        tx = optax.adam(learning_rate)
    else:
        labels = jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if _has_prefix(_path_names(path), frozen_prefixes) else "train", params
        )
        tx = optax.multi_transform({"train": optax.adam(learning_rate), "frozen": optax.set_to_zero()}, labels)
    ts = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
    return ts.replace(step=jnp.zeros((), jnp.int32))


def copy_frozen(source: Any, target: Any, frozen_prefixes: Sequence[Tuple[str, ...]]) -> Any:
    """``target`` with every leaf under ``frozen_prefixes`` (see :func:`make_train_state`)
    taken from ``source`` (same tree structure); ``target`` itself when there are none.

    Used after a Polyak update so that a frozen backbone's target copy stays bit-identical
    (``tau * x + (1 - tau) * x`` is not ``x`` in float32)."""
    if not frozen_prefixes:
        return target
    return jax.tree_util.tree_map_with_path(
        lambda path, s, t: s if _has_prefix(_path_names(path), frozen_prefixes) else t, source, target
    )


def check_action_example(actions: Any) -> int:
    """Validate one unbatched float action example (A,) and return A."""
    a = np.asarray(actions)
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"actions must be one unbatched example of shape (A,), got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"actions must be floating point, got {a.dtype}")
    return int(a.shape[0])


def batch_example(observations: Mapping[str, Any]) -> Dict[str, jax.Array]:
    """One unbatched observation -> batch of one (leading dim 1)."""
    return {k: jnp.asarray(v)[None] for k, v in observations.items()}


def replace_in_params(params: Any, reference: Any, name: str) -> Any:
    """Validated copy of ``params`` as jnp arrays with the structure of ``reference``.

    Raises ValueError naming the path on any structure/shape/dtype mismatch.
    """
    check_params_match(reference, params, name=name)
    return jax.tree_util.tree_map(lambda r, p: jnp.asarray(p, dtype=r.dtype), reference, _as_plain(params, reference))


def _as_plain(params: Any, reference: Any) -> Any:
    """Rebuild ``params`` with plain-dict containers laid out like ``reference``."""
    if isinstance(reference, Mapping):
        return {k: _as_plain(params[k], v) for k, v in reference.items()}
    return params
