"""What the two sides of UniIntervene online share: the ``config.uniintervene`` section
(:func:`get_online_config`, :func:`check_online_config`), the model structures
(:func:`build_models`) and the memory's wire format (:func:`memory_to_payload`,
:func:`memory_from_payload`).

The actor's gate (``uniintervene_jax/gate.py``) and the learner's trainer
(``uniintervene_jax/online.py``) both import from here, never from each other.
"""

from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np

RECOVERY_BUFFERS = ("online", "both")
RECOVERY_GOALS = ("retrieved", "future")


def get_online_config() -> ml_collections.ConfigDict:
    """``config.uniintervene``: defaults of the online gate and learner side (documented inline)."""
    from uniintervene_jax.intervention.train import get_default_config as intervention_config
    from uniintervene_jax.recovery.model import get_default_config as recovery_config
    from uniintervene_jax.value.train import get_default_config as value_config

    c = ml_collections.ConfigDict()
    # Off for plain HiL-SERL; the hil_serl+uniintervene algorithms switch it on.
    c.enabled = False
    # --- gate (actor) ---
    # K: value-history window (DESIGN section 4: 8); the intervention model reads V_{t-K..t}.
    c.history_len = 8
    # H: recovery chunk length (paper: 8 actions); the gate re-evaluates at a chunk's end.
    c.horizon = 8
    # The trigger threshold is intervention.tau_int (set below): fire when sigmoid(risk) >= it.
    # With tau_quantile > 0 the learner instead sets tau to that quantile of sigmoid(risk) over
    # the policy steps of recent successful episodes (at most 1 - tau_quantile of good steps
    # would fire), never below intervention.tau_int.
    c.tau_quantile = 0.0
    # 0: execute each recovery chunk open loop (the paper). n > 0: receding horizon, the rest of
    # the running chunk is re-predicted every n steps from the current observation toward the
    # same goal (benchmarks/recovery_bound.py measures why this matters at 20 Hz).
    c.replan_every = 0
    # Policy steps after a recovery ends (or the human hands back) before the gate may fire again.
    c.cooldown_steps = 4
    # Consecutive recovery chunks before a forced cooldown (keeps the trigger from turning the
    # recovery policy into the main policy, guide: "do not make the trigger too aggressive").
    c.max_chunks = 4
    # Where recovery transitions go: "online" (the online buffer only, like policy steps;
    # default) or "both" (also the demo+intervention buffer, like human steps). Every
    # transition always goes to the online buffer.
    c.recovery_buffer = "online"
    # While the human holds control, the robot's proposal (judged by the human's hand-back) is
    # the recovery policy's action rather than the base policy's (gate.UniInterveneGate).
    c.propose_under_human = True
    # Ablation: False -> the recovery goal is the current observation (no memory retrieval).
    c.use_memory_goal = True
    # Evaluations (actor.eval_period) also run the whole system, base policy + a copy of the
    # gate with no human, on the same seeds: summary.json's eval_system_success_rate beside the
    # policy-alone eval_success_rate.
    c.eval_with_gate = True
    # Record the value/risk/trigger timeline of every n-th episode to gate_timeline.jsonl (0: off).
    c.timeline_every = 5
    # --- models ---
    c.value = value_config()
    c.value.hidden_dims = (256, 256)
    c.intervention = intervention_config()
    # Online trigger threshold 0.4, not the paper's 0.5: the risk scalar is both the focal logit
    # and regressed to the TVR target (near 0), so sigmoid(risk) sits at 0.45-0.55 and 0.5 fires
    # on about half of the decisions whatever the state; at a recovery chunk's end, after the
    # value rose, it then hands the robot back to a base policy that cannot do the task yet
    # (benchmarks/results/compare/results.md: hil_serl+uniintervene-tau05 cuts IR by 13% on
    # average, this default by 25%).
    c.intervention.tau_int = 0.4
    c.recovery = recovery_config()
    # Online the recovery policy uses the continuous chunk head: the FAST token head needs a
    # tokenizer fitted on the chunks first (offline pipeline); see README.
    c.recovery.head = "continuous"
    # Stagnation-label rule ("design" union or "guide") and TVR parameters (DESIGN section 4).
    c.mining_rule = "design"
    c.tvr_eps = 0.005
    c.tvr_gamma_r = 0.9
    c.tvr_clip_negative = False
    # Recovery-memory mining preset ("default": 120 items, 10 bins, span 8, delta 0.5).
    c.memory_preset = "default"
    # Smaller value rise for demo windows, used only while the preset mines no item at all
    # (mine_online_memory): assembly and box-close demos climb 0.2-0.4 in 8 steps, so without it
    # their memory, and the gate, stayed empty for the first ~20 episodes. 0: no fallback.
    c.memory_demo_delta = 0.2
    # Online extension (not in the paper): the takeover_label_steps policy/recovery steps
    # before each human takeover are also positive trigger labels (union with the mined
    # stagnation labels), so the model learns to fire before the operator would. 0: off.
    c.takeover_label_steps = 8
    # Goal offset k of the recovery training pairs (goal = o_{t+k}).
    c.goal_offset = 8
    # Goals the recovery policy is trained on: "retrieved" (default; each anchor's goal is what
    # the gate would retrieve for it: the memory's best item of another episode with a higher
    # value than V(o_t), falling back to o_{t+k} when none is found), or "future" (o_{t+k}, the
    # hindsight goal of the offline pipeline). At run time goals come from the memory, i.e.
    # from other episodes whose object and target positions differ; training on such goals
    # keeps the policy from chasing them (benchmarks/recovery_goals.py measures the effect).
    c.recovery_goals = "retrieved"
    # Online anchors (operator segments) are kept only when the proxy value rises by more than
    # this over the goal offset (demo anchors: > 0). Drops the operator's retract moves and the
    # policy actions that follow a hand-back, which do not lead toward a higher value.
    c.recovery_min_gain = 0.25
    # Share of each recovery-policy batch drawn from the demo pairs (the rest from the operator
    # pairs; all from one side when the other is empty), like RLPD's symmetric sampling does
    # for the agent. None (default): uniform over all pairs; 0.5 measured no better
    # (benchmarks/results/recovery_goals.md).
    c.recovery_demo_fraction = ml_collections.config_dict.placeholder(float)
    # Recovery-policy anchors in online episodes: "interventions" (default: the operator's
    # segments, behaviour cloning of recoveries as the guide trains it) or "all" (also every
    # step of successful online episodes, whatever acted). The value-gain filter above applies
    # to both; demos always anchor every step. "all" measured worse: assembly IR 0.479 against
    # 0.325 (3 seeds each, benchmarks/results/compare and compare_anchors), and mean IR 0.490
    # against 0.381 in benchmarks/results/recovery_goals.md.
    c.recovery_anchors = "interventions"
    # --- learner schedule ---
    c.batch_size = 128
    c.recovery_batch_size = 128
    # One update of each UniIntervene model every train_period agent updates (about 12-18 ms for
    # the three on this 2-core CPU against about 10 ms per agent update at UTD 2).
    c.train_period = 8
    # Recovery-policy updates per round (behaviour cloning is cheap and data grows fast).
    c.recovery_updates = 4
    # Updates of the proxy value and the recovery policy on the demos before training starts.
    c.pretrain_steps = 1000
    # Relabel + rebuild datasets and memory every refresh_episodes finished online episodes.
    c.refresh_episodes = 10
    # Online episodes kept for UniIntervene training (the newest; demos are always kept).
    c.max_episodes = 200
    # The gate may fire once this many online episodes were seen and the intervention model
    # had min_updates updates.
    c.min_episodes = 3
    c.min_updates = 50
    # Keep training the three models (one round per learner loop pass) while the agent waits
    # for learner.training_starts online transitions (off: they start with the agent). With the
    # actor's wait below, the gate is ready after min_episodes episodes on tasks whose demos
    # fill the memory; with neither, it got ready 1,200-2,300 env steps into a 10k run.
    c.train_during_warmup = True
    # The actor, once per run after min_episodes episodes, waits at an episode boundary up to
    # this long (s) for the first ready gate (0: never waits). In simulation the actor steps
    # faster than a robot would while the learner compiles and trains the models, so without the wait
    # the first 1,000+ env steps of a run went by without a gate; on a robot the wait is short.
    c.wait_for_ready_s = 60.0
    # Push the UniIntervene payload at most every publish_period learner steps (it only goes
    # out when its version changed).
    c.publish_period = 200
    return c


