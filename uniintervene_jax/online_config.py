"""The ``config.uniintervene`` section of UniIntervene online: :func:`get_online_config` (every
field documented) and :func:`check_online_config`.

Each value has one home: the model sections (``value``, ``intervention``, ``recovery``) own
their structure (the value-history K is ``intervention.history_len``, the chunk length H is
``recovery.horizon``), ``trigger`` owns the initial tau (:func:`uniintervene_jax.gate.get_trigger_config`),
``labels`` the labelling rules shared with the offline pipeline
(:func:`uniintervene_jax.labels.get_labels_config`); the rest configures the gate and the
learner's schedule. The actor's gate (``uniintervene_jax/gate.py``) and the learner's trainer
(``uniintervene_jax/online.py``) both read it.
"""

import ml_collections

RECOVERY_BUFFERS = ("online", "both")
RECOVERY_GOALS = ("retrieved", "future")


def get_online_config() -> ml_collections.ConfigDict:
    """``config.uniintervene``: defaults of the online gate and learner side (documented inline)."""
    from uniintervene_jax.gate import get_trigger_config
    from uniintervene_jax.intervention.config import get_default_config as intervention_config
    from uniintervene_jax.labels import get_labels_config
    from uniintervene_jax.recovery.config import get_default_config as recovery_config
    from uniintervene_jax.value.config import get_default_config as value_config

    c = ml_collections.ConfigDict()
    # Off for plain HiL-SERL; the hil_serl+uniintervene algorithms switch it on.
    c.enabled = False
    # Start the online run from an offline pipeline run folder (launchers/offline_pipeline.py
    # --run_dir=...; "" = fresh models): the proxy value and the intervention model (structure
    # and parameters, uniintervene_jax/message.py:build_models), the recovery memory, the
    # held-out best-F1 trigger threshold (models/intervention/model.json, trigger_threshold)
    # and the frozen future-target encoder come from it; the recovery policy too when it has
    # the continuous head. The learner then keeps refining them on the schedule below.
    c.init_from = ""
    # --- gate (actor) ---
    # The value-history window K is intervention.history_len (8) and the recovery chunk length H
    # is recovery.horizon (8; the gate re-evaluates at a chunk's end).
    # The trigger (uniintervene_jax/gate.py): fire when sigmoid(risk) >= tau. trigger.tau_int is
    # the initial tau; the learner pushes the tau in use with every message.
    c.trigger = get_trigger_config()
    # tau stays fixed for the run (the paper's 0.5 here; a run started from an offline pipeline
    # folder uses the best-F1 threshold calibrated there). With tau_recalibrate each refresh
    # (every refresh_episodes episodes) re-sweeps it (gate.threshold_sweep, 0.05 .. 0.95, best F1
    # against the mined labels) on the held-out online episodes: every tau_holdout_every-th
    # online episode, which the intervention model then never trains on. The new tau goes out
    # with the next message (its version increases with every refresh).
    c.tau_recalibrate = False
    c.tau_holdout_every = 5
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
    # Ablation (w/o memory goal): False -> the recovery goal is the current observation, at run
    # time (the gate) and in the recovery policy's training pairs alike (no memory retrieval).
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
    # The future head's frozen target encoder (uniintervene_jax/online.py:make_target_encoder):
    # "random" (a fixed, seeded random projection of the observation to value.latent_dim dims;
    # built once, never trained, so it neither drifts between rebuilds nor equals the proxy
    # value's input), "random:N" (the same after average-pooling each uint8 camera frame to
    # N x N, for image observations) or "hf:/local/folder" (a frozen transformers vision
    # model, e.g. V-JEPA 2).
    c.target_encoder = "random"
    # What the recovery policy and the recovery memory see of an observation:
    #   "observation" (default): the observation as it is (state tasks: the 39-D state);
    #   "state+value_embedding" (image observations, hil_serl_cameras+uniintervene): the
    #     proprioceptive obs["state"] followed by the proxy value's latent z(o, l)
    #     (value.latent_dim), one vector {"state": (S + D,)}. The proxy value already runs its
    #     CNN on every frame and z is the memory's retrieval key, so memory items store no
    #     frames, the recovery policy needs no CNN of its own, and its goal is the memory
    #     item's [goal state, goal z] (uniintervene_jax/views.py).
    c.recovery_inputs = "observation"
    c.recovery = recovery_config()
    # Online the recovery policy uses the continuous chunk head: the FAST token head needs a
    # tokenizer fitted on the chunks first (offline pipeline); see README.
    c.recovery.head = "continuous"
    # Stagnation-label rule ("design" union or "guide") and TVR parameters (DESIGN section 4),
    # the offline pipeline's labelling config.
    c.labels = get_labels_config()
    # Online extension (not in the paper): the takeover_steps policy/recovery steps before each
    # human takeover are also positive trigger labels (union with the mined stagnation labels),
    # so the model learns to fire before the operator would. 0: off.
    c.labels.takeover_steps = 8
    # Recovery-memory mining preset ("default": 120 items, 10 bins, span 8, delta 0.5).
    c.memory_preset = "default"
    # Smaller value rise for demo windows, used only while the preset mines no item at all
    # (mine_online_memory): assembly and box-close demos climb 0.2-0.4 in 8 steps, so without it
    # their memory, and the gate, stayed empty for the first ~20 episodes. 0: no fallback.
    c.memory_demo_delta = 0.2
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
    # One round (one update of the proxy value and of the intervention model, recovery_updates
    # of the recovery policy) every train_period agent updates: the slow refinement schedule of
    # a run started from offline models (issue 13). A round costs about 12 ms on this 2-core CPU
    # (benchmarks/results/uniintervene_latency.md: 1.6 + 3.6 + 4 x 1.7 ms) against about 5.6 ms
    # per agent update at UTD 2; every 8 updates cost the learner 26% of its updates per second,
    # every 16 about 12% (issue 14 item 2: at least 85% of HiL-SERL's).
    c.train_period = 16
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
    """Raises ValueError for inconsistent ``config.uniintervene`` fields (the model sections
    are resolved by their packages' ``resolve_config``)."""
    from uniintervene_jax.gate import check_trigger_config
    from uniintervene_jax.intervention.config import resolve_config as intervention_config
    from uniintervene_jax.labels import resolve_labels_config
    from uniintervene_jax.recovery.config import resolve_config as recovery_config
    from uniintervene_jax.value.config import resolve_config as value_config

    import os

    if str(c.init_from) and not os.path.isdir(os.path.join(str(c.init_from), "models", "intervention")):
        raise ValueError(f"uniintervene.init_from={c.init_from!r} has no models/intervention folder "
                         "(run launchers/offline_pipeline.py --run_dir=... first)")
    if c.recovery_buffer not in RECOVERY_BUFFERS:
        raise ValueError(f"uniintervene.recovery_buffer must be one of {RECOVERY_BUFFERS}, got {c.recovery_buffer!r}")
    for name in ("train_period", "refresh_episodes", "max_episodes", "batch_size",
                 "recovery_batch_size", "publish_period", "max_chunks", "recovery_updates", "tau_holdout_every"):
        if int(c[name]) < 1:
            raise ValueError(f"uniintervene.{name} must be >= 1, got {c[name]}")
    for name in ("cooldown_steps", "pretrain_steps", "min_episodes", "min_updates", "timeline_every", "replan_every"):
        if int(c[name]) < 0:
            raise ValueError(f"uniintervene.{name} must be >= 0, got {c[name]}")
    if not float(c.wait_for_ready_s) >= 0.0:
        raise ValueError(f"uniintervene.wait_for_ready_s must be >= 0, got {c.wait_for_ready_s}")
    from uniintervene_jax.views import RECOVERY_INPUTS, parse_random_target

    if not (parse_random_target(str(c.target_encoder)) is not None or str(c.target_encoder).startswith("hf:")):
        raise ValueError(f"uniintervene.target_encoder must be 'random', 'random:N' or 'hf:PATH', "
                         f"got {c.target_encoder!r}")
    if c.get("recovery_inputs", "observation") not in RECOVERY_INPUTS:
        raise ValueError(f"uniintervene.recovery_inputs must be one of {RECOVERY_INPUTS}, got {c.recovery_inputs!r}")
    check_trigger_config(c.trigger)
    resolve_labels_config(c.labels)
    value_config(c.value)
    intervention_config(c.intervention)  # history_len >= 1, ...
    recovery_config(c.recovery)  # horizon >= 1, ...
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
