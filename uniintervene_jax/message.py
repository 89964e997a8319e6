"""The ``"uniintervene"`` part of the learner's parameter message (``serl_ext/loop/param_message.py``):
what the learner's trainer sends and the actor's gate reads, in one place.

Payload (all numpy / plain Python, msgpack-able by ``serl_ext.transport``)::

    {"version": int, "ready": bool, "tau": float in [0, 1],
     "value": params, "intervention": params, "recovery": params,   # nested dicts of arrays
     "memory": memory_to_payload(items) or None}

* :func:`build_models` -- the three model structures both sides build from ``config.uniintervene``
  (the learner trains them, the actor loads pushed parameters into them);
* :func:`make_payload` (learner, ``OnlineUniIntervene.payload``) and :func:`read_payload`
  (actor, ``NetworkGateModels.load``: keys, scalars, finite parameters);
* :func:`memory_to_payload` / :func:`memory_from_payload` -- the recovery memory on the wire.
"""

import json
from typing import Any, Dict, Optional

import jax
import numpy as np

# Name of the UniIntervene part of the parameter message.
PART_NAME = "uniintervene"
PAYLOAD_KEYS = ("version", "ready", "tau", "value", "intervention", "recovery", "memory")
MODEL_KEYS = ("value", "intervention", "recovery")


def build_models(config, obs_spec, action_dim: int):
    """The three UniIntervene models of ``config.uniintervene`` with fresh parameters, seeded by
    ``config.seed`` (the actor builds the same structures and loads pushed parameters into them).

    With ``uniintervene.init_from`` (an offline pipeline run folder, ``uniintervene_jax/pipeline.py``)
    the proxy value and the intervention model are loaded from ``{init_from}/models/value`` and
    ``{init_from}/models/intervention`` (their structure and parameters: learner and actor build
    the same networks from the folder), and the recovery policy from ``{init_from}/models/recovery``
    when that one has the continuous chunk head (online needs it); a token-head (FAST) policy is
    not loaded and a fresh continuous one is built from ``config.uniintervene.recovery``.

    Returns ``(ProxyValue, InterventionModel, RecoveryPolicy)``.
    With ``uniintervene.recovery_inputs="state+value_embedding"`` the recovery policy is built on
    the recovery view ``{"state": (S + value.latent_dim,)}`` (:mod:`uniintervene_jax.views`).

    Raises:
      FileNotFoundError: a model folder of ``init_from`` is missing.
      ValueError: a loaded model's observation spec, action size, value-history K or ablation
        switch (``head_type``, ``use_future``, ``use_value_cond``) differs from this run's;
        ``init_from`` with the recovery view (fresh models only).
    """
    import os

    from serl_ext.agents.common import make_obs_spec
    from serl_ext.loop.common import example_observation
    from uniintervene_jax.intervention.model import InterventionModel
    from uniintervene_jax.recovery.model import RecoveryPolicy
    from uniintervene_jax.value.model import ProxyValue
    from uniintervene_jax.views import recovery_example, uses_value_embedding

    c = config.uniintervene
    example = example_observation(obs_spec)
    key = jax.random.PRNGKey(int(config.seed) + 101)
    k1, k2, k3 = jax.random.split(key, 3)
    source = str(c.get("init_from", "") or "")
    if not source:
        value = ProxyValue.create(k1, example, c.value)
        intervention = InterventionModel.create(k2, example, int(action_dim), int(c.value.latent_dim), c.intervention)
        # recovery_inputs="state+value_embedding": the recovery policy reads the recovery view
        # {"state": [state, z]} (uniintervene_jax/views.py), not the camera frames.
        rec_example = recovery_example(example, int(c.value.latent_dim)) if uses_value_embedding(c) else example
        recovery = RecoveryPolicy.create(k3, rec_example, int(action_dim), c.recovery)
        return value, intervention, recovery
    if uses_value_embedding(c):
        raise ValueError("uniintervene.recovery_inputs='state+value_embedding' runs with fresh models only "
                         "(uniintervene.init_from=''); the offline pipeline has no image recovery view")
    spec = make_obs_spec(example)
    models = os.path.join(source, "models")
    value = ProxyValue.load(os.path.join(models, "value"))
    intervention = InterventionModel.load(os.path.join(models, "intervention"))
    for name, model in (("value", value), ("intervention", intervention)):
        if tuple(model.obs_spec) != tuple(spec):
            raise ValueError(f"{models}/{name}: observation spec {model.obs_spec} differs from this run's {spec}")
    if intervention.action_dim != int(action_dim):
        raise ValueError(f"{models}/intervention: action_dim {intervention.action_dim} != {action_dim}")
    if int(intervention.config.history_len) != int(c.intervention.history_len):
        raise ValueError(f"{models}/intervention: history_len {intervention.config.history_len} != "
                         f"uniintervene.intervention.history_len {c.intervention.history_len} (the gate's K)")
    # The ablation switches decide what the folder's model is: a run of one ablation must not
    # start from a folder trained for another (pipeline: --config.intervention.<field>).
    for field in ("head_type", "use_future", "use_value_cond"):
        if field in c.intervention and intervention.config.get(field) != c.intervention[field]:
            raise ValueError(f"{models}/intervention was trained with {field}={intervention.config.get(field)!r}, "
                             f"this run has uniintervene.intervention.{field}={c.intervention[field]!r}; run the "
                             f"offline pipeline with --config.intervention.{field}={c.intervention[field]!r}")
    recovery = None
    rec_dir = os.path.join(models, "recovery")
    if os.path.isdir(rec_dir):
        with open(os.path.join(rec_dir, "model.json")) as f:
            head = json.load(f).get("config", {}).get("head")
        if head == "continuous":
            recovery = RecoveryPolicy.load(rec_dir, seed=int(config.seed))
    if recovery is None:
        recovery = RecoveryPolicy.create(k3, example, int(action_dim), c.recovery)
    return value, intervention, recovery