def check_online_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError for inconsistent ``config.uniintervene`` fields."""
    if c.recovery_buffer not in RECOVERY_BUFFERS:
        raise ValueError(f"uniintervene.recovery_buffer must be one of {RECOVERY_BUFFERS}, got {c.recovery_buffer!r}")
    for name in ("history_len", "horizon", "train_period", "refresh_episodes", "max_episodes", "batch_size",
                 "recovery_batch_size", "publish_period", "max_chunks", "recovery_updates"):
        if int(c[name]) < 1:
            raise ValueError(f"uniintervene.{name} must be >= 1, got {c[name]}")
    for name in ("cooldown_steps", "pretrain_steps", "min_episodes", "min_updates", "timeline_every", "replan_every"):
        if int(c[name]) < 0:
            raise ValueError(f"uniintervene.{name} must be >= 0, got {c[name]}")
    if not float(c.wait_for_ready_s) >= 0.0:
        raise ValueError(f"uniintervene.wait_for_ready_s must be >= 0, got {c.wait_for_ready_s}")
    if not 0.0 <= float(c.tau_quantile) < 1.0:
        raise ValueError(f"uniintervene.tau_quantile must be in [0, 1), got {c.tau_quantile}")
    if int(c.intervention.history_len) != int(c.history_len):
        raise ValueError(f"uniintervene.intervention.history_len ({c.intervention.history_len}) must equal "
                         f"uniintervene.history_len ({c.history_len})")
    if int(c.recovery.horizon) != int(c.horizon):
        raise ValueError(f"uniintervene.recovery.horizon ({c.recovery.horizon}) must equal "
                         f"uniintervene.horizon ({c.horizon})")
    if c.recovery_goals not in RECOVERY_GOALS:
        raise ValueError(f"uniintervene.recovery_goals must be one of {RECOVERY_GOALS}, got {c.recovery_goals!r}")
    if c.recovery_demo_fraction is not None and not 0.0 <= float(c.recovery_demo_fraction) <= 1.0:
        raise ValueError(f"uniintervene.recovery_demo_fraction must be None or in [0, 1], got {c.recovery_demo_fraction}")
    if not 0.0 <= float(c.memory_demo_delta) <= 1.0:
        raise ValueError(f"uniintervene.memory_demo_delta must be in [0, 1], got {c.memory_demo_delta}")
    if not 0.0 <= float(c.recovery_min_gain) < 1.0:
        raise ValueError(f"uniintervene.recovery_min_gain must be in [0, 1), got {c.recovery_min_gain}")
    if c.recovery.head != "continuous":
        raise ValueError("online recovery needs uniintervene.recovery.head='continuous' (the FAST token head is "
                         "trained offline, see uniintervene_jax/pipeline.py)")


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



def build_models(config, obs_spec, action_dim: int):
    """The three UniIntervene models of ``config.uniintervene`` with fresh parameters, seeded by
    ``config.seed`` (the actor builds the same structures and loads pushed parameters into them).

    Returns ``(ProxyValue, InterventionModel, RecoveryPolicy)``.
    """
    from serl_ext.loop.common import example_observation
    from uniintervene_jax.intervention.train import InterventionModel
    from uniintervene_jax.recovery.model import RecoveryPolicy
    from uniintervene_jax.value.train import ProxyValue

    c = config.uniintervene
    example = example_observation(obs_spec)
    key = jax.random.PRNGKey(int(config.seed) + 101)
    k1, k2, k3 = jax.random.split(key, 3)
    value = ProxyValue.create(k1, example, c.value)
    intervention = InterventionModel.create(k2, example, int(action_dim), int(c.value.latent_dim), c.intervention)
    recovery = RecoveryPolicy.create(k3, example, int(action_dim), c.recovery)
    return value, intervention, recovery