def make_payload(version: int, ready: bool, tau: float, value, intervention, recovery, memory_items) -> Dict[str, Any]:
    """The payload of the three models (their ``state.params``), the memory items
    (:class:`~uniintervene_jax.memory.mining.RecoveryItems` or None) and the learner's tau."""
    to_np = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))  # noqa: E731
    return {
        "version": int(version),
        "ready": bool(ready),
        "tau": float(tau),
        "value": to_np(value.state.params),
        "intervention": to_np(intervention.state.params),
        "recovery": to_np(recovery.state.params),
        "memory": memory_to_payload(memory_items),
    }


def read_payload(payload: Any) -> Dict[str, Any]:
    """Checks a received payload; returns ``{"version": int, "ready": bool, "tau": float}``.

    The parameter trees are checked for NaN/inf here; whether they fit the actor's networks and
    the memory decode are checked by the caller (``NetworkGateModels.load``).
    Raises:
      TypeError: not a dict. ValueError: missing keys, bad scalars, tau outside [0, 1],
        NaN/inf parameters.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"uniintervene payload must be a dict, got {type(payload).__name__}")
    missing = [k for k in PAYLOAD_KEYS if k not in payload]
    if missing:
        raise ValueError(f"uniintervene payload misses {missing}")
    try:
        out = {"tau": float(payload["tau"]), "version": int(payload["version"]), "ready": bool(payload["ready"])}
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad tau / version / ready in the uniintervene payload: {e}") from None
    if not 0.0 <= out["tau"] <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {out['tau']}")
    for name in MODEL_KEYS:
        for leaf in _leaves(payload[name]):
            arr = np.asarray(leaf)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} parameters contain NaN or inf")
    return out


def memory_to_payload(items) -> Optional[Dict[str, Any]]:
    """:class:`~uniintervene_jax.memory.mining.RecoveryItems` -> a dict of plain arrays/lists
    (msgpack-able by ``serl_ext.transport``); None stays None."""
    from uniintervene_jax.memory.mining import RecoveryItems

    if items is None:
        return None
    out: Dict[str, Any] = {f: np.asarray(getattr(items, f)) for f in RecoveryItems.ARRAY_FIELDS}
    out["tasks"] = list(items.tasks)
    out["key_observations"] = {k: np.asarray(v) for k, v in items.key_observations.items()}
    out["goal_observations"] = {k: np.asarray(v) for k, v in items.goal_observations.items()}
    return out


def memory_from_payload(payload: Optional[Dict[str, Any]]):
    """Inverse of :func:`memory_to_payload`: a :class:`~uniintervene_jax.memory.memory.RecoveryMemory`
    (or None). Raises ValueError / TypeError for a malformed payload."""
    from uniintervene_jax.memory.memory import RecoveryMemory
    from uniintervene_jax.memory.mining import RecoveryItems

    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise TypeError(f"memory payload must be a dict, got {type(payload).__name__}")
    try:
        fields = {f: np.asarray(payload[f]) for f in RecoveryItems.ARRAY_FIELDS}
        items = RecoveryItems(
            tasks=[str(t) for t in payload["tasks"]],
            key_observations={k: np.asarray(v) for k, v in payload["key_observations"].items()},
            goal_observations={k: np.asarray(v) for k, v in payload["goal_observations"].items()},
            **fields,
        )
    except KeyError as e:
        raise ValueError(f"memory payload misses {e}") from None
    except (AttributeError, IndexError) as e:
        raise ValueError(f"malformed memory payload: {e}") from None
    return RecoveryMemory(items=items)


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree
